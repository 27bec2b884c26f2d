/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KServe V2 request decoding: the JSON envelope and the tensors, as JSON
 * "data" arrays or as Triton's binary tensors after the JSON header.
 *
 * DESIGN.  Building a jansson DOM for the numeric arrays is what made JSON
 * requests slow (265-579 us for 784 floats, measured), so decoding runs in
 * three steps:
 *
 *   1. A small hand-written scanner walks the JSON header just far enough
 *      to know the structure: the top-level object, its "inputs" array and
 *      each input object's "data" member.  It records the byte span of
 *      each input's "data" value and skips every other value without
 *      looking inside (a byte loop that only stops at quotes and
 *      brackets).  It validates little: it only has to find the spans.
 *   2. The header, with each "data" value replaced by the input's index
 *      ("data":0), is the envelope: a few hundred bytes that jansson parses
 *      with duplicate keys rejected.  Everything but the numbers is read
 *      from that DOM, so names, ids and parameters get jansson's full
 *      validation, string escapes and UTF-8 checks.  A "data" member in
 *      jansson's view that is not the expected index cannot happen unless
 *      the scanner and jansson disagree on the structure, and is refused.
 *   3. Each span goes to the data scanner (kserve_data.c), which checks it
 *      strictly and writes the numbers straight into the input's buffer.
 *
 * Substituting a value for a value keeps JSON valid both ways, so the body
 * is accepted exactly when the envelope is valid JSON and every span is a
 * valid array.  When step 1 finds malformed text, jansson parses the
 * original header to give its usual message with line and column.  The
 * alternative, a complete hand-written JSON parser, would save the
 * envelope copy and the small jansson parse (most of the ~3 us a binary
 * 784-float request takes; a JSON one takes 11-15 us against 105-170 us
 * through the DOM, see the unit test's numbers) at the price of
 * re-implementing string escapes and UTF-8 validation; not worth it.
 *
 * Before allocating a JSON tensor, its element count is checked against
 * the span's length (each element takes at least two bytes with its
 * comma), so a tiny body cannot make us allocate a huge shape; binary
 * tensors must fit in the body.  Both are also capped by the limits.
 *
 * THREADS: pure functions; [any].
 */

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/internal.h"

#define DEFAULT_MAX_INPUTS 64
#define DEFAULT_MAX_TENSOR_BYTES ((size_t)1 << 30)

/* The message for a header the scanner or the envelope found malformed. */
static int
json_error(const char *hdr, size_t n, ss_err_t *err)
{
    json_error_t je;
    json_t *j = json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &je);
    int rc;

    if (j == NULL)
        rc = ss_err_set(err, SS_EINVAL, "invalid JSON at line %d column "
                        "%d: %s", je.line, je.column, je.text);
    else if (!json_is_object(j))
        rc = ss_err_set(err, SS_EINVAL, "the request must be a JSON object");
    else
        rc = ss_err_set(err, SS_EINVAL, "malformed request");
    json_decref(j);
    return rc;
}

void
ss_kserve_request_free(ss_kserve_request_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->n_inputs; i++) {
        ss_free(r->inputs[i].name);
        ss_free(r->inputs[i].data);
    }
    for (int i = 0; i < r->n_outputs; i++)
        ss_free(r->outputs[i].name);
    ss_free(r->inputs);
    ss_free(r->outputs);
    ss_free(r->id);
    ss_free(r->adapter);
    ss_free(r);
}

typedef struct ctx {
    const char *body;
    size_t len, hlen;
    bool binary;            /* header_len given */
    size_t bin_off;         /* bytes of binary tensors consumed */
    size_t max_bytes;
    const ss__kspan_t *spans;
} ctx_t;

static int
read_shape(json_t *js, ss_kserve_input_t *in, size_t *numel, ss_err_t *err)
{
    size_t n = 1;
    int rc = 0;

    if (!json_is_array(js)) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': %s \"shape\"", in->name,
                        js ? "expected an array for" : "missing");
        goto done;
    }
    if (json_array_size(js) > SS_MAX_DIMS) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': shape has %zu dims, at "
                        "most %d are supported", in->name,
                        json_array_size(js), SS_MAX_DIMS);
        goto done;
    }
    in->ndim = (int)json_array_size(js);
    for (int d = 0; d < in->ndim; d++) {
        json_t *jd = json_array_get(js, (size_t)d);

        if (!json_is_integer(jd) || json_integer_value(jd) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': shape dim %d must be "
                            "a non-negative integer", in->name, d);
            goto done;
        }
        in->dims[d] = json_integer_value(jd);
        if ((uint64_t)in->dims[d] > SIZE_MAX ||
            ss_mul_overflow(n, (size_t)in->dims[d], &n) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': shape is too large",
                            in->name);
            goto done;
        }
    }
    *numel = n;
