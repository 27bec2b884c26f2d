/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plan compiler's last phases, after the passes (plan.c calls them in
 * this order): steps nobody needs are dropped and uses counted, graph
 * outputs bound to the caller's buffers, every remaining intermediate
 * given an arena offset by liveness (first fit, 64-byte aligned, within
 * the plan's budget), and the taps placed.  SS_ENGINE_DUMP's printer is
 * here too, as it reads what these phases decide.
 *
 * THREADS: [any], on a plan under construction (one thread owns it).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

#define ALIGN 64

/* Marks v needed, and what it is a view of. */
static void
mark(const ss_plan_t *p, char *need, int v)
{
    for (; v >= 0; v = p->vals[v].alias)
        need[v] = 1;
}

/* Drops steps whose outputs nothing needs; counts uses. */
int
ss__plan_prune(ss_plan_t *p, ss_err_t *err)
{
    char *need = ss_calloc((size_t)p->n_vals + 1, 1);
    int kept = 0;

    if (need == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to prune the plan");
    for (int i = 0; i < p->g->n_outputs; i++)
        mark(p, need, p->g->outputs[i]);
    for (int s = p->n_steps - 1; s >= 0; s--) {
        ss_step_t *st = &p->steps[s];
        int live = 0;

        for (int k = 0; k < st->n_out && !live; k++)
            live = st->out[k] >= 0 && need[st->out[k]];
        if (!live) {
            for (int k = 0; k < st->n_out; k++)
                if (st->out[k] >= 0)
                    p->vals[st->out[k]].kind = SS_PV_UNSET;
            ss__plan_step_clear(st);
            continue;
        }
        for (int k = 0; k < st->n_in; k++)
            if (st->in[k] >= 0)
                mark(p, need, st->in[k]);
    }
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind != 0)
            p->steps[kept++] = p->steps[s];
    p->n_steps = kept;
    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].n_in; k++)
            if (p->steps[s].in[k] >= 0)
                p->vals[ss__plan_root(p, p->steps[s].in[k])].n_uses++;
    ss_free(need);
    return 0;
}

/* Graph outputs: computed values are written straight into the caller's
 * buffers; an output that is an input, a constant, or a second name for
 * another output's bytes gets a copy step. */
int
ss__plan_bind_outputs(ss_plan_t *p, ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    int rc = 0;

    if ((p->out_info = ss_calloc((size_t)g->n_outputs + 1,
                                 sizeof(ss_io_info_t))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for plan outputs");
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i], r = ss__plan_root(p, v);
        ss_pval_t *pv = &p->vals[v];
        ss_step_t st = { 0 };

        p->out_info[i].name = g->values[v].name;
        p->out_info[i].dtype = pv->t.dtype;
        p->out_info[i].ndim = pv->t.ndim;
        memcpy(p->out_info[i].dims, pv->t.dims, sizeof(pv->t.dims));
        if (pv->t.ndim < 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: output '%s' has no "
                              "known shape", g->source, g->values[v].name);
        if (p->vals[r].kind == SS_PV_ARENA) {
            p->vals[r].kind = SS_PV_OUTPUT;
            p->vals[r].index = i;
            continue;
        }
        st.kind = SS_STEP_COPY;
        st.n_in = 1;
        st.n_out = 1;
        if ((st.in = ss__plan_dup_ids(&v, 1)) == NULL
            || (st.out = ss__plan_dup_ids(&i, 1)) == NULL) {
            ss__plan_step_clear(&st);
            return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        }
        if ((rc = ss__plan_append(p, &st, err)) < 0) {
            ss__plan_step_clear(&st);
            return rc;
        }
        p->vals[r].n_uses++;
    }
    return rc;
}

typedef struct block {
    size_t off, size;
    int last;
} block_t;

/* The live block of the residual a Linear's SUM adds (dnnl.h) when the
 * output may take its bytes: the residual is an arena value of the same
 * size read by nothing after step s, nor by the step otherwise.  The
 * GEMM then adds in place
 * instead of ss_dnn_run copying the residual into the output first
 * (ConvNeXt's block tail, plan_fuse_scale.c); -1 when not. */
static int
sum_block(const ss_plan_t *p, const ss_step_t *st, int s, int v,
          const int *last, const block_t *live, int n_live)
{
    int k, r;

    if (st->kind != SS_STEP_DNN || st->chunk > 0 || st->prim == NULL
        || (k = ss_dnn_prim_sum_input(st->prim)) < 0 || k >= st->n_in
        || (r = st->in[k]) < 0 || p->vals[r].alias >= 0
        || p->vals[r].kind != SS_PV_ARENA || last[r] != s
        || p->vals[r].bytes != p->vals[v].bytes)
        return -1;
    /* the GEMM must not read r as its source too: it would read rows it
     * has already added into */
    for (int i = 0; i < st->n_in; i++)
        if (i != k && st->in[i] >= 0 && ss__plan_root(p, st->in[i]) == r)
            return -1;
    for (int b = 0; b < n_live; b++)
        if (live[b].off == p->vals[r].offset && live[b].last == s)
            return b;
    return -1;
}

