/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Files that appear whole or not at all.
 *
 * DESIGN.  The data goes to a temporary file created with mkstemp next to
 * the target (same directory, hence same file system, so rename is
 * atomic), named ".<base>.tmp.XXXXXX" so directory scans that skip dot
 * files ignore it.  Commit fsyncs the file, renames it over the target and
 * fsyncs the directory so the rename itself survives a crash.  Any failure
 * unlinks the temporary file.
 *
 * A target that exists and is not a regular file -- /dev/null, a FIFO, a
 * terminal, /dev/stdout -- is written in place: it cannot be replaced
 * atomically, and renaming over it would replace the device or pipe with
 * a plain file (as root, a tool told to write to /dev/null would destroy
 * /dev/null for the whole machine).  A folder is refused.
 *
 * THREADS: [any]; an ss_atomic_file_t belongs to one thread.
 */

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/atomicfile.h"

int
ss_atomic_open(ss_atomic_file_t *af, const char *path, ss_err_t *err)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dirlen;
    size_t n = strlen(path) + 16;
    struct stat st;
    int rc = 0;

    af->fd = -1;
    af->path = NULL;
    af->tmp = NULL;
    if (*base == '\0') {
        rc = ss_err_set(err, SS_EINVAL, "%s: not a file name", path);
        goto done;
    }
    if ((af->path = ss_strdup(path)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", path);
        goto done;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode))
            rc = ss_err_set(err, SS_EINVAL, "%s: is a folder", path);
        else if ((af->fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
            rc = ss_err_set(err, SS_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if ((af->tmp = ss_malloc(n)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", path);
        goto done;
    }
    snprintf(af->tmp, n, "%.*s.%s.tmp.XXXXXX", (int)dirlen, path, base);
    if ((af->fd = mkostemp(af->tmp, O_CLOEXEC)) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: cannot create a temporary file: "
                        "%s", path, strerror(errno));
        goto done;
    }
    /* mkstemp makes the file 0600; outputs are ordinary files. */
    (void)fchmod(af->fd, 0644);
done:
    if (rc < 0) {
        ss_free(af->path);
        ss_free(af->tmp);
        af->path = af->tmp = NULL;
    }
    return rc;
}

int
ss_atomic_write(ss_atomic_file_t *af, const void *buf, size_t n,
                ss_err_t *err)
{
    const uint8_t *p = buf;

    while (n > 0) {
        ssize_t w = write(af->fd, p, n > (1u << 30) ? (1u << 30) : n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return ss_err_set(err, SS_EIO, "%s: write: %s", af->path,
                              strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd, rc = 0;

    if (slash == NULL)
        dir = ss_strdup(".");
    else
        dir = ss_strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL)
        return SS_ENOMEM;
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
        fsync(fd) < 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    ss_free(dir);
    return rc;
}

int
ss_atomic_commit(ss_atomic_file_t *af, ss_err_t *err)
{
    int rc = 0;

    if (af->fd < 0)
        return ss_err_set(err, SS_EINVAL, "atomic file already closed");
    if (af->tmp == NULL) {
        /* written in place (a device or a pipe): nothing to publish */
        if (close(af->fd) < 0)
            rc = ss_err_set(err, SS_EIO, "%s: close: %s", af->path,
                            strerror(errno));
        af->fd = -1;
        goto done;
    }
    if (fsync(af->fd) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: fsync: %s", af->path,
                        strerror(errno));
        goto done;
    }
    if (close(af->fd) < 0) {
        af->fd = -1;
        rc = ss_err_set(err, SS_EIO, "%s: close: %s", af->path,
                        strerror(errno));
        goto done;
    }
    af->fd = -1;
    if (rename(af->tmp, af->path) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: rename: %s", af->path,
                        strerror(errno));
        goto done;
    }
    /* The data is in place; failing to sync the directory only weakens
     * crash durability, but say so. */
    if ((rc = fsync_dir(af->path)) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: fsync of its directory: %s",
                        af->path, rc == SS_ENOMEM ? "no memory"
                                                  : strerror(-rc));
        ss_free(af->tmp);
        af->tmp = NULL;
        goto done;
    }
    ss_free(af->tmp);
    af->tmp = NULL;
done:
    ss_atomic_abort(af);
    return rc;
}

void
ss_atomic_abort(ss_atomic_file_t *af)
{
    if (af == NULL)
        return;
    if (af->fd >= 0)
        close(af->fd);
    af->fd = -1;
    if (af->tmp)
        unlink(af->tmp);
    ss_free(af->tmp);
    ss_free(af->path);
    af->tmp = af->path = NULL;
}

int
ss_atomic_rename(const char *from, const char *to, ss_err_t *err)
{
    int rc;

    if (rename(from, to) < 0)
        return ss_err_set(err, SS_EIO, "rename %s to %s: %s", from, to,
                          strerror(errno));
    if ((rc = fsync_dir(to)) < 0)
        return ss_err_set(err, SS_EIO, "%s: fsync of its directory: %s", to,
                          rc == SS_ENOMEM ? "no memory" : strerror(-rc));
    return 0;
}
