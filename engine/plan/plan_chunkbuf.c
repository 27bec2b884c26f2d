/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One-chunk buffers in tapped plans (engine.h, taps; exec.c runs them)
 * and between the steps of attention groups (plan_fuse_mm.c).
 *
 * A tapped GEMM that runs in row chunks with the activation after it
 * chunked alike (ss__fuse_linear, ss__fuse_tapped_eltwise) writes its
 * output, the tap sees it, the activation reads it, all per chunk: no
 * later step reads that value.  Kept whole ([2048, 1024] for the encoder
 * of docs/lora.md, 8 MB) each chunk's GEMM writes lines no earlier
 * chunk touched, so they come from memory and go back to it: the tapped
 * plan moved twice the bytes of the fused GEMM+GELU, which writes the
 * activation's output only.  Such a value holds one chunk here, the same
 * bytes for every chunk, which stay in L2 from chunk to chunk.
 *
 * Here too: which activations after a tap the run may offer to the tap's
 * fn (engine.h: activations; act_ok).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include "engine/plan/internal.h"

/* The steps reading root value v (each reading occurrence counted). */
static int
readers(const ss_plan_t *p, int v)
{
    int n = 0;

    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].n_in; k++)
            n += p->steps[s].in[k] >= 0
                 && ss__plan_root(p, p->steps[s].in[k]) == v;
    return n;
}

int
ss__plan_chunk_pair(const ss_plan_t *p, int s)
{
    const ss_step_t *st = &p->steps[s], *t;

    if (s + 1 >= p->n_steps || st->chunk <= 0 || st->n_out < 1
        || st->out[0] < 0)
        return 0;
    t = &p->steps[s + 1];
    /* a second input is a batched MatMul's B, chunked alike */
    return t->kind == SS_STEP_DNN && t->chunk == st->chunk
           && t->rows == st->rows && t->in[0] >= 0
           && (t->n_in == 1 || (t->n_in == 2 && t->in1_cols > 0))
           && ss__plan_root(p, t->in[0]) == ss__plan_root(p, st->out[0]);
}

/* Whether step e's activation may be left to the tap before it
 * (engine.h: activations): e reads, alone, the value the step before it
 * wrote, a tap, and runs with that step (chunk by chunk as a pair, or
 * both whole), so the run offers it to the tap's fn and skips e when fn
 * applied it. */
static int
act_ok(const ss_plan_t *p, int e, int paired)
{
    const ss_step_t *st = &p->steps[e], *pr;
    int v, tap = 0;

    if (e < 1 || st->kind != SS_STEP_DNN || st->n_in != 1 || st->n_out != 1
        || st->in[0] < 0 || st->out[0] < 0)
        return 0;
    pr = &p->steps[e - 1];
    v = ss__plan_root(p, st->in[0]);
    for (int k = 0; k < p->g->n_taps; k++)
        tap |= ss__plan_root(p, p->g->taps[k]) == v;
    if (!tap || pr->n_out < 1 || pr->out[0] < 0
        || ss__plan_root(p, pr->out[0]) != v || readers(p, v) != 1
        || p->vals[v].t.dtype != SS_DTYPE_F32
        || p->vals[st->out[0]].t.dtype != SS_DTYPE_F32
        || p->vals[st->out[0]].layout != SS_DNN_PLAIN
        || ss_tensor_numel(&p->vals[v].t)
           != ss_tensor_numel(&p->vals[st->out[0]].t))
        return 0;
    return paired ? 1 : st->chunk == 0 && pr->chunk == 0;
}

void
ss__plan_chunk_bufs(ss_plan_t *p)
{
    for (int s = 0; s < p->n_steps; s++) {
        int e = ss__plan_chunk_end(p, s);

        if (e == s && p->steps[s].tap_act && !act_ok(p, s, 0))
            p->steps[s].tap_act = 0;
        for (int t = s; t < e; t++) {
            const ss_step_t *st = &p->steps[t], *nx = &p->steps[t + 1];
            int v = ss__plan_root(p, st->out[0]);
            size_t es;

            /* runs with the step before it, chunk by chunk (exec.c) */
            if (nx->tap_act && !act_ok(p, t + 1, 1))
                p->steps[t + 1].tap_act = 0;
            if (st->kind != SS_STEP_DNN || st->n_out != 1 || v != st->out[0]
                || p->vals[v].kind != SS_PV_ARENA || ss__plan_has_views(p, v)
                || nx->in_cols != st->out_cols || readers(p, v) != 1)
                continue;
            es = ss_dtype_size(p->vals[v].t.dtype);
            if ((size_t)(st->chunk * st->out_cols) * es >= p->vals[v].bytes)
                continue;
            p->vals[v].bytes = (size_t)(st->chunk * st->out_cols) * es;
            p->vals[v].one_chunk = 1;
        }
        s = e;
    }
}

int
ss__plan_chunk_end(const ss_plan_t *p, int s)
{
    int e = s;

    /* A tap after a tapped GEMM reads the GEMM's whole input (its rows
     * at their places): in a tapped plan a pair's second step heads no
     * chain, so its output stays whole for the next GEMM's tap. */
    while (ss__plan_chunk_pair(p, e) && (e == s || !p->taps))
        e++;
    return e;
}
