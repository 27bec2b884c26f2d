/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tensor "data" scanner: one input's JSON array, flat or nested, read
 * straight into its typed buffer without building a DOM.
 *
 * One loop serves both forms.  It keeps, for each open array, how many
 * elements it has seen, and the limit for that depth: the shape's dim when
 * the data is nested (the first element of the outer array is itself an
 * array), unbounded for flat data whose total is checked at the end.
 * Arrays must appear exactly at depths 1..ndim-1 and scalars at the last,
 * so nested data agrees with the shape dim by dim and a write can never
 * pass the buffer.  Scalars past the expected count of flat data are still
 * parsed (into a scratch slot) so the error can say how many there were.
 *
 * THREADS: pure functions; [any].
 */

#include <stdio.h>
#include <string.h>

#include "server/kserve/internal.h"

static inline const char *
ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

void
ss__kserve_shape_str(int ndim, const int64_t *dims, char *buf, size_t len)
{
    size_t o = 0;
    int n;

    if (len == 0)
        return;
    buf[0] = '\0';
    n = snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n >= 0 && (size_t)n < len - o; i++) {
        o += (size_t)n;
        n = snprintf(buf + o, len - o, "%s%lld", i ? "," : "",
                     (long long)dims[i]);
    }
    if (n >= 0 && (size_t)n < len - o) {
        o += (size_t)n;
        snprintf(buf + o, len - o, "]");
    }
}

static const char *
shape_of(const ss_kserve_input_t *in, char buf[160])
{
    ss__kserve_shape_str(in->ndim, in->dims, buf, 160);
    return buf;
}

