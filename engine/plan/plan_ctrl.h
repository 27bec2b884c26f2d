/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_CTRL_H
#define SS_ENGINE_PLAN_CTRL_H

/*
 * Control-flow steps (If, Loop: plan_ctrl.c; Scan: plan_ctrl_scan.c):
 * the step's state and the helpers both files use.  plan_ctrl.c's top
 * comment is the design.
 */

#include "engine/plan/internal.h"

typedef struct view {
    ss_graph_t g;           /* nodes, outputs borrowed from the subgraph */
} view_t;

struct ss__ctrl {
    int loop;               /* 0: If, 1: Loop, 2: Scan */
    view_t *view[2];        /* If: then, else; Loop: body in [0] */
    ss_plan_t **plans;      /* If: [then, else]; Loop: the body's */
    int n_plans;
    /* Loop */
    int n_carried, n_scan;
    int64_t trips;          /* iterations known at compile time, or -1 */
    int *sched;             /* plan of iteration i (the last repeats) */
    int n_sched;
    size_t carried_bytes;   /* both buffers of every carried value */
    int max_in;             /* inputs of the largest view */
    const ss_node_t *node;
    size_t *carried_off;    /* carried value j: buffers at off, off + max */
    size_t *carried_max;
    size_t *scan_bytes;     /* scan output k: one iteration's */
    /* Scan (plan_ctrl_scan.c): inputs from in_first (after version 8's
     * sequence_lens) are N states then n_scan_in scan inputs; `batch`
     * sequences (version 8's batch axis, else 1) of `steps` iterations */
    int n_scan_in, in_first;
    int64_t batch, steps;
    size_t *scan_in_bytes;  /* scan input j: one iteration's */
    unsigned char *in_rev;  /* scan input j / output k runs backwards */
    unsigned char *out_rev;
};

/* A condition's value: any bit set in its one element. */
int ss__ctrl_truth(const ss_tensor_t *t);
/* SS_EUNSUPP naming node n, its op version and the opset, and why. */
int ss__ctrl_refuse(const ss_plan_t *p, const ss_node_t *n, ss_err_t *err,
                    const char *why);
/* sg as a plan's graph: its formal inputs, then the outer values it
 * reads that p does not hold as constants. */
int ss__ctrl_view(const ss_plan_t *p, const ss_graph_t *sg, view_t **out,
                  ss_err_t *err);
/* Shapes for v's inputs: the n_first formal ones from first, the outer
 * ones as p has them. */
int ss__ctrl_view_shapes(const ss_plan_t *p, view_t *v,
                         const ss_tensor_t *first, int n_first,
                         ss_tensor_t *shapes, const ss_node_t *n,
                         ss_err_t *err);
/* Appends plan pl to c (taken, on failure too). */
int ss__ctrl_add_plan(struct ss__ctrl *c, ss_plan_t *pl, ss_err_t *err);
int ss__ctrl_same_shape(const ss_io_info_t *a, const ss_io_info_t *b);
/* Appends the CTRL step of node n (its inputs, then the outer values of
 * c's views past their n_formal formal inputs); takes c. */
int ss__ctrl_step(ss_plan_t *p, const ss_node_t *n, struct ss__ctrl *c,
                  int n_formal, ss_err_t *err);
/* Node n's output v gets io's shape, with `lead` rows first when >= 0. */
int ss__ctrl_set_out(ss_plan_t *p, const ss_node_t *n, int v,
                     const ss_io_info_t *io, int64_t lead, ss_err_t *err);
/* Every output of n is named (omitted ones are not supported). */
int ss__ctrl_named(const ss_node_t *n);
/* A run's buffer: in and out tensor tables, the carried values. */
int ss__ctrl_buf(const struct ss__ctrl *c, ss_workbuf_t *buf,
                 ss_tensor_t **ins, ss_tensor_t **outs, char **carried,
                 ss_err_t *err);

/* Node n's name, or its op when it has none (messages). */
const char *ss__ctrl_label(const ss_node_t *n);

/* Loop (plan_ctrl_loop.c). */
int ss__ctrl_loop(ss_plan_t *p, const ss_node_t *n, ss_err_t *err);
int ss__ctrl_run_loop(const struct ss__ctrl *c, ss_tensor_t *tab,
                      ss_exec_ctx_t *sub, ss_tensor_t *ins,
                      ss_tensor_t *outs, char *carried, ss_err_t *err);

/* Scan (plan_ctrl_scan.c). */
int ss__ctrl_scan(ss_plan_t *p, const ss_node_t *n, ss_err_t *err);
int ss__ctrl_run_scan(const struct ss__ctrl *c, ss_tensor_t *tab,
                      ss_exec_ctx_t *sub, ss_tensor_t *ins,
                      ss_tensor_t *outs, char *carried, ss_err_t *err);

#endif
