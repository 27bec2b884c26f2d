/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_graph_load_onnx: a model file mapped and imported (onnx.c).
 *
 * THREADS: [any]; a load touches only its own objects.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "engine/ir/internal.h"

int
ss_graph_load_onnx(const char *path, ss_graph_t **out, ss_err_t *err)
{
    struct stat st;
    ss_filemap_t *map = NULL;
    char *dir = NULL, *slash;
    int fd = -1, rc = 0;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) < 0) {
        rc = ss_err_set(err, errno == ENOENT ? SS_ENOTFOUND : SS_EIO,
                        "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: not a regular, non-empty "
                        "file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > ((uint64_t)2 << 30)) {
        rc = ss_err_set(err, SS_ETOOBIG, "%s: larger than protobuf's 2 GiB "
                        "limit; keep weights in external data", path);
        goto done;
    }
    /* The graph's large aligned initializers point into this mapping
     * (onnx_tensor.c), each holding a reference on it.  That is safe
     * because a model file is never rewritten in place: the only code
     * in this repository that opens a file for writing is
     * common/atomicfile.c (mkostemp next to the name, then rename), which
     * every writer of models and versions uses (export.c, jobs.c,
     * train_main.c, lora.c, ...), and versions are published by renaming
     * folders; nothing truncates.  So the inode mapped here keeps its
     * bytes until the last tensor is freed, even if the name is replaced
     * or unlinked meanwhile. */
    if ((rc = ss_filemap_open(fd, (size_t)st.st_size, &map)) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: mmap: %s", path, strerror(-rc));
        goto done;
    }
    if ((dir = ss_strdup(path)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory");
        goto done;
    }
    if ((slash = strrchr(dir, '/')) == NULL) {
        dir[0] = '.';
        dir[1] = '\0';  /* path is at least one character long */
    } else if (slash == dir) {
        slash[1] = '\0';
    } else {
        *slash = '\0';
    }
    rc = ss__onnx_load(ss_filemap_base(map), (size_t)st.st_size, path, dir,
                       map, out, err);
    /* what the import read (protobuf framing, copied payloads) leaves
     * the resident set; the tensors' pages come back when read */
    ss_filemap_release_all(map);
done:
    ss_filemap_unref(map);
    if (fd >= 0)
        close(fd);
    ss_free(dir);
    return rc;
}
