/* SPDX-License-Identifier: Apache-2.0 */
#include "tests/tap.h"
#include "engine/ir.h"
int
main(void)
{
    ok(ss__op_find("Conv") != NULL, "Conv registered");
    return tap_done();
}
