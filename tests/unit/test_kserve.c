/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KServe V2 codec: round trips of every datatype through encode and
 * decode (JSON and binary), nested and flat data, every validation error
 * with its message, the binary extension both ways, allocation failures,
 * and a micro-benchmark against a jansson DOM parse (TAP diagnostics).
 */

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "server/kserve/internal.h"
#include "tests/tap.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int
decode_str(const char *body, ss_kserve_request_t **r, ss_err_t *e)
{
    return ss_kserve_decode(body, strlen(body), -1, NULL, r, e);
}

/* Decoding body fails with code and a message containing want. */
static void
fails(const char *body, int code, const char *want, const char *what)
{
    ss_kserve_request_t *r = NULL;
    ss_err_t e = { 0 };
    int rc = decode_str(body, &r, &e);

    if (!ok(rc == code && r == NULL && strstr(e.msg, want) != NULL,
            "refused: %s", what))
        tap_diag("rc %d (want %d), message \"%s\", want \"%s\"", rc, code,
                 e.msg, want);
    ss_kserve_request_free(r);
}

/* One FP32 input with the given shape and data texts. */
static const char *
req1(const char *dtype, const char *shape, const char *data)
{
    static char buf[4096];

    snprintf(buf, sizeof(buf), "{\"inputs\":[{\"name\":\"x\",\"shape\":%s,"
             "\"datatype\":\"%s\",\"data\":%s}]}", shape, dtype, data);
    return buf;
}

/* The response to a request: "outputs" becomes "inputs". */
static char *
as_request(const char *body, size_t len, size_t hlen, size_t *outlen,
           size_t *outhlen)
{
    const char *at = strstr(body, "\"outputs\":");
    char *r = malloc(len + 1);
    size_t pre = (size_t)(at - body);

    memcpy(r, body, pre);
    memcpy(r + pre, "\"inputs\":", 9);
    memcpy(r + pre + 9, at + 10, len - pre - 10);
    *outlen = len - 1;
    *outhlen = hlen - 1;
    r[*outlen] = '\0';
    return r;
}

static void
fill(ss_dtype_t t, void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t b = rnd();

        switch (t) {
        case SS_DTYPE_F32: {
            float f;
            uint32_t u = (uint32_t)b;

            memcpy(&f, &u, 4);
            if (isnan(f))
                f = (float)i;
            if (i < 6)
                f = (float[]){ INFINITY, -INFINITY, -0.0f, FLT_MAX,
                               1e-45f, 0.1f }[i];
            ((float *)p)[i] = f;
            break;
        }
        case SS_DTYPE_F64: {
            double d;

            memcpy(&d, &b, 8);
            if (isnan(d))
                d = (double)i;
            ((double *)p)[i] = d;
            break;
        }
        case SS_DTYPE_BOOL:
            ((uint8_t *)p)[i] = b & 1;
            break;
        default: {
            size_t es = ss_dtype_size(t);

            memcpy((char *)p + i * es, &b, es);
            if (i == 0)
                memset(p, 0xff, es);            /* -1 or the max */
            if (i == 1) {                       /* 0x80..: the min */
                memset((char *)p + es, 0, es);
                ((uint8_t *)p)[es + es - 1] = 0x80;
            }
            break;
        }
        }
    }
}

