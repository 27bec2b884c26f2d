/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the KServe V2 request decoder.
 *
 * Input: three bytes of framing, then the body.  Byte 0 bit 0 selects the
 * binary extension; bytes 1-2 then give the header length (which may be
 * past the body).  Every decoded request is encoded back as a response,
 * turned into a request again and decoded: the tensors must come back
 * identical (NaN payloads aside), which checks the number scanner against
 * the shortest-float formatter on whatever the fuzzer invents.  Every
 * number token in the body is also read with the scanner's float32 and
 * float64 parsers and their fast paths alone, and must give exactly what
 * strtof and strtod give.
 *
 *   clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -D_GNU_SOURCE -I. tests/fuzz/fuzz_kserve.c server/kserve*.c \
 *       engine/ir/dtype.c common/alloc.c common/err.c common/log.c \
 *       -ljansson -lm -o fuzz_kserve
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/kserve/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same_values(const ss_kserve_input_t *a, const ss_kserve_input_t *b)
{
    size_t n = a->nbytes;

    if (a->dtype != b->dtype || a->nbytes != b->nbytes || a->ndim != b->ndim)
        return false;
    if (n > 0 && memcmp(a->data, b->data, n) == 0)
        return true;
    if (a->dtype == SS_DTYPE_F32) {
        const float *x = a->data, *y = b->data;

        for (size_t i = 0; i < n / 4; i++)
            if (!(isnan(x[i]) && isnan(y[i])) &&
                memcmp(&x[i], &y[i], 4) != 0)
                return false;
        return true;
    }
    if (a->dtype == SS_DTYPE_F64) {
        const double *x = a->data, *y = b->data;

        for (size_t i = 0; i < n / 8; i++)
            if (!(isnan(x[i]) && isnan(y[i])) &&
                memcmp(&x[i], &y[i], 8) != 0)
                return false;
        return true;
    }
    return n == 0;
}

static void
round_trip(const ss_kserve_request_t *r)
{
    ss_kserve_output_t *outs = calloc((size_t)r->n_inputs, sizeof(*outs));
    ss_kserve_request_t *r2 = NULL;
    char *body = NULL, *req = NULL, *at;
    size_t len, hlen, pre;

    if (outs == NULL)
        return;
    for (int i = 0; i < r->n_inputs; i++) {
        const ss_kserve_input_t *in = &r->inputs[i];

        outs[i] = (ss_kserve_output_t){ in->name, in->dtype, in->ndim,
                                        in->dims, in->data,
                                        in->dtype == SS_DTYPE_F16 ||
                                        in->dtype == SS_DTYPE_BF16 ||
                                        (i & 1) };
    }
    if (ss_kserve_encode("m", "1", r->id, outs, r->n_inputs, &body, &len,
                         &hlen, NULL) < 0)
        goto done;
    /* "outputs": becomes "inputs": (the first occurrence is the key: the
     * model name and id come before it, escaped). */
    at = strstr(body, ",\"outputs\":[");
    if (at == NULL || at >= body + hlen)
        __builtin_trap();
    pre = (size_t)(at - body) + 1;
    if ((req = malloc(len)) == NULL)
        goto done;
    memcpy(req, body, pre);
    memcpy(req + pre, "\"inputs\":", 9);
    memcpy(req + pre + 9, body + pre + 10, len - pre - 10);
    if (ss_kserve_decode(req, len - 1, (int64_t)hlen - 1, NULL, &r2,
                         NULL) < 0)
        __builtin_trap();
    if (r2->n_inputs != r->n_inputs)
        __builtin_trap();
    for (int i = 0; i < r->n_inputs; i++)
        if (strcmp(r->inputs[i].name, r2->inputs[i].name) != 0 ||
            !same_values(&r->inputs[i], &r2->inputs[i]))
            __builtin_trap();
done:
    ss_kserve_request_free(r2);
    free(req);
    free(body);
    free(outs);
}

static bool
numch(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
           c == 'e' || c == 'E';
}

/* The number token at p (a JSON number, at most 511 bytes) read by the
 * scanner equals strtof/strtod on a copy of it. */
static void
check_number(const char *p, const char *end)
{
    char tok[512];
    const char *next;
    size_t len;
    double d, wd;
    float f, wf;
    int rc;

    if (*p == '-' && end - p > 1 && p[1] == 'I')
        return;         /* -Infinity, not a number for strtod */
    if (ss__kserve_parse_f64(p, end, &d, &next) == SS__KNUM_SYNTAX)
        return;
    /* The token's extent: what the grammar scan accepted, also when the
     * value was out of range. */
    for (next = p + 1; next < end && numch(*next); next++)
        ;
    len = (size_t)(next - p);
    if (len >= sizeof(tok))
        return;
    memcpy(tok, p, len);
    tok[len] = '\0';
    wd = strtod(tok, NULL);
    wf = strtof(tok, NULL);
    rc = ss__kserve_parse_f64(p, end, &d, &next);
    if (rc == 0 && next == p + len) {
        if (memcmp(&d, &wd, sizeof(d)) != 0)
            __builtin_trap();
    } else if (rc == SS__KNUM_RANGE) {
        if (!isinf(wd))
            __builtin_trap();
    } else {
        return;         /* a shorter valid prefix ("1.5e" reads "1.5") */
    }
    rc = ss__kserve_parse_f32(p, end, &f, &next);
    if (rc == 0 ? memcmp(&f, &wf, sizeof(f)) != 0 || next != p + len :
        rc != SS__KNUM_RANGE || !isinf(wf))
        __builtin_trap();
    if (ss__kserve_fast_f64(p, p + len, &d) &&
        memcmp(&d, &wd, sizeof(d)) != 0)
        __builtin_trap();
    if (ss__kserve_fast_f32(p, p + len, &f) &&
        memcmp(&f, &wf, sizeof(f)) != 0)
        __builtin_trap();
}

static void
check_numbers(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((b[i] == '-' || (b[i] >= '0' && b[i] <= '9')) &&
            (i == 0 || !numch(b[i - 1])))
            check_number(b + i, b + n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_kserve_limits_t lim = { 16, 1 << 20 };
    ss_kserve_request_t *r = NULL;
    ss_err_t err;
    int64_t hl = -1;
    char *body;
    size_t n;

    if (size < 3)
        return 0;
    n = size - 3;
    if (data[0] & 1)
        hl = (int64_t)(((size_t)data[1] << 8 | data[2]) % (n + 2));
    /* A copy of exactly n bytes, so ASan sees any read past the body. */
    if ((body = malloc(n ? n : 1)) == NULL)
        return 0;
    memcpy(body, data + 3, n);
    check_numbers(body, n);
    if (ss_kserve_decode(body, n, hl, &lim, &r, &err) == 0) {
        round_trip(r);
        ss_kserve_request_free(r);
    } else if (r != NULL || err.msg[0] == '\0') {
        __builtin_trap();
    }
    free(body);
    return 0;
}
