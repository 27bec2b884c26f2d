/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_KSERVE_H
#define SS_SERVER_KSERVE_H

/*
 * The KServe V2 / Triton inference wire format: request decoding and
 * response encoding, JSON tensors and the binary tensor extension.
 *
 * Requests: the JSON envelope is parsed with jansson, but the numeric
 * "data" arrays (the hot spot: 265-579 us for 784 floats through a DOM)
 * are scanned by a dedicated streaming parser that writes straight into
 * the tensor buffer.  With the binary extension
 * (Inference-Header-Content-Length = N), the first N bytes are the JSON
 * header and the tensors follow back to back, in the order of the inputs
 * that carry "parameters": {"binary_data_size": bytes}.
 *
 * Responses: floats are written as the shortest text that reads back to the
 * same float32; outputs asked for with "binary_data": true (or all, with
 * "parameters": {"binary_data_output": true}) are appended raw after the
 * JSON header, whose length is returned for the
 * Inference-Header-Content-Length response header.
 *
 * THREADS: pure functions; [any].
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"

typedef struct ss_kserve_input {
    char *name;
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    void *data;                 /* owned by the request */
    size_t nbytes;
} ss_kserve_input_t;

typedef struct ss_kserve_output_req {
    char *name;
    bool binary;                /* binary_data for this output */
} ss_kserve_output_req_t;

typedef struct ss_kserve_request {
    char *id;                   /* NULL when absent */
    int n_inputs;
    ss_kserve_input_t *inputs;
    int n_outputs;              /* 0: all outputs */
    ss_kserve_output_req_t *outputs;
    bool binary_output;         /* parameters.binary_data_output */
    char *adapter;              /* parameters.adapter (LoRA), or NULL */
} ss_kserve_request_t;

/* Limits that bound what a request may allocate. */
typedef struct ss_kserve_limits {
    int max_inputs;             /* e.g. 64 */
    size_t max_tensor_bytes;    /* per input */
} ss_kserve_limits_t;

/* Decodes body.  header_len is the Inference-Header-Content-Length value,
 * or -1 when the header was absent (all JSON).  Accepts "data" flat or
 * nested (nesting must agree with "shape"), datatypes BOOL, UINT8, INT8,
 * INT32, INT64, FP32, FP64 (BYTES refused with SS_EUNSUPP).  The bare
 * tokens NaN, Infinity and -Infinity are accepted in float data, as
 * Python's json module and Triton write them.  Errors (SS_EINVAL) name the input and the problem: element
 * count not matching shape, non-numeric value, value out of range for the
 * type, binary size not matching shape, trailing bytes... */
int ss_kserve_decode(const char *body, size_t len, int64_t header_len,
                     const ss_kserve_limits_t *lim,
                     ss_kserve_request_t **out, ss_err_t *err);
void ss_kserve_request_free(ss_kserve_request_t *r);

typedef struct ss_kserve_output {
    const char *name;
    ss_dtype_t dtype;
    int ndim;
    const int64_t *dims;
    const void *data;
    bool binary;
} ss_kserve_output_t;

/* Encodes {"model_name","model_version","id"?,"outputs":[...]} (+ binary
 * tails).  *body is from malloc (caller frees); *header_len is the JSON
 * part's length, equal to *len when nothing is binary. */
int ss_kserve_encode(const char *model, const char *version, const char *id,
                     const ss_kserve_output_t *outs, int n, char **body,
                     size_t *len, size_t *header_len, ss_err_t *err);
/* As ss_kserve_encode, refusing with SS_ETOOBIG (nothing allocated) a
 * response whose size bound is over max_len (0: no limit).  The bound is
 * the one the body is allocated by: a JSON element counted at its type's
 * longest text (FP32 16 bytes, FP64 24, integers 20, BOOL 5) plus its
 * comma, binary data at its bytes.  The message names the output that
 * weighs most and what it would take. */
int ss_kserve_encode_max(const char *model, const char *version,
                         const char *id, const ss_kserve_output_t *outs,
                         int n, size_t max_len, char **body, size_t *len,
                         size_t *header_len, ss_err_t *err);

/* Writes the shortest decimal text that reads back as f (no NUL); returns
 * its length (at most 16).  NaN and infinities are written as the bare
 * tokens NaN, Infinity, -Infinity (what Python's json module reads). */
int ss_kserve_format_f32(float f, char *buf);

#endif