static void
test_round_trips(void)
{
    static const ss_dtype_t types[] = {
        SS_DTYPE_BOOL, SS_DTYPE_U8, SS_DTYPE_I8, SS_DTYPE_U16, SS_DTYPE_I16,
        SS_DTYPE_U32, SS_DTYPE_I32, SS_DTYPE_U64, SS_DTYPE_I64, SS_DTYPE_F32,
        SS_DTYPE_F64, SS_DTYPE_F16, SS_DTYPE_BF16,
    };
    int64_t dims[3] = { 2, 3, 50 };

    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        ss_dtype_t t = types[ti];
        const char *tn = ss_dtype_kserve_name(t);
        size_t n = 300, es = ss_dtype_size(t);
        void *data = malloc(n * es);

        fill(t, data, n);
        for (int binary = 0; binary <= 1; binary++) {
            ss_kserve_output_t out = { "out\"put", t, 3, dims, data,
                                       binary };
            ss_kserve_request_t *r = NULL;
            ss_err_t e = { 0 };
            char *body = NULL, *req;
            size_t len, hlen, rlen, rhlen;
            int rc;

            rc = ss_kserve_encode("m", "1", "id-7", &out, 1, &body, &len,
                                  &hlen, &e);
            if (!ok(rc == 0, "%s %s: encoded", tn, binary ? "binary" :
                    "JSON")) {
                tap_diag("%s", e.msg);
                continue;
            }
            is_int(binary ? len - hlen : 0, binary ? n * es : 0,
                   "%s: binary tail size", tn);
            req = as_request(body, len, hlen, &rlen, &rhlen);
            rc = ss_kserve_decode(req, rlen, binary ? (int64_t)rhlen : -1,
                                  NULL, &r, &e);
            if ((t == SS_DTYPE_F16 || t == SS_DTYPE_BF16) && !binary) {
                is_int(rc, SS_EUNSUPP, "%s JSON data is refused", tn);
            } else if (ok(rc == 0, "%s %s: decoded", tn, binary ? "binary" :
                          "JSON")) {
                ok(r->n_inputs == 1 && r->inputs[0].dtype == t &&
                   r->inputs[0].ndim == 3 && r->inputs[0].dims[2] == 50 &&
                   strcmp(r->inputs[0].name, "out\"put") == 0 &&
                   strcmp(r->id, "id-7") == 0, "%s: name, id, shape", tn);
                ok(r->inputs[0].nbytes == n * es &&
                   memcmp(r->inputs[0].data, data, n * es) == 0,
                   "%s %s: values identical", tn, binary ? "binary" :
                   "JSON");
            } else {
                tap_diag("%s", e.msg);
            }
            ss_kserve_request_free(r);
            free(req);
            free(body);
        }
        free(data);
    }
}

static void
test_encode_text(void)
{
    float y[3] = { 0.1f, -2.5f, 1e-7f };
    int64_t dy[2] = { 1, 3 };
    int64_t z = 42;
    int64_t dz[1] = { 1 };
    ss_kserve_output_t outs[2] = {
        { "y", SS_DTYPE_F32, 2, dy, y, false },
        { "z", SS_DTYPE_I64, 1, dz, &z, true },
    };
    char *body = NULL;
    size_t len, hlen;
    ss_err_t e = { 0 };
    const char *want = "{\"model_name\":\"m\\n\",\"model_version\":\"1\","
        "\"id\":\"a\\\"b\\\\\\u0001\",\"outputs\":[{\"name\":\"y\","
        "\"datatype\":\"FP32\",\"shape\":[1,3],\"data\":[0.1,-2.5,1e-7]},"
        "{\"name\":\"z\",\"datatype\":\"INT64\",\"shape\":[1],"
        "\"parameters\":{\"binary_data_size\":8}}]}";
    json_t *j;

    is_int(ss_kserve_encode("m\n", "1", "a\"b\\\x01", outs, 2, &body, &len,
                            &hlen, &e), 0, "encode JSON + binary outputs");
    ok(hlen == strlen(want) && memcmp(body, want, hlen) == 0,
       "exact response header");
    if (hlen != strlen(want) || memcmp(body, want, hlen) != 0)
        tap_diag("got %.*s", (int)hlen, body);
    ok(len == hlen + 8 && memcmp(body + hlen, &z, 8) == 0,
       "binary tail after the header");
    j = json_loadb(body, hlen, 0, NULL);
    ok(j && strcmp(json_string_value(json_object_get(j, "id")),
                   "a\"b\\\x01") == 0, "escaped id reads back in jansson");
    json_decref(j);
    free(body);
    is_int(ss_kserve_encode("m", NULL, NULL, NULL, 0, &body, &len, &hlen,
                            &e), 0, "encode with no outputs");
    ok(len == hlen && strncmp(body, "{\"model_name\":\"m\",\"outputs\":[]}",
                              len) == 0, "no version, no id, no outputs");
    free(body);
    outs[0].dtype = SS_DTYPE_STRING;
    is_int(ss_kserve_encode("m", "1", NULL, outs, 1, &body, &len, &hlen, &e),
           SS_EUNSUPP, "BYTES outputs are refused");
    ok(body == NULL, "no body on error");
}