done:
    return rc;
}

static const char *
shape_txt(const ss_kserve_input_t *in, char buf[160])
{
    ss__kserve_shape_str(in->ndim, in->dims, buf, 160);
    return buf;
}

/* Everything about input i but its name. */
static int
read_input(ctx_t *c, json_t *ji, int i, ss_kserve_input_t *in, ss_err_t *err)
{
    json_t *jt = json_object_get(ji, "datatype");
    json_t *jp = json_object_get(ji, "parameters");
    json_t *jd = json_object_get(ji, "data");
    json_t *jb = NULL;
    const char *tn;
    size_t numel = 0, es, bsize = 0;
    char shape[160];
    int rc;

    if (!json_is_string(jt)) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': %s \"datatype\"",
                        in->name, jt ? "expected a string for" : "missing");
        goto done;
    }
    tn = json_string_value(jt);
    in->dtype = ss_dtype_from_kserve(tn);
    if (in->dtype == SS_DTYPE_UNDEFINED) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': unknown datatype '%.32s'",
                        in->name, tn);
        goto done;
    }
    if ((es = ss_dtype_size(in->dtype)) == 0) {
        rc = ss_err_set(err, SS_EUNSUPP, "input '%s': datatype %s is not "
                        "supported", in->name, tn);
        goto done;
    }
    if ((rc = read_shape(json_object_get(ji, "shape"), in, &numel, err)) < 0)
        goto done;
    if (ss_mul_overflow(numel, es, &in->nbytes) < 0 ||
        in->nbytes > c->max_bytes) {
        rc = ss_err_set(err, SS_ETOOBIG, "input '%s': shape %s of %s is over "
                        "the %zu-byte tensor limit", in->name,
                        shape_txt(in, shape), tn, c->max_bytes);
        goto done;
    }
    if (jp != NULL && !json_is_object(jp)) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': \"parameters\" must be "
                        "an object", in->name);
        goto done;
    }
    if (json_object_get(jp, "shared_memory_region") != NULL) {
        /* Triton's shared-memory extension: ignoring it would run the
         * model on whatever "data" came along, or say "no data". */
        rc = ss_err_set(err, SS_EUNSUPP, "input '%s': shared memory "
                        "(shared_memory_region) is not supported; send "
                        "\"data\" or binary data", in->name);
        goto done;
    }
    if (jp != NULL && (jb = json_object_get(jp, "binary_data_size")) != NULL) {
        if (!json_is_integer(jb) || json_integer_value(jb) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': binary_data_size "
                            "must be a non-negative integer", in->name);
            goto done;
        }
        bsize = (size_t)json_integer_value(jb);
    }
    if ((jb != NULL) == (jd != NULL)) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': %s", in->name, jb ?
                        "has both \"data\" and binary_data_size" :
                        "has neither \"data\" nor binary_data_size");
        goto done;
    }
    if (jb != NULL) {
        if (!c->binary) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': binary_data_size "
                            "without an Inference-Header-Content-Length "
                            "header", in->name);
            goto done;
        }
        if (bsize != in->nbytes) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': binary_data_size "
                            "%zu does not match the %zu bytes of shape %s "
                            "of %s", in->name, bsize, in->nbytes,
                            shape_txt(in, shape), tn);
            goto done;
        }
        if (bsize > c->len - c->hlen - c->bin_off) {
            rc = ss_err_set(err, SS_EINVAL, "input '%s': binary data runs "
                            "past the end of the body (%zu bytes after the "
                            "header, the inputs so far need %zu)", in->name,
                            c->len - c->hlen, c->bin_off + bsize);
            goto done;
        }
        if ((in->data = ss_aligned_alloc(in->nbytes)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "input '%s': no memory for %zu "
                            "bytes", in->name, in->nbytes);
            goto done;
        }
        if (bsize > 0)
            memcpy(in->data, c->body + c->hlen + c->bin_off, bsize);
        c->bin_off += bsize;
        goto done;
    }
    if (!json_is_integer(jd) || json_integer_value(jd) != i ||
        c->spans[i].p == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "input '%s': malformed \"data\"",
                        in->name);
        goto done;
    }
    if (in->dtype == SS_DTYPE_F16 || in->dtype == SS_DTYPE_BF16) {
        rc = ss_err_set(err, SS_EUNSUPP, "input '%s': %s tensors must use "
                        "binary data", in->name, tn);
        goto done;
    }
    /* Each element takes at least two bytes with its separator: a count
     * the text cannot hold is refused without allocating for it (the scan
     * still runs, to count what is there). */
    if (numel <= c->spans[i].n / 2 + 1 &&
        (in->data = ss_aligned_alloc(in->nbytes)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "input '%s': no memory for %zu "
                        "bytes", in->name, in->nbytes);
        goto done;
    }
    if ((rc = ss__kserve_scan_data(c->spans[i].p, c->spans[i].n, in, numel,
                                   err)) < 0)
        goto done;
    if (in->data == NULL)
        rc = ss_err_set(err, SS_EINTERNAL, "input '%s': data scan accepted "
                        "an impossible element count", in->name);
