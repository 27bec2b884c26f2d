/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KServe V2 response encoding: the JSON header written by hand, then the
 * binary tensors of the outputs that asked for them.
 *
 * The response's size is bounded before anything is written (names at six
 * bytes per byte escaped, each element at its type's longest text plus a
 * comma, the binary tails), so the body is allocated once and the writers
 * need no capacity checks in their loops.  jansson's dump is not used: it
 * builds a DOM for every number and formats doubles with "%.17g".
 *
 * THREADS: pure functions; [any].
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/internal.h"

/* Longest text of one element, without its comma. */
static size_t
elem_max(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_F32: case SS_DTYPE_F16: case SS_DTYPE_BF16: return 16;
    case SS_DTYPE_F64: return 24;
    case SS_DTYPE_BOOL: return 5;
    default: return 20;
    }
}

static size_t
put(char *o, const char *s)
{
    size_t n = strlen(s);

    memcpy(o, s, n);
    return n;
}

/* A JSON string literal with its quotes. */
static size_t
put_str(char *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    o[n++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = (char)c;
        } else if (c == '\n') {
            o[n++] = '\\';
            o[n++] = 'n';
        } else if (c == '\t') {
            o[n++] = '\\';
            o[n++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(o + n, "\\u00", 4);
            o[n + 4] = hex[c >> 4];
            o[n + 5] = hex[c & 15];
            n += 6;
        } else {
            o[n++] = (char)c;
        }
    }
    o[n++] = '"';
    return n;
}

static float
half_to_float(uint16_t h)
{
    int e = (h >> 10) & 0x1f;
    float m = (float)(h & 0x3ff), v;

    if (e == 0)
        v = ldexpf(m, -24);
    else if (e == 31)
        v = (h & 0x3ff) ? NAN : INFINITY;
    else
        v = ldexpf(m + 1024.0f, e - 25);
    return (h & 0x8000) ? -v : v;
}

static float
bf16_to_float(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float v;

    memcpy(&v, &b, sizeof(v));
    return v;
}

/* The elements as a JSON array body (without brackets). */
static size_t
put_data(char *o, const ss_kserve_output_t *out, size_t numel)
{
    size_t n = 0;

    for (size_t i = 0; i < numel; i++) {
        const char *d = (const char *)out->data;
        int k = 0;

        switch (out->dtype) {
        case SS_DTYPE_F32:
            k = ss_kserve_format_f32(((const float *)d)[i], o + n);
            break;
        case SS_DTYPE_F64:
            k = ss__kserve_format_f64(((const double *)d)[i], o + n);
            break;
        case SS_DTYPE_F16:
            k = ss_kserve_format_f32(
                half_to_float(((const uint16_t *)d)[i]), o + n);
            break;
        case SS_DTYPE_BF16:
            k = ss_kserve_format_f32(
                bf16_to_float(((const uint16_t *)d)[i]), o + n);
            break;
        case SS_DTYPE_BOOL:
            k = (int)put(o + n, d[i] ? "true" : "false");
            break;
        case SS_DTYPE_I8:
            k = ss__kserve_format_i64(((const int8_t *)d)[i], o + n);
            break;
        case SS_DTYPE_U8:
            k = ss__kserve_format_u64(((const uint8_t *)d)[i], o + n);
            break;
        case SS_DTYPE_I16:
            k = ss__kserve_format_i64(((const int16_t *)d)[i], o + n);
            break;
        case SS_DTYPE_U16:
            k = ss__kserve_format_u64(((const uint16_t *)d)[i], o + n);
            break;
        case SS_DTYPE_I32:
            k = ss__kserve_format_i64(((const int32_t *)d)[i], o + n);
            break;
        case SS_DTYPE_U32:
            k = ss__kserve_format_u64(((const uint32_t *)d)[i], o + n);
            break;
        case SS_DTYPE_I64:
            k = ss__kserve_format_i64(((const int64_t *)d)[i], o + n);
            break;
        default:
            k = ss__kserve_format_u64(((const uint64_t *)d)[i], o + n);
            break;
        }
        n += (size_t)k;
        o[n++] = ',';
    }
    return numel ? n - 1 : 0;
}

/* Checks one output and adds its worst-case size to *total. */
static int
size_output(const ss_kserve_output_t *o, size_t *numel, size_t *bytes,
            size_t *total, ss_err_t *err)
{
    size_t n = 1, es = ss_dtype_size(o->dtype), t = *total, x;
    const char *tn = ss_dtype_kserve_name(o->dtype);
    int rc = 0;

    if (o->name == NULL || tn == NULL || es == 0) {
        rc = ss_err_set(err, SS_EUNSUPP, "output '%s': datatype %s cannot be "
                        "encoded", o->name ? o->name : "?", tn ? tn : "?");
        goto done;
    }
    if (o->ndim < 0 || o->ndim > SS_MAX_DIMS || (o->ndim > 0 && !o->dims)) {
        rc = ss_err_set(err, SS_EINVAL, "output '%s': bad rank %d", o->name,
                        o->ndim);
        goto done;
    }
    for (int d = 0; d < o->ndim; d++) {
        if (o->dims[d] < 0 || (uint64_t)o->dims[d] > SIZE_MAX ||
            ss_mul_overflow(n, (size_t)o->dims[d], &n) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "output '%s': bad shape",
                            o->name);
            goto done;
        }
    }
    if (ss_mul_overflow(n, es, bytes) < 0 || (n > 0 && o->data == NULL)) {
        rc = ss_err_set(err, SS_EINVAL, "output '%s': too large or no data",
                        o->name);
        goto done;
    }
    /* Fixed text, the name escaped, the dims, then data or binary. */
    x = 128 + 6 * strlen(o->name) + 21 * (size_t)o->ndim;
    if (__builtin_add_overflow(t, x, &t))
        goto too_big;
    if (o->binary) {
        if (__builtin_add_overflow(t, *bytes, &t))
            goto too_big;
    } else if (ss_mul_overflow(n, elem_max(o->dtype) + 1, &x) < 0 ||
               __builtin_add_overflow(t, x, &t)) {
        goto too_big;
    }
    *numel = n;
    *total = t;
    goto done;