static void
test_nested(void)
{
    static const struct {
        const char *shape, *data;
        size_t n;
    } same[] = {
        { "[2,3]", "[[1,2,3],[4,5,6]]", 6 },
        { "[2,3]", "[1,2,3,4,5,6]", 6 },
        { "[2,3]", " [ [ 1 , 2 , 3 ] , [ 4 , 5 , 6 ] ] ", 6 },
        { "[1,2,3]", "[[[1,2,3],[4,5,6]]]", 6 },
        { "[2,0]", "[[],[]]", 0 },
        { "[2,0]", "[]", 0 },
        { "[]", "[7]", 1 },
        { "[3]", "[1,2,3]", 3 },
    };

    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        ss_kserve_request_t *r = NULL;
        ss_err_t e = { 0 };
        int rc = decode_str(req1("INT32", same[i].shape, same[i].data), &r,
                            &e);

        if (ok(rc == 0, "shape %s data %s", same[i].shape, same[i].data)) {
            const int32_t *v = r->inputs[0].data;
            bool good = r->inputs[0].nbytes == same[i].n * 4;

            for (size_t k = 0; good && k < same[i].n; k++)
                good = v[k] == (same[i].n == 1 ? 7 : (int32_t)k + 1);
            ok(good, "values in row-major order");
        } else {
            tap_diag("%s", e.msg);
        }
        ss_kserve_request_free(r);
    }
}