done:
    return rc;
}

static int
read_inputs(ctx_t *c, json_t *root, ss_kserve_request_t *r, ss_err_t *err)
{
    json_t *ja = json_object_get(root, "inputs");
    size_t n;
    int rc = 0;

    if (!json_is_array(ja)) {
        rc = ss_err_set(err, SS_EINVAL, "%s \"inputs\"",
                        ja ? "expected an array for" : "missing");
        goto done;
    }
    if ((n = json_array_size(ja)) == 0) {
        rc = ss_err_set(err, SS_EINVAL, "\"inputs\" is empty");
        goto done;
    }
    if ((r->inputs = ss_calloc(n, sizeof(r->inputs[0]))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %zu inputs", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *ji = json_array_get(ja, i);
        json_t *jn = json_object_get(ji, "name");
        ss_kserve_input_t *in = &r->inputs[i];
        const char *name;

        if (!json_is_object(ji)) {
            rc = ss_err_set(err, SS_EINVAL, "inputs[%zu] must be an object",
                            i);
            goto done;
        }
        if (!json_is_string(jn) || *(name = json_string_value(jn)) == '\0') {
            rc = ss_err_set(err, SS_EINVAL, "inputs[%zu]: %s \"name\"", i,
                            jn ? "expected a non-empty string for" :
                            "missing");
            goto done;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->inputs[j].name, name) == 0) {
                rc = ss_err_set(err, SS_EINVAL, "input '%s' appears twice",
                                name);
                goto done;
            }
        }
        if ((in->name = ss_strdup(name)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for an input name");
            goto done;
        }
        r->n_inputs = (int)i + 1;
        if ((rc = read_input(c, ji, (int)i, in, err)) < 0)
            goto done;
    }
    if (c->binary && c->bin_off != c->len - c->hlen)
        rc = ss_err_set(err, SS_EINVAL, "binary data: %zu bytes follow the "
                        "JSON header, the inputs take %zu", c->len - c->hlen,
                        c->bin_off);
done:
    return rc;
}

static int
read_outputs(json_t *root, ss_kserve_request_t *r, ss_err_t *err)
{
    json_t *ja = json_object_get(root, "outputs");
    size_t n;
    int rc = 0;

    if (ja == NULL)
        goto done;
    if (!json_is_array(ja)) {
        rc = ss_err_set(err, SS_EINVAL, "\"outputs\" must be an array");
        goto done;
    }
    if ((n = json_array_size(ja)) == 0)
        goto done;
    if ((r->outputs = ss_calloc(n, sizeof(r->outputs[0]))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %zu outputs", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *jo = json_array_get(ja, i);
        json_t *jn = json_object_get(jo, "name");
        json_t *jp = json_object_get(jo, "parameters");
        json_t *jb = json_object_get(jp, "binary_data");
        const char *name;

        if (!json_is_object(jo) || !json_is_string(jn) ||
            *(name = json_string_value(jn)) == '\0') {
            rc = ss_err_set(err, SS_EINVAL, "outputs[%zu]: expected an "
                            "object with a non-empty \"name\"", i);
            goto done;
        }
        if ((jp != NULL && !json_is_object(jp)) ||
            (jb != NULL && !json_is_boolean(jb))) {
            rc = ss_err_set(err, SS_EINVAL, "output '%s': \"parameters\" "
                            "must be an object and binary_data a boolean",
                            name);
            goto done;
        }
        /* Triton extensions that change the answer: ignored, the client
         * would read logits as class labels, or wait on a region. */
        if (json_object_get(jp, "classification") != NULL ||
            json_object_get(jp, "shared_memory_region") != NULL) {
            rc = ss_err_set(err, SS_EUNSUPP, "output '%s': %s is not "
                            "supported", name,
                            json_object_get(jp, "classification") ?
                            "the classification extension" :
                            "shared memory (shared_memory_region)");
            goto done;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->outputs[j].name, name) == 0) {
                rc = ss_err_set(err, SS_EINVAL, "output '%s' is requested "
                                "twice", name);
                goto done;
            }
        }
        if ((r->outputs[i].name = ss_strdup(name)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for an output name");
            goto done;
        }
        r->outputs[i].binary = json_is_true(jb);
        r->n_outputs = (int)i + 1;
    }
done:
    return rc;
}

