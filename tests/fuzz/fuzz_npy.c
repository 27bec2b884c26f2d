/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: .npy and .npz parsing from memory, with a 1 MiB cap.
 * What parses must survive a round trip: encode it again, parse that, and
 * get the same arrays (abort otherwise, so the fuzzer reports it).  Built
 * and run by tests/fuzz/run.sh, not by make.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/io/npy.h"

#define CAP ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
same(const ss_tensor_t *a, const ss_tensor_t *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim ||
        memcmp(a->dims, b->dims, sizeof(a->dims[0]) * (size_t)a->ndim))
        return 0;
    return memcmp(a->data, b->data, ss_npy_nbytes(a)) == 0;
}

static void
npy_round_trip(const ss_tensor_t *t)
{
    ss_tensor_t r;
    void *buf;
    size_t len;

    if (ss_npy_encode(t, &buf, &len, NULL) < 0)
        return;   /* allocation limits */
    if (ss_npy_read_buffer(buf, len, "again", CAP, &r, NULL) < 0 ||
        !same(t, &r))
        abort();
    ss_tensor_free_data(&r);
    ss_free(buf);
}

static void
npz_round_trip(const ss_npz_t *z)
{
    int n = ss_npz_count(z);
    const char **names = calloc((size_t)n + 1, sizeof(*names));
    ss_tensor_t *ts = calloc((size_t)n + 1, sizeof(*ts));
    ss_npz_t *r = NULL;
    void *buf = NULL;
    size_t len;

    if (names == NULL || ts == NULL)
        goto done;
    for (int i = 0; i < n; i++) {
        names[i] = ss_npz_name(z, i);
        ts[i] = *ss_npz_tensor(z, i);
    }
    if (ss_npz_encode(n, names, ts, n % 2, &buf, &len, NULL) < 0)
        goto done;   /* e.g. a name we refuse to write */
    if (ss_npz_read_buffer(buf, len, "again", CAP, &r, NULL) < 0 ||
        ss_npz_count(r) != n)
        abort();
    for (int i = 0; i < n; i++)
        if (strcmp(ss_npz_name(r, i), names[i]) != 0 ||
            !same(ss_npz_tensor(r, i), &ts[i]))
            abort();
done:
    ss_npz_free(r);
    ss_free(buf);
    free(names);
    free(ts);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_tensor_t t;
    ss_npz_t *z = NULL;

    if (ss_npy_read_buffer(data, size, "fuzz", CAP, &t, NULL) == 0) {
        npy_round_trip(&t);
        ss_tensor_free_data(&t);
    }
    if (ss_npz_read_buffer(data, size, "fuzz", CAP, &z, NULL) == 0) {
        npz_round_trip(z);
        ss_npz_free(z);
    }
    return 0;
}