static void
test_errors(void)
{
    char buf[8192];
    int o;

    fails(req1("FOO", "[1]", "[1]"), SS_EINVAL, "input 'x': unknown "
          "datatype 'FOO'", "unknown datatype");
    fails(req1("BYTES", "[1]", "[\"a\"]"), SS_EUNSUPP, "input 'x': datatype "
          "BYTES is not supported", "BYTES");
    fails(req1("FP32", "[1,-2]", "[1]"), SS_EINVAL, "input 'x': shape dim 1 "
          "must be a non-negative integer", "negative dim");
    fails(req1("FP32", "[1,2.5]", "[1]"), SS_EINVAL, "shape dim 1",
          "fractional dim");
    fails(req1("FP32", "[1,1,1,1,1,1,1,1,1]", "[1]"), SS_EINVAL,
          "input 'x': shape has 9 dims, at most 8", "too many dims");
    fails(req1("FP32", "[4294967296,4294967296]", "[1]"), SS_EINVAL,
          "input 'x': shape is too large", "overflowing shape");
    fails(req1("FP32", "[100000000]", "[1]"), SS_EINVAL,
          "input 'x': expected 100000000 elements for shape [100000000], "
          "got 1", "a huge shape with tiny data (no allocation)");
    fails(req1("FP32", "\"1\"", "[1]"), SS_EINVAL, "expected an array for "
          "\"shape\"", "shape not an array");
    o = snprintf(buf, sizeof(buf), "{\"inputs\":[{\"name\":\"x\",\"shape\":"
                 "[1,784],\"datatype\":\"FP32\",\"data\":[0");
    for (int i = 1; i < 783; i++)
        o += snprintf(buf + o, sizeof(buf) - (size_t)o, ",%d", i);
    snprintf(buf + o, sizeof(buf) - (size_t)o, "]}]}");
    fails(buf, SS_EINVAL, "input 'x': expected 784 elements for shape "
          "[1,784], got 783", "783 of 784 elements");
    fails(req1("FP32", "[2]", "[1,2,3]"), SS_EINVAL, "expected 2 elements "
          "for shape [2], got 3", "too many flat elements");
    fails(req1("FP32", "[2,2]", "[[1,2],[3]]"), SS_EINVAL, "input 'x': data "
          "does not match shape [2,2]: an array at depth 2 has 1 elements, "
          "expected 2", "short nested row");
    fails(req1("FP32", "[2,2]", "[[1,2],[3,4],[5,6]]"), SS_EINVAL,
          "an array at depth 1 has more than 2 elements", "extra nested row");
    fails(req1("FP32", "[2,2]", "[[1,2],3,4]"), SS_EINVAL, "expected an "
          "array at depth 2", "mixed nesting");
    fails(req1("FP32", "[2]", "[[1],[2]]"), SS_EINVAL, "nested deeper than "
          "shape [2]", "nested deeper than the shape");
    fails(req1("FP32", "[2,1]", "[[[1]],[[2]]]"), SS_EINVAL, "nested deeper",
          "nested deeper at the last level");
    fails(req1("FP32", "[2]", "[1,\"a\"]"), SS_EINVAL, "input 'x': element "
          "1: expected a number, got '\"a\"'", "a string in float data");
    fails(req1("FP32", "[2]", "[1,null]"), SS_EINVAL, "got 'null'",
          "null in float data");
    fails(req1("FP32", "[1]", "[1e39]"), SS_EINVAL, "element 0: value 1e39 "
          "out of range for FP32", "float overflow");
    fails(req1("INT8", "[2]", "[1,300]"), SS_EINVAL, "element 1: value 300 "
          "out of range for INT8", "INT8 range");
    fails(req1("INT8", "[1]", "[-129]"), SS_EINVAL, "out of range for INT8",
          "INT8 low range");
    fails(req1("UINT8", "[1]", "[-1]"), SS_EINVAL, "value -1 out of range "
          "for UINT8", "UINT8 negative");
    fails(req1("INT64", "[1]", "[9223372036854775808]"), SS_EINVAL,
          "out of range for INT64", "INT64 range");
    fails(req1("INT32", "[1]", "[1.5]"), SS_EINVAL, "element 0: non-integer "
          "value 1.5 for INT32", "a fraction in int data");
    fails(req1("INT32", "[1]", "[NaN]"), SS_EINVAL, "non-integer value NaN",
          "NaN in int data");
    fails(req1("BOOL", "[2]", "[true,1]"), SS_EINVAL, "element 1: expected "
          "true or false, got '1'", "a number in BOOL data");
    fails(req1("FP32", "[2]", "[1,]"), SS_EINVAL, "expected a number",
          "trailing comma");
    fails(req1("FP32", "[2]", "[1 2]"), SS_EINVAL, "expected ',' or ']'",
          "missing comma");
    fails(req1("FP32", "[2]", "[,1,2]"), SS_EINVAL, "expected a number",
          "leading comma");
    fails(req1("FP32", "[1]", "[01]"), SS_EINVAL, "expected ',' or ']'",
          "a leading zero");
    fails(req1("FP32", "[1]", "5"), SS_EINVAL, "\"data\" must be an array",
          "scalar data");
    fails(req1("FP32", "[1]", "[1]}x"), SS_EINVAL, "invalid JSON",
          "trailing garbage after the body");
    fails(req1("FP32", "[1]", "[1] x"), SS_EINVAL, "invalid JSON",
          "garbage after the data");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}]} junk", SS_EINVAL, "invalid JSON", "trailing junk");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1],\"data\":[2]}]}", SS_EINVAL, "duplicate",
          "duplicate data key");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]},{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}]}", SS_EINVAL, "input 'x' appears twice",
          "duplicate input names");
    fails("{\"inputs\":[{\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}",
          SS_EINVAL, "inputs[0]: missing \"name\"", "missing name");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"data\":[1]}]}",
          SS_EINVAL, "input 'x': missing \"datatype\"", "missing datatype");
    fails("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"data\":[1]}]}",
          SS_EINVAL, "input 'x': missing \"shape\"", "missing shape");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}"
          "]}", SS_EINVAL, "has neither \"data\" nor binary_data_size",
          "no data at all");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"parameters\":{\"binary_data_size\":4},\"data\":[1]}]}",
          SS_EINVAL, "has both \"data\" and binary_data_size",
          "data and binary_data_size");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"parameters\":{\"binary_data_size\":4}}]}", SS_EINVAL,
          "without an Inference-Header-Content-Length", "binary size in a "
          "JSON-only body");
    fails("{\"id\":\"a\"}", SS_EINVAL, "missing \"inputs\"", "no inputs");
    fails("{\"inputs\":[]}", SS_EINVAL, "\"inputs\" is empty",
          "empty inputs");
    fails("{\"inputs\":{}}", SS_EINVAL, "expected an array for \"inputs\"",
          "inputs not an array");
    fails("{\"inputs\":[3]}", SS_EINVAL, "inputs[0] must be an object",
          "an input that is not an object");
    fails("[1,2]", SS_EINVAL, "must be a JSON object", "an array body");
    fails("", SS_EINVAL, "invalid JSON", "an empty body");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}], \"id\": 5}", SS_EINVAL, "\"id\" must be a string",
          "a numeric id");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}],\"outputs\":[{\"name\":\"y\"},{\"name\":\"y\"}]}",
          SS_EINVAL, "output 'y' is requested twice", "duplicate outputs");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}],\"outputs\":[{\"name\":\"y\",\"parameters\":"
          "{\"binary_data\":1}}]}", SS_EINVAL, "binary_data a boolean",
          "binary_data not a boolean");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}],\"outputs\":[{}]}", SS_EINVAL, "outputs[0]",
          "an output without a name");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP16\","
          "\"data\":[1]}]}", SS_EUNSUPP, "FP16 tensors must use binary data",
          "FP16 as JSON");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1}]}", SS_EINVAL, "", "mismatched brackets");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[1]}]", SS_EINVAL, "invalid JSON", "truncated body");
    fails("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
          "\"data\":[\"]}]}", SS_EINVAL, "invalid JSON",
          "unterminated string in data");

    /* Limits. */
    {
        ss_kserve_limits_t lim = { 2, 100 };
        ss_kserve_request_t *r = NULL;
        ss_err_t e = { 0 };
        const char *three = "{\"inputs\":[{},{},{}]}";
        const char *big = req1("FP32", "[26]", "[0]");

        is_int(ss_kserve_decode(three, strlen(three), -1, &lim, &r, &e),
               SS_ETOOBIG, "more inputs than the limit");
        ok(strstr(e.msg, "more than 2 inputs") != NULL, "message: %s",
           e.msg);
        is_int(ss_kserve_decode(big, strlen(big), -1, &lim, &r, &e),
               SS_ETOOBIG, "a tensor over the byte limit");
        ok(strstr(e.msg, "input 'x': shape [26] of FP32 is over the "
                  "100-byte tensor limit") != NULL, "message: %s", e.msg);
        ok(r == NULL, "no request on errors");
    }
}

