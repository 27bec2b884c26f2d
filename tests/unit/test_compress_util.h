/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TEST_COMPRESS_UTIL_H
#define SS_TEST_COMPRESS_UTIL_H

/* Assertions and helpers shared by the compress test programs (each
 * program includes this once: tap.h keeps its counters per program). */

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress/internal.h"
#include "tests/tap.h"
#include "tests/unit/test_compress.h"

static ss_compress_ctl_t ctl __attribute__((unused)) = { .latency_runs = 3, .threads = 1 };

static const ss_gate_t no_gate __attribute__((unused)) = { -1, -1, -1 };

static inline int
run1(const ss_graph_t *g, const ss_method_t *m, int n,
     const ss_dataset_t *calib, const ss_dataset_t *val,
     const ss_gate_t *gate, ss_compress_result_t *res, ss_err_t *err)
{
    return ss_compress_run(g, m, n, calib, val, gate, &ctl, res, err);
}

static inline int
count_op(const ss_graph_t *g, const char *op)
{
    int i, n = 0;

    for (i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op_type, op) == 0;
    return n;
}

/* Saves v, reloads it and compares outputs with the in-memory graph. */
static inline void
check_roundtrip(const ss_graph_t *v, tc_data_t *val, const char *what)
{
    char path[256];
    ss_graph_t *back = NULL;
    ss_eval_t ev;
    ss_err_t err = { 0 };
    int rc;

    snprintf(path, sizeof(path), "/tmp/test_compress_%d_%s.onnx",
             (int)getpid(), what);
    rc = ss_graph_save_onnx(v, path, &err);
    is_int(rc, 0, "%s: saved as ONNX: %s", what, err.msg);
    if (rc == 0) {
        rc = ss_graph_load_onnx(path, &back, &err);
        is_int(rc, 0, "%s: the saved file loads: %s", what, err.msg);
        unlink(path);
    }
    if (back != NULL) {
        rc = ss_compress_evaluate(back, &val->ds, v, &ctl, &ev, &err);
        is_int(rc, 0, "%s: the reloaded model runs: %s", what, err.msg);
        ok(rc == 0 && ev.agreement == 1.0 && ev.max_relative_error <= 1e-6,
           "%s: reloaded gives the in-memory outputs (agreement %.4f, max "
           "rel err %g)", what, ev.agreement, ev.max_relative_error);
        is_int(count_op(back, "QuantizeLinear"), count_op(v, "QuantizeLinear"),
               "%s: same QDQ nodes after reload", what);
        is_int((long long)ss_graph_weight_bytes(back),
               (long long)ss_graph_weight_bytes(v),
               "%s: same weight bytes after reload (int8 stays int8)", what);
    }
    ss_graph_free(back);
}

static inline void
report(const char *what, const ss_compress_result_t *res)
{
    char *s = res->details ? json_dumps(res->details, JSON_COMPACT) : NULL;

    tap_diag("%s: acc %.4f -> %.4f, agree %.4f, rel err %.3g, bytes %zu -> "
             "%zu, b1 %.3f -> %.3f ms, b32 %.3f -> %.3f ms", what,
             res->source.accuracy, res->variant_eval.accuracy,
             res->variant_eval.agreement,
             res->variant_eval.max_relative_error, res->source.weight_bytes,
             res->variant_eval.weight_bytes, res->source.latency_ms_b1,
             res->variant_eval.latency_ms_b1, res->source.latency_ms_b32,
             res->variant_eval.latency_ms_b32);
    if (getenv("TC_VERBOSE") != NULL && s != NULL)
        tap_diag("%s", s);
    free(s);
}

static inline int64_t
weight_dim(const ss_graph_t *g, const char *node, int axis)
{
    int i;

    for (i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, node) == 0) {
            const ss_tensor_t *w = g->values[g->nodes[i].inputs[1]].constant;

            return w != NULL ? w->dims[axis] : -1;
        }
    return -1;
}

static inline ss_tensor_t *
const_in(ss_graph_t *g, const char *node, int input)
{
    int i;

    for (i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, node) == 0)
            return g->values[g->nodes[i].inputs[input]].constant;
    return NULL;
}

#endif
