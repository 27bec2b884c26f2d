/* SPDX-License-Identifier: Apache-2.0 */
/*
 * compress-table: runs every method of compress/ on the digits fixtures
 * and prints accuracy, latency at batch 1 and 32 and weight bytes of each
 * variant next to f32 (what bench/compress reports).
 *
 *   compress/compress-table [SRCDIR [RUNS [THREADS]]]
 *
 * SRCDIR is the source tree (default "."), RUNS the timed runs per
 * latency (default 50), THREADS the oneDNN threads (default 0: all).
 * Environment: SAVE_DIR=<dir> writes every variant there as
 * <model>_<index>.onnx; VERBOSE=1 prints each run's details; SCORE=0/1/2
 * picks structured pruning's score (L1, L2, activation: the default);
 * OPSET=17 uses the opset-17 fixtures.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/compress.h"
#include "engine/ir/edit.h"
#include "engine/io/npy.h"

typedef struct data {
    ss_npz_t *z;
    ss_tensor_t x, y;
    ss_dataset_t ds;
} data_t;

static int
load_data(const char *dir, const char *model, const char *part, data_t *d)
{
    char path[4096];
    ss_err_t err = { 0 };
    int i;

    memset(d, 0, sizeof(*d));
    snprintf(path, sizeof(path), "%s/tests/fixtures/digits/%s_%s.npz", dir,
             model, part);
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &d->z, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    for (i = 0; i < ss_npz_count(d->z); i++)
        if (ss_npz_take(d->z, i, strcmp(ss_npz_name(d->z, i), "labels") == 0
                                     ? &d->y : &d->x) < 0)
            return -1;
    d->ds.n_inputs = 1;
    d->ds.inputs = &d->x;
    d->ds.rows = d->x.dims[0];
    d->ds.labels = &d->y;
    return 0;
}

static void
free_data(data_t *d)
{
    ss_tensor_free_data(&d->x);
    ss_tensor_free_data(&d->y);
    ss_npz_free(d->z);
}

static void
row(const char *model, const char *what, const ss_eval_t *e,
    const ss_eval_t *base)
{
    printf("%-12s %-22s %8.4f %9.4f %9.4f %6.2fx %9.4f %6.2fx %9zu\n", model,
           what, e->accuracy, e->agreement, e->latency_ms_b1,
           base->latency_ms_b1 / e->latency_ms_b1, e->latency_ms_b32,
           base->latency_ms_b32 / e->latency_ms_b32, e->weight_bytes);
}

int
main(int argc, char **argv)
{
    static const char *const models[] = { "mlp", "cnn", "transformer" };
    const char *dir = argc > 1 ? argv[1] : ".";
    ss_compress_ctl_t ctl = { 0 };
    int mi, rc = 0;

    ctl.latency_runs = argc > 2 ? atoi(argv[2]) : 50;
    ctl.threads = argc > 3 ? atoi(argv[3]) : 0;
    printf("%-12s %-22s %8s %9s %9s %7s %9s %7s %9s\n", "model", "variant",
           "accuracy", "agreement", "b1 ms", "b1 x", "b32 ms", "b32 x",
           "bytes");
    for (mi = 0; mi < 3; mi++) {
        char path[4096];
        ss_graph_t *g = NULL;
        data_t cal, val;
        ss_err_t err = { 0 };
        struct {
            const char *name;
            ss_method_kind_t kind;
            double p;
        } v[] = {
            { "int8 (ptq, gate 1%)", SS_METHOD_PTQ, 0 },
            { "bf16", SS_METHOD_BF16, 0 },
            { "structured 30%", SS_METHOD_PRUNE, 0.3 },
            { "structured 50%", SS_METHOD_PRUNE, 0.5 },
            { "unstructured 50%", SS_METHOD_PRUNE, -0.5 },
            { "low-rank energy 0.9", SS_METHOD_LOWRANK, 0.9 },
            { "low-rank energy 0.5", SS_METHOD_LOWRANK, 0.5 },
        };
        ss_eval_t base;
        size_t k;

        snprintf(path, sizeof(path), "%s/tests/fixtures/%s_op%s/model.onnx",
                 dir, models[mi], getenv("OPSET") != NULL ? getenv("OPSET")
                                                          : "13");
        if (ss_graph_load_onnx(path, &g, &err) < 0
            || load_data(dir, models[mi], "calib", &cal) < 0
            || load_data(dir, models[mi], "heldout", &val) < 0) {
            fprintf(stderr, "%s: %s\n", models[mi], err.msg);
            return 1;
        }
        if (ss_compress_evaluate(g, &val.ds, NULL, &ctl, &base, &err) < 0) {
            fprintf(stderr, "%s: %s\n", models[mi], err.msg);
            return 1;
        }
        row(models[mi], "f32", &base, &base);
        for (k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
            ss_method_t m;
            ss_gate_t gate = { v[k].kind == SS_METHOD_PTQ ? 0.01 : -1, -1,
                               -1 };
            ss_compress_result_t res;

            ss_method_default(&m, v[k].kind);
            if (v[k].kind == SS_METHOD_PRUNE) {
                m.u.prune.kind = v[k].p > 0 ? SS_PRUNE_STRUCTURED
                                            : SS_PRUNE_UNSTRUCTURED;
                m.u.prune.sparsity = v[k].p > 0 ? v[k].p : -v[k].p;
                /* Calibration data is at hand: activation scores. */
                m.u.prune.score = getenv("SCORE") != NULL
                    ? (ss_score_t)atoi(getenv("SCORE")) : SS_SCORE_ACTIVATION;
            } else if (v[k].kind == SS_METHOD_LOWRANK) {
                m.u.lowrank.energy = v[k].p;
            }
            if (ss_compress_run(g, &m, 1, &cal.ds, &val.ds, &gate, &ctl,
                                &res, &err) < 0) {
                printf("%-12s %-22s failed: %s\n", models[mi], v[k].name,
                       err.msg);
                rc = 1;
            } else {
                row(models[mi], v[k].name, &res.variant_eval, &base);
                if (getenv("SAVE_DIR") != NULL) {
                    snprintf(path, sizeof(path), "%s/%s_%zu.onnx",
                             getenv("SAVE_DIR"), models[mi], k);
                    if (ss_graph_save_onnx(res.variant, path, &err) < 0)
                        fprintf(stderr, "%s\n", err.msg);
                }
                if (getenv("VERBOSE") != NULL) {
                    char *s = json_dumps(res.details, JSON_COMPACT);

                    printf("  %s\n", s);
                    free(s);
                }
            }
            ss_compress_result_clear(&res);
        }
        free_data(&cal);
        free_data(&val);
        ss_graph_free(g);
    }
    return rc;
}
