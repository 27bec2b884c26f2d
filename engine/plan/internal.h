/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_INT_H
#define SS_ENGINE_PLAN_INT_H

/*
 * The compiled plan's internals, shared by plan.c (compile), plan_fuse.c
 * (fusion onto oneDNN) and exec.c (run).
 *
 * Plan values mirror the graph's values one to one (same ids), with the
 * concrete shape of this compile and where the bytes live at run time.
 * Steps are what runs: a reference kernel for one node, a oneDNN primitive
 * for one or several fused nodes, or a copy into a graph output.
 *
 * THREADS: immutable after ss_plan_new returns.
 */

#include "engine/dnnl/dnnl.h"
#include "engine/ir/ir.h"

/* Default budget of one plan: any one value, and the folded constants
 * plus arena plus oneDNN scratch together, in bytes.  The environment
 * variable SS_ENGINE_MAX_PLAN_BYTES (a number, optionally suffixed K, M
 * or G) overrides it. */
#define SS_PLAN_MAX_BYTES ((size_t)4 << 30)

typedef enum {
    SS_PV_UNSET = 0,    /* not computed (dead, or inside a fusion) */
    SS_PV_INPUT,        /* the caller's input buffer */
    SS_PV_CONST,        /* data known at compile time */
    SS_PV_ARENA,        /* at offset in the executor's arena */
    SS_PV_OUTPUT        /* the caller's output buffer */
} ss_pv_kind_t;

typedef struct ss_pval {
    ss_tensor_t t;      /* dtype, ndim, dims; data for SS_PV_CONST */
    ss_pv_kind_t kind;
    int index;          /* graph input / output index */
    int alias;          /* shares the bytes of this value (a view), or -1 */
    int owned;          /* t.data belongs to the plan (folded constant) */
    size_t bytes;
    size_t offset;      /* SS_PV_ARENA */
    int n_uses;         /* steps that read it, after fusion */
    ss_dnn_layout_t layout; /* how its producer writes it (plan_layout.c) */
} ss_pval_t;

typedef enum {
    SS_STEP_REF = 1,    /* node's reference kernel */
    SS_STEP_DNN,        /* a oneDNN primitive */
    SS_STEP_COPY        /* in[0] → out[0], same bytes */
} ss_step_kind_t;

#define SS_STEP_MAX_DNN_IN (2 + SS_DNN_MAX_POST)

typedef struct ss_step {
    ss_step_kind_t kind;
    const ss_node_t *node;  /* REF: the node; DNN: the first fused node */
    const ss_op_t *op;
    int n_in, n_out;
    int *in, *out;          /* plan value ids, -1 when omitted */
    ss_dnn_prim_t *prim;    /* DNN */
    char what[48];          /* DNN: "Conv+Relu+Add", for logs */
} ss_step_t;

struct ss_plan {
    const ss_graph_t *g;
    int n_vals;
    ss_pval_t *vals;
    int n_steps, cap_steps;
    ss_step_t *steps;
    ss_io_info_t *out_info;
    size_t arena_bytes;
    size_t scratch_bytes;
    size_t max_bytes;       /* the budget (SS_PLAN_MAX_BYTES) */
    size_t const_bytes;     /* constants folded so far */
    int max_io;             /* most inputs or outputs of one step */
    int fuse;               /* fusion and oneDNN enabled */
    int n_fused;            /* nodes folded into oneDNN steps */
};

/* The value whose bytes v shares (v itself when it is no view). */
static inline int
ss__plan_root(const ss_plan_t *p, int v)
{
    while (p->vals[v].alias >= 0)
        v = p->vals[v].alias;
    return v;
}

/* Appends a step; takes the in/out arrays (ss_malloc'ed). */
int ss__plan_add_step(ss_plan_t *p, const ss_step_t *s, ss_err_t *err);
void ss__plan_step_clear(ss_step_t *s);

/* Replaces runs of reference steps by fused oneDNN steps where it can.
 * Leaves the plan valid (unchanged steps) on SS_EUNSUPP-type refusals;
 * fails only on errors that must stop the compile. */
int ss__plan_fuse(ss_plan_t *p, ss_err_t *err);

/* Before fusion: QDQ patterns onto int8 primitives, and bf16 compute when
 * the graph asks for it (plan_qdq.c).  May append plan values beyond the
 * graph's (bf16 copies of activations). */
int ss__plan_lowp(ss_plan_t *p, ss_err_t *err);

/* After fusion: puts a reorder before every read of a value in a layout
 * other than the one its producer wrote (plan_layout.c). */
int ss__plan_layout(ss_plan_t *p, ss_err_t *err);

#endif
