/* SPDX-License-Identifier: Apache-2.0 */
/*
 * train-bench: training throughput of the trainer on one model, for
 * bench/train.py (which runs PyTorch eager on the same data in the same
 * run and prints the ratio).
 *
 *   train-bench MODEL.onnx DATA.npz [BATCH [STEPS [THREADS [OPT [PREC
 *               [LAYOUT [KERNELS]]]]]]]
 *
 * DATA.npz holds the model's inputs (rows first) and int64 "labels".
 * Steps take consecutive batches, cycling.  Prints one JSON line: the
 * median milliseconds of a step (forward, loss, backward, AdamW or SGD
 * update) after 5 warm-up steps, samples per second from it, the median
 * CPU milliseconds of the process per step (on a loaded machine the
 * steadier figure with one thread: time spent preempted is not in it;
 * with more threads it includes OpenMP's spinning), and the first and
 * last loss.  PREC "bf16" trains in mixed precision; the line
 * then says how many products ran in bf16, how many stayed f32, and how
 * many activations were kept in bf16; "bf16-f32acts" is mixed precision
 * with f32 activations (opts.f32_acts: the trainer before bf16
 * activations), for comparison.
 * LAYOUT "nchw" keeps every activation NCHW (opts.nchw: the trainer
 * before blocked convolutions), for comparison; "blocked" (default) is
 * how the trainer runs.  KERNELS (opts.nn) "c" runs BatchNorm, Relu and
 * pooling on the trainer's portable-C kernels, "dnn" on oneDNN's, "auto"
 * (default) oneDNN's in bf16 and C in f32.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "compress/train/train.h"
#include "engine/io/npy.h"

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    ss_graph_t *g = NULL;
    ss_npz_t *z = NULL;
    ss_train_t *t = NULL;
    ss_train_opts_t o;
    ss_err_t err;
    const ss_tensor_t *x, *y;
    ss_tensor_t xb, yb;
    int64_t batch = argc > 3 ? atoll(argv[3]) : 64;
    int steps = argc > 4 ? atoi(argv[4]) : 50, rc = 1, nbf, nf32;
    double *ms = NULL, *cpu = NULL, l0 = 0, l = 0;
    size_t xrow;
    char d[256];

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.onnx DATA.npz [BATCH [STEPS "
                "[THREADS [adamw|sgd [f32|bf16|bf16-f32acts [blocked|nchw "
                "[auto|dnn|c]]]]]]]\n",
                argv[0]);
        return 2;
    }
    ss_train_opts_default(&o);
    o.threads = argc > 5 ? atoi(argv[5]) : 2;
    if (argc > 6 && ss_train_opts_set_name(&o, "optimizer", argv[6],
                                           &err) < 0)
        goto fail;
    o.bf16 = argc > 7 && strncmp(argv[7], "bf16", 4) == 0;
    o.f32_acts = argc > 7 && strcmp(argv[7], "bf16-f32acts") == 0;
    o.nchw = argc > 8 && strcmp(argv[8], "nchw") == 0;
    if (argc > 9)
        o.nn = strcmp(argv[9], "c") == 0     ? SS_TRAIN_NN_C
             : strcmp(argv[9], "dnn") == 0   ? SS_TRAIN_NN_DNN
                                             : SS_TRAIN_NN_AUTO;
    if (ss_graph_load_onnx(argv[1], &g, &err) < 0 ||
        ss_npz_read(argv[2], (size_t)1 << 32, &z, &err) < 0)
        goto fail;
    x = ss_npz_tensor(z, 0);
    if (ss_npz_find(z, "labels") < 0 || x->dims[0] < batch) {
        ss_err_set(&err, SS_EINVAL, "%s: needs inputs and labels of at "
                   "least %lld rows", argv[2], (long long)batch);
        goto fail;
    }
    y = ss_npz_tensor(z, ss_npz_find(z, "labels"));
    xb = *x;
    yb = *y;
    xb.dims[0] = yb.dims[0] = batch;
    xrow = (size_t)(ss_tensor_numel(x) / x->dims[0]) *
           ss_dtype_size(x->dtype);
    if (ss_train_new(g, &xb, &o, &t, &err) < 0)
        goto fail;
    if ((ms = calloc((size_t)steps + 1, sizeof(double))) == NULL ||
        (cpu = calloc((size_t)steps + 1, sizeof(double))) == NULL)
        goto fail;
    for (int s = -5; s < steps; s++) {
        int64_t nb = x->dims[0] / batch, r0 = ((s + 5) % nb) * batch;
        ss_train_batch_t b = { &xb, &yb, NULL };
        double t0, c0;

        xb.data = (char *)x->data + (size_t)r0 * xrow;
        yb.data = (int64_t *)y->data + r0;
        t0 = (double)ss_clock_ns(CLOCK_MONOTONIC) / 1e6;
        c0 = (double)ss_clock_ns(CLOCK_PROCESS_CPUTIME_ID) / 1e6;
        if (ss_train_step(t, &b, &l, &err) < 0)
            goto fail;
        if (s >= 0) {
            ms[s] = (double)ss_clock_ns(CLOCK_MONOTONIC) / 1e6 - t0;
            cpu[s] = (double)ss_clock_ns(CLOCK_PROCESS_CPUTIME_ID) / 1e6 - c0;
        }
        if (s == -5)
            l0 = l;
    }
    qsort(ms, (size_t)steps, sizeof(double), cmp);
    qsort(cpu, (size_t)steps, sizeof(double), cmp);
    nbf = ss_train_precision(t, &nf32);
    printf("{\"ms_per_step\": %.4f, \"cpu_ms_per_step\": %.4f, "
           "\"samples_per_s\": %.1f, \"batch\": "
           "%lld, \"threads\": %d, \"loss_first\": %.6f, \"loss_last\": "
           "%.6f, \"precision\": \"%s\", \"layout\": \"%s\", \"nn\": \"%s\", "
           "\"bf16_products\": %d, \"f32_fallbacks\": %d, "
           "\"bf16_acts\": %d, \"graph\": \"%s\"}\n", ms[steps / 2],
           cpu[steps / 2],
           (double)batch * 1e3 / ms[steps / 2], (long long)batch, o.threads,
           l0, l, !o.bf16 ? "f32" : o.f32_acts ? "bf16-f32acts" : "bf16",
           o.nchw ? "nchw" : "blocked",
           o.nn == SS_TRAIN_NN_C ? "c" : o.nn == SS_TRAIN_NN_DNN ? "dnn"
                                                                 : "auto",
           nbf, nf32, ss_train_bf16_acts(t),
           ss_train_describe(t, d, sizeof(d)));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "train-bench: %s\n", err.msg);
done:
    free(ms);
    free(cpu);
    ss_train_free(t);
    ss_npz_free(z);
    ss_graph_free(g);
    return rc;
}
