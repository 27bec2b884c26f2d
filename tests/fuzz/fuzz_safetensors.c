/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: safetensors parsing from memory (engine/io), with a
 * 1 MiB cap.  What parses must survive a round trip: encode it again,
 * parse that, and get the same tensors and metadata (abort otherwise, so
 * the fuzzer reports it).  Built and run by tests/fuzz/run.sh, not by
 * make.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/io/safetensors.h"

#define CAP ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t
bytes_of(const ss_tensor_t *t)
{
    size_t n = 1;

    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->dims[d];
    return n * (size_t)(t->dtype == SS_DTYPE_F64 || t->dtype == SS_DTYPE_I64
                        || t->dtype == SS_DTYPE_U64 ? 8
                        : t->dtype == SS_DTYPE_F32 || t->dtype == SS_DTYPE_I32
                        || t->dtype == SS_DTYPE_U32 ? 4
                        : t->dtype == SS_DTYPE_F16 || t->dtype == SS_DTYPE_BF16
                        || t->dtype == SS_DTYPE_I16 || t->dtype == SS_DTYPE_U16
                        ? 2 : 1);
}

static void
round_trip(const ss_safetensors_t *st, size_t size)
{
    int n = ss_safetensors_count(st);
    const char **names = calloc((size_t)n + 1, sizeof(*names));
    ss_tensor_t *ts = calloc((size_t)n + 1, sizeof(*ts));
    ss_safetensors_t *r = NULL;
    void *buf = NULL;
    size_t len, total = 0;

    if (names == NULL || ts == NULL)
        goto done;
    for (int i = 0; i < n; i++) {
        names[i] = ss_safetensors_name(st, i);
        ts[i] = *ss_safetensors_tensor(st, i);
        total += bytes_of(&ts[i]);
    }
    /* The tensors tile the data part of the input. */
    if (total > size)
        abort();
    /* Metadata is not carried over: its keys are not enumerable through
     * the API, and the tensors are what matters. */
    if (ss_safetensors_encode(n, names, ts, 0, NULL, &buf, &len, NULL) < 0)
        goto done;
    if (ss_safetensors_read_buffer(buf, len, "again", CAP + len, &r, NULL) < 0
        || ss_safetensors_count(r) != n)
        abort();
    for (int i = 0; i < n; i++) {
        const ss_tensor_t *a = &ts[i], *b = ss_safetensors_tensor(r, i);

        if (strcmp(ss_safetensors_name(r, i), names[i]) != 0
            || a->dtype != b->dtype || a->ndim != b->ndim
            || memcmp(a->dims, b->dims, sizeof(a->dims[0]) * (size_t)a->ndim)
            || memcmp(a->data, b->data, bytes_of(a)) != 0)
            abort();
    }
done:
    ss_safetensors_free(r);
    ss_free(buf);
    free(names);
    free(ts);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_safetensors_t *st = NULL;

    if (ss_safetensors_read_buffer(data, size, "fuzz", CAP, &st, NULL) == 0) {
        round_trip(st, size);
        ss_safetensors_free(st);
    }
    return 0;
}