static int
read_request(ctx_t *c, json_t *root, ss_kserve_request_t *r, ss_err_t *err)
{
    json_t *jid = json_object_get(root, "id");
    json_t *jp = json_object_get(root, "parameters");
    json_t *jb = json_object_get(jp, "binary_data_output");
    json_t *ja;
    int rc = 0;

    if (jid != NULL) {
        if (!json_is_string(jid)) {
            rc = ss_err_set(err, SS_EINVAL, "\"id\" must be a string");
            goto done;
        }
        if ((r->id = ss_strdup(json_string_value(jid))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for the request id");
            goto done;
        }
    }
    if ((jp != NULL && !json_is_object(jp)) ||
        (jb != NULL && !json_is_boolean(jb))) {
        rc = ss_err_set(err, SS_EINVAL, "\"parameters\" must be an object "
                        "and binary_data_output a boolean");
        goto done;
    }
    r->binary_output = json_is_true(jb);
    /* The LoRA adapter to run with (server/model/adapter.h). */
    if ((ja = json_object_get(jp, "adapter")) != NULL) {
        if (!json_is_string(ja) || json_string_length(ja) == 0) {
            rc = ss_err_set(err, SS_EINVAL, "parameters.adapter must be a "
                            "non-empty string");
            goto done;
        }
        if ((r->adapter = ss_strdup(json_string_value(ja))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for the request");
            goto done;
        }
    }
    if ((rc = read_inputs(c, root, r, err)) < 0)
        goto done;
    rc = read_outputs(root, r, err);
done:
    return rc;
}

int
ss_kserve_decode(const char *body, size_t len, int64_t header_len,
                 const ss_kserve_limits_t *lim, ss_kserve_request_t **out,
                 ss_err_t *err)
{
    ss_kserve_request_t *r = NULL;
    ss__kspan_t *spans = NULL;
    int n_inputs = 0, max_inputs;
    ctx_t c = { 0 };
    json_error_t je;
    json_t *root = NULL;
    char *env = NULL;
    size_t envn = 0;
    int rc;

    *out = NULL;
    if (header_len < -1 || (header_len >= 0 && (uint64_t)header_len > len)) {
        rc = ss_err_set(err, SS_EINVAL, "Inference-Header-Content-Length "
                        "%lld does not fit the %zu-byte body",
                        (long long)header_len, len);
        goto done;
    }
    c.body = body;
    c.len = len;
    c.binary = header_len >= 0;
    c.hlen = c.binary ? (size_t)header_len : len;
    c.max_bytes = lim && lim->max_tensor_bytes ? lim->max_tensor_bytes :
                  DEFAULT_MAX_TENSOR_BYTES;
    max_inputs = lim && lim->max_inputs > 0 ? lim->max_inputs :
                 DEFAULT_MAX_INPUTS;
    if ((spans = ss_calloc((size_t)max_inputs, sizeof(*spans))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to decode a request");
        goto done;
    }
    c.spans = spans;
    if ((rc = ss__kserve_scan(body, c.hlen, spans, max_inputs,
                              &n_inputs)) < 0) {
        if (rc == SS__KSCAN_TOO_MANY)
            rc = ss_err_set(err, SS_ETOOBIG, "more than %d inputs",
                            max_inputs);
        else
            rc = json_error(body, c.hlen, err);
        goto done;
    }
    if ((env = ss__kserve_envelope(body, c.hlen, spans, n_inputs,
                                   &envn)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to decode a request");
        goto done;
    }
    if ((root = json_loadb(env, envn, JSON_REJECT_DUPLICATES, &je)) == NULL) {
        rc = json_error(body, c.hlen, err);
        goto done;
    }
    if ((r = ss_calloc(1, sizeof(*r))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a request");
        goto done;
    }
    if ((rc = read_request(&c, root, r, err)) < 0)
        goto done;
    *out = r;
    r = NULL;
done:
    ss_kserve_request_free(r);
    json_decref(root);
    ss_free(env);
    ss_free(spans);
    return rc;
}