static void
test_tokens_and_keys(void)
{
    ss_kserve_request_t *r = NULL;
    ss_err_t e = { 0 };
    const char *b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[4],\"datatype\":"
        "\"FP32\",\"d\\u0061ta\":[NaN,Infinity,-Infinity,-0]}],\"id\":\"\"}";
    int rc = decode_str(b, &r, &e);

    if (ok(rc == 0, "NaN/Infinity tokens and an escaped \"data\" key")) {
        const float *v = r->inputs[0].data;

        ok(isnan(v[0]) && v[1] == INFINITY && v[2] == -INFINITY &&
           v[3] == 0 && signbit(v[3]), "NaN, Infinity, -Infinity, -0");
        is_str(r->id, "", "empty id kept");
        is_int(r->n_outputs, 0, "no outputs: all");
    } else {
        tap_diag("%s", e.msg);
    }
    ss_kserve_request_free(r);
}

static void
test_binary(void)
{
    const char *hdr = "{\"id\":\"b\",\"parameters\":{\"binary_data_output\":"
        "true},\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":"
        "\"FP32\",\"parameters\":{\"binary_data_size\":8}},{\"name\":\"j\","
        "\"shape\":[1],\"datatype\":\"INT64\",\"data\":[5]},{\"name\":\"c\","
        "\"shape\":[3],\"datatype\":\"BOOL\",\"parameters\":"
        "{\"binary_data_size\":3}}],\"outputs\":[{\"name\":\"y\","
        "\"parameters\":{\"binary_data\":true}},{\"name\":\"z\"}]}";
    size_t hl = strlen(hdr), len = hl + 11;
    char body[1024];
    float a[2] = { 1.5f, -2.0f };
    uint8_t c[3] = { 1, 0, 1 };
    ss_kserve_request_t *r = NULL;
    ss_err_t e = { 0 };
    int rc;

    memcpy(body, hdr, hl);
    memcpy(body + hl, a, 8);
    memcpy(body + hl + 8, c, 3);
    rc = ss_kserve_decode(body, len, (int64_t)hl, NULL, &r, &e);
    if (ok(rc == 0, "binary request with a JSON input between")) {
        ok(r->n_inputs == 3 && memcmp(r->inputs[0].data, a, 8) == 0 &&
           *(int64_t *)r->inputs[1].data == 5 &&
           memcmp(r->inputs[2].data, c, 3) == 0, "tensors in input order");
        ok(r->binary_output && r->n_outputs == 2 && r->outputs[0].binary &&
           !r->outputs[1].binary && strcmp(r->outputs[1].name, "z") == 0,
           "binary_data_output and per-output binary_data");
    } else {
        tap_diag("%s", e.msg);
    }
    ss_kserve_request_free(r);
    r = NULL;
    is_int(ss_kserve_decode(body, len + 1, (int64_t)hl, NULL, &r, &e),
           SS_EINVAL, "an extra byte after the tensors");
    ok(strstr(e.msg, "binary data: 12 bytes follow the JSON header, the "
              "inputs take 11") != NULL, "message: %s", e.msg);
    is_int(ss_kserve_decode(body, len - 1, (int64_t)hl, NULL, &r, &e),
           SS_EINVAL, "a byte short");
    ok(strstr(e.msg, "input 'c': binary data runs past the end") != NULL,
       "message: %s", e.msg);
    is_int(ss_kserve_decode(body, len, (int64_t)len + 1, NULL, &r, &e),
           SS_EINVAL, "header length past the body");
    ok(strstr(e.msg, "does not fit the") != NULL, "message: %s", e.msg);
    is_int(ss_kserve_decode(body, len, (int64_t)hl - 1, NULL, &r, &e),
           SS_EINVAL, "header length one short");
    is_int(ss_kserve_decode(body, len, -5, NULL, &r, &e), SS_EINVAL,
           "negative header length");
    memcpy(body, hdr, hl);
    {
        char *p = strstr(body, "\"binary_data_size\":8");

        p[19] = '9';
        is_int(ss_kserve_decode(body, len, (int64_t)hl, NULL, &r, &e),
               SS_EINVAL, "binary size not matching the shape");
        ok(strstr(e.msg, "input 'a': binary_data_size 9 does not match the "
                  "8 bytes of shape [2] of FP32") != NULL, "message: %s",
           e.msg);
    }
    ok(r == NULL, "no request on errors");
}