too_big:
    rc = ss_err_set(err, SS_ETOOBIG, "output '%s': response too large",
                    o->name);
done:
    return rc;
}

/* The limit passed: names x, the output that weighs most (numel
 * elements, nbytes of data). */
static int
over_limit(const ss_kserve_output_t *x, size_t numel, size_t nbytes,
           size_t total, size_t max_len, ss_err_t *err)
{
    if (x->binary)
        return ss_err_set(err, SS_ETOOBIG, "the response would take %zu "
                          "bytes, over the limit of %zu bytes on a response "
                          "(output '%s': %zu bytes of binary data)", total,
                          max_len, x->name, nbytes);
    return ss_err_set(err, SS_ETOOBIG, "the response would take up to %zu "
                      "bytes, over the limit of %zu bytes on a response "
                      "(output '%s': %zu %s elements as JSON text, up to "
                      "%zu bytes each; binary data takes %zu each)", total,
                      max_len, x->name, numel, ss_dtype_kserve_name(x->dtype),
                      elem_max(x->dtype) + 1, ss_dtype_size(x->dtype));
}

int
ss_kserve_encode(const char *model, const char *version, const char *id,
                 const ss_kserve_output_t *outs, int n, char **body,
                 size_t *len, size_t *header_len, ss_err_t *err)
{
    return ss_kserve_encode_max(model, version, id, outs, n, 0, body, len,
                                header_len, err);
}

int
ss_kserve_encode_max(const char *model, const char *version, const char *id,
                     const ss_kserve_output_t *outs, int n, size_t max_len,
                     char **body, size_t *len, size_t *header_len,
                     ss_err_t *err)
{
    size_t total, *numel = NULL, *bytes = NULL, o = 0, big_n = 0;
    char *b = NULL;
    int rc = 0, big = 0;

    *body = NULL;
    *len = *header_len = 0;
    if (model == NULL || n < 0 || (n > 0 && outs == NULL)) {
        rc = ss_err_set(err, SS_EINVAL, "encode: bad arguments");
        goto done;
    }
    numel = ss_calloc((size_t)n + 1, sizeof(*numel));
    bytes = ss_calloc((size_t)n + 1, sizeof(*bytes));
    if (numel == NULL || bytes == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to encode a response");
        goto done;
    }
    total = 96 + 6 * strlen(model) + (version ? 6 * strlen(version) : 0) +
            (id ? 6 * strlen(id) : 0);
    for (int i = 0; i < n; i++) {
        size_t was = total;

        if ((rc = size_output(&outs[i], &numel[i], &bytes[i], &total,
                              err)) < 0)
            goto done;
        if (total - was > big_n) {
            big_n = total - was;
            big = i;
        }
    }
    if (max_len > 0 && total > max_len) {
        rc = over_limit(&outs[big], numel[big], bytes[big], total, max_len,
                        err);
        goto done;
    }
    if ((b = ss_malloc(total)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a %zu-byte response",
                        total);
        goto done;
    }
    o += put(b + o, "{\"model_name\":");
    o += put_str(b + o, model);
    if (version) {
        o += put(b + o, ",\"model_version\":");
        o += put_str(b + o, version);
    }
    if (id) {
        o += put(b + o, ",\"id\":");
        o += put_str(b + o, id);
    }
    o += put(b + o, ",\"outputs\":[");
    for (int i = 0; i < n; i++) {
        const ss_kserve_output_t *x = &outs[i];

        o += put(b + o, i ? ",{\"name\":" : "{\"name\":");
        o += put_str(b + o, x->name);
        o += put(b + o, ",\"datatype\":\"");
        o += put(b + o, ss_dtype_kserve_name(x->dtype));
        o += put(b + o, "\",\"shape\":[");
        for (int d = 0; d < x->ndim; d++) {
            if (d)
                b[o++] = ',';
            o += (size_t)ss__kserve_format_i64(x->dims[d], b + o);
        }
        if (x->binary) {
            o += put(b + o, "],\"parameters\":{\"binary_data_size\":");
            o += (size_t)ss__kserve_format_u64(bytes[i], b + o);
            o += put(b + o, "}}");
        } else {
            o += put(b + o, "],\"data\":[");
            o += put_data(b + o, x, numel[i]);
            o += put(b + o, "]}");
        }
    }
    o += put(b + o, "]}");
    *header_len = o;
    for (int i = 0; i < n; i++) {
        if (outs[i].binary && bytes[i] > 0) {
            memcpy(b + o, outs[i].data, bytes[i]);
            o += bytes[i];
        }
    }
    *len = o;
    *body = b;
    b = NULL;
done:
    ss_free(b);
    ss_free(numel);
    ss_free(bytes);
    return rc;
}
