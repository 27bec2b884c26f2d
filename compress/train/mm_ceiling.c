/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mm-ceiling: how much bf16 can speed up an MLP's training products at
 * all, on this CPU (bench/train.py --ceiling; docs/training.md).
 *
 *   mm-ceiling [BATCH [ROUNDS [D0,D1,...]]]
 *
 * For an MLP of widths D0-D1-...-Dn (default 64,128,64,10: the MLP
 * fixture) at BATCH rows (64), it times the oneDNN matmuls a training
 * step of it runs, as the trainer makes them (ss_dnn_matmul_train_new:
 * Gemm transB=1, so the weight is read transposed by strides): per layer
 * the forward X W^T, the backward by data dY W (not for the first layer:
 * the input needs no gradient) and by weights dY^T X, in f32 and in bf16
 * (bf16 operands, f32 sums and output).  One thread, thread CPU time;
 * ROUNDS (100) rounds of 20 repetitions, alternating f32 and bf16 round
 * by round, medians of the rounds.  Prints the products' time in both
 * and their ratio: the ceiling of a bf16 step whose other work (the
 * operands' conversions, element-wise ops, the update) cost nothing and
 * were the same in f32 (SS_TRAIN_PROFILE=cpu shows what they cost).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "engine/dnnl/dnnl.h"

#define MAXL 8
#define REPS 20

typedef struct job {
    ss_dnn_prim_t *p;
    const void *in[2];
    void *out;
} job_t;

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* A product of A (dims a, strides sa or dense) and B. */
static int
mm(ss_dtype_t dt, const int64_t *a, const int64_t *sa, const int64_t *bd,
   const int64_t *sb, ss_dnn_prim_t **out, ss_err_t *err)
{
    ss_dnn_matmul_desc_t d;

    memset(&d, 0, sizeof(d));
    d.dtype = dt;
    d.ndim = 2;
    memcpy(d.a_dims, a, 2 * sizeof(int64_t));
    memcpy(d.b_dims, bd, 2 * sizeof(int64_t));
    d.a_strides = sa;
    d.b_strides = sb;
    return ss_dnn_matmul_train_new(&d, out, err);
}

static void
set(job_t *j, const void *a, const void *b, void *out)
{
    j->in[0] = a;
    j->in[1] = b;
    j->out = out;
}

static double
run(job_t *j, int n, ss_dnn_stream_t *s, void *scr, ss_err_t *err)
{
    int64_t c0 = ss_clock_ns(CLOCK_THREAD_CPUTIME_ID);

    for (int r = 0; r < REPS; r++)
        for (int k = 0; k < n; k++)
            if (ss_dnn_run(j[k].p, s, j[k].in, j[k].out, scr, err) < 0)
                return -1;
    return (double)(ss_clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / 1e3 / REPS;
}

int
main(int argc, char **argv)
{
    int64_t M = argc > 1 ? atoll(argv[1]) : 64, D[MAXL + 1];
    int rounds = argc > 2 ? atoi(argv[2]) : 100, nl = 0, rc = 1;
    const char *ds = argc > 3 ? argv[3] : "64,128,64,10";
    job_t jf[3 * MAXL], jb[3 * MAXL];
    int nf = 0, nb = 0, nbuf = 0;
    void *buf[3 * MAXL];
    double *tf, *tb;
    ss_dnn_stream_t *s = NULL;
    ss_err_t err;
    void *scr = NULL;
    const char *isa;

    memset(&err, 0, sizeof(err));
    for (const char *p = ds; *p && nl <= MAXL;) {
        D[nl++] = strtoll(p, (char **)&p, 10);
        if (*p == ',')
            p++;
    }
    nl--;
    tf = calloc((size_t)rounds, sizeof(double));
    tb = calloc((size_t)rounds, sizeof(double));
    scr = aligned_alloc(64, (size_t)64 << 20);
    if (nl < 1 || !tf || !tb || !scr ||
        ss_dnn_stream_new(1, &s, &err) < 0)
        goto fail;
    for (int l = 0; l < nl; l++) {
        int64_t K = D[l], N = D[l + 1];
        int64_t x[2] = { M, K }, wt[2] = { K, N }, swt[2] = { 1, K };
        int64_t dy[2] = { M, N }, w[2] = { N, K };
        int64_t dyt[2] = { N, M }, sdyt[2] = { 1, N };
        /* operands: generous buffers, values irrelevant to the timing */
        size_t big = (size_t)(M + N + K) * (size_t)(M + N + K) * 4;
        void *A = buf[nbuf++] = calloc(1, big);
        void *B = buf[nbuf++] = calloc(1, big);
        void *C = buf[nbuf++] = calloc(1, big);

        if (!A || !B || !C)
            goto fail;
        for (int p = 0; p < 2; p++) {
            ss_dtype_t dt = p ? SS_DTYPE_BF16 : SS_DTYPE_F32;
            job_t *j = p ? jb : jf;
            int *n = p ? &nb : &nf;

            if (mm(dt, x, NULL, wt, swt, &j[*n].p, &err) < 0)
                goto fail;
            set(&j[(*n)++], A, B, C);
            if (l > 0) {
                if (mm(dt, dy, NULL, w, NULL, &j[*n].p, &err) < 0)
                    goto fail;
                set(&j[(*n)++], A, B, C);
            }
            if (mm(dt, dyt, sdyt, x, NULL, &j[*n].p, &err) < 0)
                goto fail;
            set(&j[(*n)++], A, B, C);
        }
        if (l == 0)
            printf("impl f32 %s, bf16 %s\n", ss_dnn_prim_impl(jf[0].p),
                   ss_dnn_prim_impl(jb[0].p));
    }
    for (int r = 0; r < rounds; r++) {
        if ((tf[r] = run(jf, nf, s, scr, &err)) < 0 ||
            (tb[r] = run(jb, nb, s, scr, &err)) < 0)
            goto fail;
    }
    qsort(tf, (size_t)rounds, sizeof(double), cmp);
    qsort(tb, (size_t)rounds, sizeof(double), cmp);
    ss_dnn_bf16_native(&isa);
    printf("{\"widths\": \"%s\", \"batch\": %lld, \"isa\": \"%s\", "
           "\"products\": %d, \"f32_us\": %.2f, \"bf16_us\": %.2f, "
           "\"ceiling\": %.3f}\n", ds, (long long)M, isa, nf,
           tf[rounds / 2], tb[rounds / 2], tf[rounds / 2] / tb[rounds / 2]);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "mm-ceiling: %s\n", err.msg[0] ? err.msg : "no memory");
done:
    for (int k = 0; k < nf; k++)
        ss_dnn_prim_free(jf[k].p);
    for (int k = 0; k < nb; k++)
        ss_dnn_prim_free(jb[k].p);
    for (int k = 0; k < nbuf; k++)
        free(buf[k]);
    ss_dnn_stream_free(s);
    free(scr);
    free(tf);
    free(tb);
    return rc;
}