static void
test_alloc_failures(void)
{
    const char *b = "{\"id\":\"q\",\"inputs\":[{\"name\":\"x\",\"shape\":"
        "[2,2],\"datatype\":\"FP32\",\"data\":[[1,2],[3,4]]},{\"name\":\"y\","
        "\"shape\":[1],\"datatype\":\"INT8\",\"data\":[1]}],\"outputs\":"
        "[{\"name\":\"o\"}]}";
    int n_fail = 0, bad = 0;
    float v[4] = { 1, 2, 3, 4 };
    int64_t d[1] = { 4 };
    ss_kserve_output_t out = { "o", SS_DTYPE_F32, 1, d, v, false };

    for (long k = 1; k < 100; k++) {
        ss_kserve_request_t *r = NULL;
        ss_err_t e = { 0 };
        int rc;

        ss_alloc_fail_after(k);
        rc = decode_str(b, &r, &e);
        ss_alloc_fail_after(0);
        ss_kserve_request_free(r);
        if (rc == 0)
            break;
        n_fail++;
        bad += rc != SS_ENOMEM || r != NULL;
    }
    ok(n_fail > 5 && bad == 0, "decode: each of %d allocation failures is "
       "SS_ENOMEM, no leak", n_fail);
    n_fail = bad = 0;
    for (long k = 1; k < 100; k++) {
        char *body = NULL;
        size_t len, hlen;
        int rc;

        ss_alloc_fail_after(k);
        rc = ss_kserve_encode("m", "1", NULL, &out, 1, &body, &len, &hlen,
                              NULL);
        ss_alloc_fail_after(0);
        free(body);
        if (rc == 0)
            break;
        n_fail++;
        bad += rc != SS_ENOMEM || body != NULL;
    }
    ok(n_fail >= 2 && bad == 0, "encode: each of %d allocation failures is "
       "SS_ENOMEM", n_fail);
}

