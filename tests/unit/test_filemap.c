/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/filemap.h: a mapping shows the file's bytes, lives while a
 * reference is held (ss_filemap_put_at finds it by any address inside),
 * and ss_filemap_release drops its pages from the resident set while
 * they stay readable (the same bytes fault back in).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/filemap.h"
#include "tests/tap.h"

/* This process's resident file pages (kB): a private file page that was
 * read stays in its page tables until released. */
static long
rss_file_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int
main(void)
{
    char path[] = "/tmp/ss-test-filemap.XXXXXX";
    const size_t n = (size_t)8 << 20;
    uint8_t *want = malloc(n);
    ss_filemap_t *m = NULL;
    const uint8_t *base;
    volatile uint64_t sum = 0;
    long before, touched, after;
    size_t res0 = 1, res1 = 0, res2 = 1;
    int fd, same;

    for (size_t i = 0; i < n; i++)
        want[i] = (uint8_t)(i * 2654435761u >> 13);
    fd = mkstemp(path);
    ok(fd >= 0 && write(fd, want, n) == (ssize_t)n, "a file of 8 MB");
    is_int(ss_filemap_open(fd, n, &m), 0, "maps it");
    close(fd);
    unlink(path);       /* the mapping keeps the inode */
    if (m == NULL)
        return tap_done();
    base = ss_filemap_base(m);
    ok(ss_filemap_len(m) == n, "its length");
    ok(memcmp(base, want, n) == 0, "shows the file's bytes");
    ok(ss_filemap_contains(base + n / 2), "contains an inner address");
    ok(!ss_filemap_contains(want), "not a heap address");
    is_int(ss_filemap_put_at(want), 0, "put_at ignores heap memory");

    /* drop what memcmp read, touch every page, release: RssFile rises
     * and falls, the bytes stay */
    ss_filemap_release_all(m);
    before = rss_file_kb();
    is_int(ss_filemap_resident(m, &res0), 0, "resident: reads pagemap");
    for (size_t i = 0; i < n; i += 4096)
        sum += base[i];
    touched = rss_file_kb();
    (void)ss_filemap_resident(m, &res1);
    ss_filemap_release(base + 1, n - 2);    /* rounded outwards */
    after = rss_file_kb();
    (void)ss_filemap_resident(m, &res2);
    /* the file's pages stay in the page cache throughout: a count from
     * mincore(2) would say 8 MB each time */
    tap_diag("resident: %zu, touched %zu, released %zu bytes", res0, res1,
             res2);
    ok(res0 == 0, "resident: nothing after release_all");
    ok(res1 == n, "resident: every page once read");
    ok(res2 == 0, "resident: nothing once released");
    ok(ss_filemap_at(base + 5) == m && ss_filemap_at(want) == NULL,
       "ss_filemap_at finds the mapping by address");
    tap_diag("RssFile: %ld kB, touched %ld kB, released %ld kB", before,
             touched, after);
    ok(touched - before >= 7 * 1024, "reading it adds ~8 MB of file pages "
       "to the resident set");
    ok(touched - after >= 7 * 1024, "release drops them");
    same = memcmp(base, want, n) == 0;
    ok(same, "the released pages read back the same bytes");
    ss_filemap_release(want, n);    /* not a mapping: no effect */
    ok(want[12345] == (uint8_t)(12345 * 2654435761u >> 13),
       "release leaves heap memory alone");

    /* references: one per tensor, found by address */
    ss_filemap_ref(m);
    ss_filemap_ref(m);
    ss_filemap_unref(m);                    /* the opener's */
    is_int(ss_filemap_put_at(base + 100), 1, "put_at drops a reference");
    ok(ss_filemap_contains(base), "still mapped with one reference left");
    ok(base[n - 1] == want[n - 1], "and readable");
    is_int(ss_filemap_put_at(base + n - 1), 1, "the last reference");
    ok(!ss_filemap_contains(base), "unmapped after the last reference");
    ss_filemap_unref(NULL);
    (void)sum;
    free(want);
    return tap_done();
}
