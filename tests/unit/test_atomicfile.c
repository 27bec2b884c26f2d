/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/atomicfile.h: a file appears whole on commit and not at all on
 * abort; a folder built under a temporary name is published by
 * ss_atomic_rename, which refuses to replace a folder that has content;
 * a target that is not a regular file (a FIFO here, as /dev/null would be)
 * is written in place and stays what it was; a folder is refused.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomicfile.h"
#include "tests/tap.h"

static int
exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* Entries of dir besides . and .. (-1 when it cannot be read). */
static int
count_entries(const char *dir)
{
    struct dirent *e;
    DIR *d = opendir(dir);
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void
test_not_regular(const char *root)
{
    char fifo[300], dir[300], buf[64];
    ss_atomic_file_t af = { .fd = -1 };
    ss_err_t err = { 0 };
    struct stat st;
    ssize_t n = -1;
    int rfd;

    /* the read end opened first, non-blocking: the writer's open does not
     * wait, the bytes stay in the pipe, and a writer that went elsewhere
     * leaves the read empty instead of a test that hangs */
    snprintf(fifo, sizeof(fifo), "%s/pipe", root);
    if (mkfifo(fifo, 0600) != 0 ||
        (rfd = open(fifo, O_RDONLY | O_NONBLOCK)) < 0) {
        ok(0, "a FIFO and its read end");
        return;
    }
    is_int(ss_atomic_open(&af, fifo, &err), 0, "open a FIFO: %s", err.msg);
    is_int(ss_atomic_write(&af, "through", 7, &err), 0, "write to it");
    is_int(ss_atomic_commit(&af, &err), 0, "commit: %s", err.msg);
    n = read(rfd, buf, sizeof(buf));
    close(rfd);
    ok(n == 7 && memcmp(buf, "through", 7) == 0,
       "the reader got the bytes (%zd)", n);
    ok(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode),
       "the FIFO is still a FIFO, not a file renamed over it");
    is_int(count_entries(root), 1, "no temporary file next to it");
    unlink(fifo);

    snprintf(dir, sizeof(dir), "%s/folder", root);
    mkdir(dir, 0755);
    is_int(ss_atomic_open(&af, dir, &err), SS_EINVAL, "a folder is "
           "refused: %s", err.msg);
    ok(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && count_entries(root) == 1,
       "and left as it was, nothing created");
    rmdir(dir);
}

int
main(void)
{
    char root[] = "/tmp/ss-atomic-XXXXXX";
    char tmp[256], path[300], final[256], busy[256], other[300];
    ss_atomic_file_t af = { .fd = -1 };
    ss_err_t err = { 0 };
    FILE *f;
    char buf[16] = "";

    if (mkdtemp(root) == NULL) {
        ok(0, "a temporary folder");
        return tap_done();
    }
    snprintf(tmp, sizeof(tmp), "%s/.tmp-1", root);
    snprintf(final, sizeof(final), "%s/1", root);
    mkdir(tmp, 0755);
    snprintf(path, sizeof(path), "%s/a.txt", tmp);

    is_int(ss_atomic_open(&af, path, &err), 0, "open: %s", err.msg);
    is_int(ss_atomic_write(&af, "hello", 5, &err), 0, "write");
    ok(!exists(path), "nothing under the name before commit");
    is_int(ss_atomic_commit(&af, &err), 0, "commit: %s", err.msg);
    f = fopen(path, "r");
    ok(f != NULL && fread(buf, 1, sizeof(buf) - 1, f) == 5
       && strcmp(buf, "hello") == 0, "the whole file after commit");
    if (f != NULL)
        fclose(f);
    is_int(count_entries(tmp), 1, "no temporary file left");

    snprintf(other, sizeof(other), "%s/b.txt", tmp);
    ss_atomic_open(&af, other, &err);
    ss_atomic_write(&af, "x", 1, &err);
    ss_atomic_abort(&af);
    ok(!exists(other) && count_entries(tmp) == 1,
       "abort leaves nothing behind");

    is_int(ss_atomic_rename(tmp, final, &err), 0, "rename the folder: %s",
           err.msg);
    snprintf(path, sizeof(path), "%s/a.txt", final);
    ok(exists(path) && !exists(tmp), "the folder is published whole");

    snprintf(busy, sizeof(busy), "%s/.tmp-2", root);
    mkdir(busy, 0755);
    is_int(ss_atomic_rename(busy, final, &err), SS_EIO,
           "a folder with content is not replaced: %s", err.msg);
    ok(exists(busy) && exists(path), "both stay as they were");

    unlink(path);
    rmdir(final);
    rmdir(busy);
    test_not_regular(root);
    rmdir(root);
    return tap_done();
}