/* A 784-float request; full: random %.9g floats, else short pixel-like
 * values. */
static char *
mnist_body(bool full, size_t *len)
{
    size_t cap = 32768, o;
    char *b = malloc(cap);

    o = (size_t)snprintf(b, cap, "{\"id\":\"r1\",\"inputs\":[{\"name\":"
                         "\"input\",\"shape\":[1,784],\"datatype\":\"FP32\","
                         "\"data\":[");
    for (int i = 0; i < 784; i++) {
        double v = (double)(rnd() >> 11) / 9007199254740992.0;

        if (full)
            o += (size_t)snprintf(b + o, cap - o, "%s%.9g", i ? "," : "",
                                  (double)(float)(v * 2 - 1));
        else
            o += (size_t)snprintf(b + o, cap - o, "%s%.3g", i ? "," : "",
                                  (double)((int)(v * 256) / 255.0f));
    }
    o += (size_t)snprintf(b + o, cap - o, "]}],\"outputs\":[{\"name\":"
                          "\"output\"}]}");
    *len = o;
    return b;
}

/* What the DOM route costs: parse, then walk the array into floats. */
static int
jansson_decode(const char *b, size_t len, float *out)
{
    json_t *root = json_loadb(b, len, 0, NULL);
    json_t *data = json_object_get(json_array_get(
        json_object_get(root, "inputs"), 0), "data");
    size_t i;
    json_t *v;

    json_array_foreach(data, i, v)
        out[i] = (float)json_number_value(v);
    json_decref(root);
    return root ? 0 : -1;
}