/* First-fit offsets by liveness. */
int
ss__plan_arena(ss_plan_t *p, ss_err_t *err)
{
    int *last = ss_malloc((size_t)(p->n_vals + 1) * sizeof(int));
    block_t *live = ss_malloc((size_t)(p->n_vals + 1) * sizeof(block_t));
    int n_live = 0, rc = 0;
    size_t top = 0;

    if (last == NULL || live == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to plan the arena");
        goto done;
    }
    for (int v = 0; v < p->n_vals; v++)
        last[v] = -1;
    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].n_in; k++)
            if (p->steps[s].in[k] >= 0)
                last[ss__plan_root(p, p->steps[s].in[k])] = s;
    /* A chunked step and a chunked step right after it run chunk by
     * chunk together (exec.c): the first one's inputs are still read
     * while the second writes its first chunks. */
    for (int s = 0; s + 1 < p->n_steps; s++)
        for (int k = 0; p->steps[s].chunk > 0 && p->steps[s + 1].chunk > 0
                        && k < p->steps[s].n_in; k++)
            if (p->steps[s].in[k] >= 0
                && last[ss__plan_root(p, p->steps[s].in[k])] < s + 1)
                last[ss__plan_root(p, p->steps[s].in[k])] = s + 1;
    /* Along a longer chain (attention groups, plan_fuse_mm.c) every value
     * its steps read or write is in use until the chain's last step: the
     * next group's first step runs after that one. */
    for (int s = 0; s < p->n_steps; s++) {
        int e = ss__plan_chunk_end(p, s);

        for (int t = s; e > s + 1 && t <= e; t++)
            for (int k = 0; k < p->steps[t].n_in + p->steps[t].n_out; k++) {
                int v = k < p->steps[t].n_in ? p->steps[t].in[k]
                        : p->steps[t].out[k - p->steps[t].n_in];

                if (v >= 0 && last[ss__plan_root(p, v)] < e)
                    last[ss__plan_root(p, v)] = e;
            }
        s = e;
    }
    /* A tapped value's bytes stay until the taps due after its last
     * reader have run (engine.h): to the first step from then on that
     * writes a tapped value.  A caller reads a MatMul's input at the tap
     * of the bias Add after it: the same step when they fuse, the next
     * in a plan without fusion. */
    for (int k = 0; p->taps && k < p->g->n_taps; k++) {
        int r = ss__plan_root(p, p->g->taps[k]), ext = -1;

        for (int s = last[r] < 0 ? 0 : last[r]; s < p->n_steps && ext < 0;
             s++)
            for (int o = 0; o < p->steps[s].n_out && ext < 0; o++)
                for (int t = 0; t < p->g->n_taps && ext < 0; t++)
                    if (p->steps[s].out[o] >= 0
                        && p->steps[s].kind != SS_STEP_COPY
                        && ss__plan_root(p, p->steps[s].out[o])
                               == ss__plan_root(p, p->g->taps[t]))
                        ext = s;
        if (ext > last[r])
            last[r] = ext;
    }
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        for (int k = 0; k < st->n_out && st->kind != SS_STEP_COPY; k++) {
            int v = st->out[k];
            size_t size, off = 0;
            int at = 0;

            if (v < 0 || p->vals[v].kind != SS_PV_ARENA
                || p->vals[v].alias >= 0)
                continue;
            if (k == 0 && (at = sum_block(p, st, s, v, last, live,
                                          n_live)) >= 0) {
                p->vals[v].offset = live[at].off;
                if (last[v] > live[at].last)
                    live[at].last = last[v];
                continue;
            }
            size = (p->vals[v].bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
            if (size == 0)
                size = ALIGN;
            /* live is sorted by offset: take the first gap that fits */
            for (at = 0; at < n_live; at++) {
                if (live[at].off >= off + size)
                    break;
                if (live[at].off + live[at].size > off)
                    off = live[at].off + live[at].size;
            }
            memmove(&live[at + 1], &live[at],
                    (size_t)(n_live - at) * sizeof(block_t));
            live[at] = (block_t){ off, size, last[v] < s ? s : last[v] };
            n_live++;
            p->vals[v].offset = off;
            if (off + size > top)
                top = off + size;
            if (top > p->max_bytes || p->scratch_bytes > p->max_bytes
                || top + p->const_bytes + p->scratch_bytes > p->max_bytes) {
                rc = ss_err_set(err, SS_ETOOBIG, "%s: node '%s': "
                                "intermediates and constants need more than "
                                "the plan's %zu-byte budget", p->g->source,
                                st->node != NULL ? ss__plan_label(st->node) : "?",
                                p->max_bytes);
                goto done;
            }
        }
        for (int b = 0; b < n_live;) {
            if (live[b].last <= s) {
                memmove(&live[b], &live[b + 1],
                        (size_t)(n_live - b - 1) * sizeof(block_t));
                n_live--;
            } else {
                b++;
            }
        }
    }
    p->arena_bytes = top;