/* The token at p, for messages: up to 24 bytes, printable only. */
static void
excerpt(const char *p, const char *end, char *out, size_t len)
{
    size_t n = 0;

    while (p < end && n + 4 < len && n < 24 && *p != ',' && *p != ']' &&
           *p != '[' && *p != ' ' && *p != '\n') {
        unsigned char c = (unsigned char)*p++;

        out[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (p < end && n >= 24) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static int
int_range(ss_dtype_t t, bool neg, uint64_t mag, void *dst)
{
    int64_t lo;
    uint64_t hi;

    switch (t) {
    case SS_DTYPE_I8: lo = INT8_MIN; hi = INT8_MAX; break;
    case SS_DTYPE_U8: lo = 0; hi = UINT8_MAX; break;
    case SS_DTYPE_I16: lo = INT16_MIN; hi = INT16_MAX; break;
    case SS_DTYPE_U16: lo = 0; hi = UINT16_MAX; break;
    case SS_DTYPE_I32: lo = INT32_MIN; hi = INT32_MAX; break;
    case SS_DTYPE_U32: lo = 0; hi = UINT32_MAX; break;
    case SS_DTYPE_I64: lo = INT64_MIN; hi = INT64_MAX; break;
    case SS_DTYPE_U64: lo = 0; hi = UINT64_MAX; break;
    default: return SS__KNUM_SYNTAX;
    }
    if (neg ? mag > (uint64_t)0 - (uint64_t)lo : mag > hi)
        return SS__KNUM_RANGE;
    if (neg) {
        int64_t v = mag == 0 ? 0 : (int64_t)(0 - mag);

        switch (t) {
        case SS_DTYPE_I8: *(int8_t *)dst = (int8_t)v; break;
        case SS_DTYPE_I16: *(int16_t *)dst = (int16_t)v; break;
        case SS_DTYPE_I32: *(int32_t *)dst = (int32_t)v; break;
        case SS_DTYPE_I64: *(int64_t *)dst = v; break;
        default: memset(dst, 0, ss_dtype_size(t)); break;   /* -0 */
        }
        return 0;
    }
    switch (t) {
    case SS_DTYPE_I8: *(int8_t *)dst = (int8_t)mag; break;
    case SS_DTYPE_U8: *(uint8_t *)dst = (uint8_t)mag; break;
    case SS_DTYPE_I16: *(int16_t *)dst = (int16_t)mag; break;
    case SS_DTYPE_U16: *(uint16_t *)dst = (uint16_t)mag; break;
    case SS_DTYPE_I32: *(int32_t *)dst = (int32_t)mag; break;
    case SS_DTYPE_U32: *(uint32_t *)dst = (uint32_t)mag; break;
    case SS_DTYPE_I64: *(int64_t *)dst = (int64_t)mag; break;
    default: *(uint64_t *)dst = mag; break;
    }
    return 0;
}

/* One scalar at *pp into dst (element i, for messages). */
static int
scalar(const char **pp, const char *end, const ss_kserve_input_t *in,
       void *dst, size_t i, ss_err_t *err)
{
    const char *p = *pp, *q = p;
    const char *tn;
    char ex[32];
    bool neg;
    uint64_t mag;
    int rc;

    switch (in->dtype) {
    case SS_DTYPE_F32:
        rc = ss__kserve_parse_f32(p, end, dst, &q);
        break;
    case SS_DTYPE_F64:
        rc = ss__kserve_parse_f64(p, end, dst, &q);
        break;
    case SS_DTYPE_BOOL:
        rc = SS__KNUM_SYNTAX;
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            *(uint8_t *)dst = 1;
            q = p + 4;
            rc = 0;
        } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            *(uint8_t *)dst = 0;
            q = p + 5;
            rc = 0;
        }
        break;
    default:
        rc = ss__kserve_parse_int(p, end, &neg, &mag, &q);
        if (rc == 0)
            rc = int_range(in->dtype, neg, mag, dst);
        break;
    }
    if (rc == 0) {
        *pp = q;
        return 0;
    }
    excerpt(p, end, ex, sizeof(ex));
    tn = ss_dtype_kserve_name(in->dtype);
    if (rc == SS_ENOMEM)
        return ss_err_set(err, SS_ENOMEM, "input '%s': no memory to read "
                          "element %zu", in->name, i);
    if (rc == SS__KNUM_RANGE)
        return ss_err_set(err, SS_EINVAL, "input '%s': element %zu: value "
                          "%s out of range for %s", in->name, i, ex, tn);
    if (in->dtype == SS_DTYPE_BOOL)
        return ss_err_set(err, SS_EINVAL, "input '%s': element %zu: expected "
                          "true or false, got '%s'", in->name, i, ex);
    if (in->dtype != SS_DTYPE_F32 && in->dtype != SS_DTYPE_F64) {
        double d;

        if (ss__kserve_parse_f64(p, end, &d, &q) == 0)
            return ss_err_set(err, SS_EINVAL, "input '%s': element %zu: "
                              "non-integer value %s for %s", in->name, i, ex,
                              tn);
    }
    return ss_err_set(err, SS_EINVAL, "input '%s': element %zu: expected a "
                      "number, got '%s'", in->name, i, ex);
}

int
ss__kserve_scan_data(const char *p, size_t n, ss_kserve_input_t *in,
                     size_t numel, ss_err_t *err)
{
    const char *end = p + n;
    size_t es = ss_dtype_size(in->dtype), pos = 0;
    int64_t lim[SS_MAX_DIMS], seen[SS_MAX_DIMS];
    int levels, level = 0, rc = 0;
    bool nested, need = false;
    uint64_t scratch;
    char shape[160];

    p = ws(p, end);
    if (p >= end || *p != '[') {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': \"data\" must be an "
                        "array", in->name);
        goto done;
    }
    p = ws(p + 1, end);
    nested = p < end && *p == '[';
    if (nested && in->ndim < 2) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': data is nested deeper "
                        "than shape %s", in->name, shape_of(in, shape));
        goto done;
    }
    levels = nested ? in->ndim : 1;
    if (nested)
        memcpy(lim, in->dims, (size_t)levels * sizeof(lim[0]));
    else
        lim[0] = INT64_MAX;
    seen[0] = 0;
    for (;;) {
        p = ws(p, end);
        if (p >= end) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': data ends inside "
                            "an array", in->name);
            goto done;
        }
        if (*p == ']' && !need) {
            if (nested && seen[level] != lim[level]) {
                rc = ss_err_set(err, SS_EINVAL, "input '%s': data does not "
                                "match shape %s: an array at depth %d has "
                                "%lld elements, expected %lld", in->name,
                                shape_of(in, shape), level + 1,
                                (long long)seen[level], (long long)lim[level]);
                goto done;
            }
            p++;
            if (level-- == 0)
                break;
        } else {
            if (seen[level] == lim[level]) {
                rc = ss_err_set(err, SS_EINVAL, "input '%s': data does not "
                                "match shape %s: an array at depth %d has "
                                "more than %lld elements", in->name,
                                shape_of(in, shape),
                                level + 1, (long long)lim[level]);
                goto done;
            }
            seen[level]++;
            if (level < levels - 1) {
                if (*p != '[') {
                    rc = ss_err_set(err, SS_EINVAL, "input '%s': data does "
                                    "not match shape %s: expected an array "
                                    "at depth %d", in->name,
                                    shape_of(in, shape),
                                    level + 2);
                    goto done;
                }
                p++;
                seen[++level] = 0;
                need = false;
                continue;
            }
            if (*p == '[') {
                rc = ss_err_set(err, SS_EINVAL, "input '%s': data is nested "
                                "deeper than shape %s", in->name,
                                shape_of(in, shape));
                goto done;
            }
            if ((rc = scalar(&p, end, in, in->data && pos < numel ?
                             (char *)in->data + pos * es : (void *)&scratch,
                             pos, err)) < 0)
                goto done;
            pos++;
        }
        p = ws(p, end);
        if (p < end && *p == ',') {
            p++;
            need = true;
            continue;
        }
        need = false;
        if (p < end && *p == ']')
            continue;
        rc = ss_err_set(err, SS_EINVAL, "input '%s': malformed data after "
                        "element %zu: expected ',' or ']'", in->name,
                        pos ? pos - 1 : 0);
        goto done;
    }
    p = ws(p, end);
    if (p != end) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': trailing bytes after "
                        "\"data\"", in->name);
        goto done;
    }
    if (pos != numel) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': expected %zu elements "
                        "for shape %s, got %zu", in->name, numel,
                        shape_of(in, shape), pos);
        goto done;
    }
done:
    return rc;
}