static void
bench(void)
{
    float ref[784];

    for (int full = 0; full <= 1; full++) {
        size_t len;
        char *b = mnist_body(full, &len);
        int iters = 100;
        double t0, t_ours, t_dom;
        ss_kserve_request_t *r = NULL;

        jansson_decode(b, len, ref);            /* warm up */
        t_ours = t_dom = 1e30;
        for (int batch = 0; batch < 5; batch++) {   /* best of 5 */
            t0 = ((double)ss_clock_mono_ns() / 1e3);
            for (int i = 0; i < iters; i++) {
                ss_kserve_request_free(r);
                r = NULL;
                if (ss_kserve_decode(b, len, -1, NULL, &r, NULL) < 0)
                    break;
            }
            t_ours = fmin(t_ours, (((double)ss_clock_mono_ns() / 1e3) - t0) / iters);
            t0 = ((double)ss_clock_mono_ns() / 1e3);
            for (int i = 0; i < iters / 4; i++)
                jansson_decode(b, len, ref);
            t_dom = fmin(t_dom, (((double)ss_clock_mono_ns() / 1e3) - t0) / (iters / 4));
        }
        ok(r != NULL && memcmp(r->inputs[0].data, ref, sizeof(ref)) == 0,
           "784 %s floats decode like jansson + (float)", full ? "full" :
           "short");
        tap_diag("bench: decode 784 %s floats (%zu-byte body): %.1f us; "
                 "jansson DOM + walk: %.1f us (%.1fx)", full ?
                 "full-precision" : "short", len, t_ours, t_dom,
                 t_dom / t_ours);
        ss_kserve_request_free(r);
        free(b);
    }
    {
        /* The binary fast path: a 784-float request, a 10-float response. */
        const char *hdr = "{\"id\":\"r1\",\"inputs\":[{\"name\":\"input\","
            "\"shape\":[1,784],\"datatype\":\"FP32\",\"parameters\":"
            "{\"binary_data_size\":3136}}],\"outputs\":[{\"name\":"
            "\"output\",\"parameters\":{\"binary_data\":true}}]}";
        size_t hl = strlen(hdr), len = hl + 3136, blen, bhl;
        char *b = calloc(1, len);
        float y[10] = { 0 };
        int64_t dy[2] = { 1, 10 };
        ss_kserve_output_t out = { "output", SS_DTYPE_F32, 2, dy, y, true };
        double t0, t_dec = 1e30, t_enc = 1e30;
        int iters = 1000;

        memcpy(b, hdr, hl);
        for (int batch = 0; batch < 5; batch++) {
            t0 = ((double)ss_clock_mono_ns() / 1e3);
            for (int i = 0; i < iters; i++) {
                ss_kserve_request_t *r = NULL;

                ss_kserve_decode(b, len, (int64_t)hl, NULL, &r, NULL);
                ss_kserve_request_free(r);
            }
            t_dec = fmin(t_dec, (((double)ss_clock_mono_ns() / 1e3) - t0) / iters);
            t0 = ((double)ss_clock_mono_ns() / 1e3);
            for (int i = 0; i < iters; i++) {
                char *body = NULL;

                ss_kserve_encode("m", "1", "r1", &out, 1, &body, &blen, &bhl,
                                 NULL);
                free(body);
            }
            t_enc = fmin(t_enc, (((double)ss_clock_mono_ns() / 1e3) - t0) / iters);
        }
        ok(blen == bhl + 40, "binary response of 10 floats");
        tap_diag("bench: binary: decode 784 floats %.2f us, encode 10 "
                 "floats %.2f us", t_dec, t_enc);
        free(b);
    }
    {
        float v[1000];
        int64_t d[2] = { 1, 1000 };
        ss_kserve_output_t out = { "output", SS_DTYPE_F32, 2, d, v, false };
        int iters = 100;
        double t0, t_ours, t_dom;
        size_t len = 0, hlen;

        for (int i = 0; i < 1000; i++)
            v[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 * 20 -
                           10);
        t_ours = 1e30;
        for (int batch = 0; batch < 5; batch++) {
            t0 = ((double)ss_clock_mono_ns() / 1e3);
            for (int i = 0; i < iters; i++) {
                char *body = NULL;

                ss_kserve_encode("m", "1", "r1", &out, 1, &body, &len,
                                 &hlen, NULL);
                free(body);
            }
            t_ours = fmin(t_ours, (((double)ss_clock_mono_ns() / 1e3) - t0) / iters);
        }
        t0 = ((double)ss_clock_mono_ns() / 1e3);
        for (int i = 0; i < iters / 4; i++) {
            json_t *a = json_array();
            char *s;

            for (int k = 0; k < 1000; k++)
                json_array_append_new(a, json_real(v[k]));
            s = json_dumps(a, JSON_COMPACT);
            free(s);
            json_decref(a);
        }
        t_dom = (((double)ss_clock_mono_ns() / 1e3) - t0) / (iters / 4);
        tap_diag("bench: encode 1000 floats (%zu-byte body): %.1f us "
                 "(%.0f ns/float); jansson array + dump: %.1f us", len,
                 t_ours, t_ours, t_dom);
    }
}

int
main(void)
{
    test_round_trips();
    test_encode_text();
    test_nested();
    test_errors();
    test_tokens_and_keys();
    test_binary();
    test_alloc_failures();
    bench();
    return tap_done();
}