done:
    ss_free(last);
    ss_free(live);
    return rc;
}

/* Where each tap (engine.h) is called: after the step writing its bytes
 * (the root's, for a view), before the first step for a graph input.  A
 * tapped value must be plain f32-or-other dense data the caller can
 * index: one a pass left in a blocked layout fails the compile. */
int
ss__plan_taps(ss_plan_t *p, ss_err_t *err)
{
    const ss_graph_t *g = p->g;

    if (!p->taps)
        return 0;
    if ((p->tap_after = ss_malloc((size_t)g->n_taps * sizeof(int))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for taps");
    for (int k = 0; k < g->n_taps; k++) {
        int r = ss__plan_root(p, g->taps[k]);

        p->tap_after[k] = p->n_steps;
        if (p->vals[r].kind == SS_PV_INPUT)
            p->tap_after[k] = -1;
        for (int s = 0; s < p->n_steps && p->tap_after[k] == p->n_steps;
             s++)
            for (int o = 0; o < p->steps[s].n_out; o++)
                if (p->steps[s].kind != SS_STEP_COPY
                    && p->steps[s].out[o] >= 0
                    && ss__plan_root(p, p->steps[s].out[o]) == r)
                    p->tap_after[k] = s;
        if (p->tap_after[k] < p->n_steps && p->vals[r].layout != SS_DNN_PLAIN)
            return ss_err_set(err, SS_EUNSUPP, "%s: tapped value '%s' is "
                              "not stored row-major", g->source,
                              g->values[g->taps[k]].name);
    }
    return 0;
}

/* SS_ENGINE_DUMP=1: the compiled steps on stderr, for humans. */
void
ss__plan_dump(const ss_plan_t *p)
{
    char buf[96];

    fprintf(stderr, "plan for %s: %d steps, %d nodes fused, arena %zu "
            "bytes, scratch %zu\n", p->g->source, p->n_steps, p->n_fused,
            p->arena_bytes, p->scratch_bytes);
    if (p->one_thread)
        fprintf(stderr, "  compiled and run on one thread\n");
    if (p->slice != NULL && p->slice_prefix)
        fprintf(stderr, "  the plans above run first, in batch slices of "
                "%lld rows, as far as '%s'; then the steps below\n",
                (long long)p->slice_rows, p->g->values[p->slice_cut].name);
    else if (p->slice != NULL && p->slice_par > 1)
        fprintf(stderr, "  runs as %d batch slices of %lld rows side by "
                "side, one thread each (the plans above)\n", p->slice_par,
                (long long)p->slice_rows);
    else if (p->slice != NULL)
        fprintf(stderr, "  runs in batch slices of %lld rows (the plans "
                "above)\n", (long long)p->slice_rows);
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];
        int v = st->kind == SS_STEP_COPY ? st->in[0] : st->out[0];

        fprintf(stderr, "  %3d %-4s %-32s %-24s %s\n", s,
                st->kind == SS_STEP_REF ? "ref" : st->kind == SS_STEP_DNN
                ? "dnn" : st->kind == SS_STEP_MOE ? "moe"
                : st->kind == SS_STEP_CTRL ? "ctrl" : "copy",
                st->kind == SS_STEP_DNN || st->kind == SS_STEP_MOE ? st->what
                : st->node ? st->node->op_type : "",
                st->node ? st->node->name : "",
                v >= 0 ? ss__tensor_str(&p->vals[v].t, buf, sizeof(buf)) : "");
        if (st->kind == SS_STEP_DNN)
            fprintf(stderr, "       impl %s\n", ss_dnn_prim_impl(st->prim));
        if (st->tap_act)
            fprintf(stderr, "       offered to the tap before it\n");
        if (st->kind == SS_STEP_DNN && ss_dnn_prim_sum_input(st->prim) >= 0
            && v >= 0) {
            int r = st->in[ss_dnn_prim_sum_input(st->prim)];

            fprintf(stderr, "       adds its residual %s\n",
                    p->vals[r].kind == SS_PV_ARENA
                    && p->vals[v].kind == SS_PV_ARENA
                    && p->vals[r].offset == p->vals[v].offset
                    ? "in place" : "copied first");
        }
        if (st->chunk > 0)
            fprintf(stderr, "       in chunks of %lld of %lld rows%s\n",
                    (long long)st->chunk, (long long)st->rows,
                    v >= 0 && p->vals[ss__plan_root(p, v)].one_chunk
                    ? ", into one chunk's buffer" : "");
    }
}
