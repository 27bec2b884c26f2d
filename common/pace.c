/* SPDX-License-Identifier: Apache-2.0 */
#include "common/pace.h"

#include <stddef.h>

static _Thread_local ss_pace_fn pace_fn;
static _Thread_local void *pace_arg;

void
ss_pace_set(ss_pace_fn fn, void *arg)
{
    pace_fn = fn;
    pace_arg = arg;
}

void
ss_pace_get(ss_pace_fn *fn, void **arg)
{
    *fn = pace_fn;
    *arg = pace_arg;
}

void
ss_pace_point(void)
{
    if (pace_fn != NULL)
        pace_fn(pace_arg);
}
