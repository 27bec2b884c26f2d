/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_THREADS_NAMED_H
#define SS_TESTS_THREADS_NAMED_H

/*
 * Threads of this process whose name starts with prefix, alive now
 * (/proc/self/task/N/comm): the helpers of a crew (engine/plan/crew.h),
 * "ss-slice" for the engine's, "ss-train" for a trainer's.
 */

#include <dirent.h>
#include <stdio.h>
#include <string.h>

static inline int
threads_named(const char *prefix)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    size_t pl = strlen(prefix);
    int n = 0;

    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[300], comm[32] = "";
        FILE *f;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(comm, sizeof comm, f) != NULL
            && strncmp(comm, prefix, pl) == 0)
            n++;
        fclose(f);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

#endif
