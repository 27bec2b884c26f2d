/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_IR_SITES_H
#define SS_ENGINE_IR_SITES_H

/*
 * LoRA sites of a graph (docs/lora.md): the Gemm and MatMul nodes whose
 * weight is a 2-D f32 initializer, named as PyTorch names their modules,
 * and PEFT's target_modules matching of those names.  One finder for the
 * server (server/model/adapter.c: which adapters load, where the update
 * goes) and the trainer (compress/lora.c: where the branch goes), so an
 * adapter slimserve trains is one it serves and PEFT loads.
 *
 * A site's module is its weight's name without ".weight" (what
 * torch.onnx.export writes for an nn.Linear exported as Gemm), or, when
 * the export renamed the weight ("onnx::MatMul_12", the transposed
 * [in, out] form of an nn.Linear on 3-D input), the node's name without
 * its last part ("/layers.0/attn/qkv/MatMul" is "layers.0.attn.qkv").
 *
 * THREADS: [any]; no state.
 */

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/ir/ir.h"

/* The longest module name, with its NUL (a longer one is no site). */
#define SS_SITE_NAME_MAX 128

typedef struct ss_site {
    int node;               /* index in g->nodes */
    int x, y, w;            /* value ids: input, output, weight */
    /* y, or for a MatMul whose one reader is the Add of a constant bias
     * vector of y's width, that Add's output: the update commutes with
     * the bias, and a tap there leaves the MatMul fused with its bias */
    int y_bias;
    bool w_nk;              /* W stored [out, in] (Gemm transB = 1) */
    int64_t in, out;
    char module[SS_SITE_NAME_MAX];  /* "fc1", "layers.0.attn.qkv" */
    char alt[SS_SITE_NAME_MAX];     /* the node's path name, or "" */
} ss_site_t;

/* The sites of g in node order: *out (new, ss_free; NULL when none) and
 * *n.  Gemm nodes with transA or alpha other than 1 are not sites (the
 * update would not be W's). */
int ss_sites_find(const ss_graph_t *g, ss_site_t **out, int *n,
                  ss_err_t *err);

/* PEFT's target_modules, matched against a site's module (or its alt
 * name).  pattern != NULL: target_modules was a string: "all-linear"
 * (every site), else a regular expression the whole name must match
 * (PEFT's re.fullmatch; POSIX extended syntax here: "fc[12]",
 * ".*\\.(q|v)_proj"; Python's \d is not POSIX); names ignored.
 * pattern == NULL: a list of n names; a module matches a name it is or
 * ends with after a dot ("qkv" matches "layers.0.attn.qkv").  A pattern
 * that does not compile matches nothing (ss_sites_pattern_ok says why). */
bool ss_site_targeted(const ss_site_t *s, const char *pattern,
                      const char *const *names, int n);
/* 0 when pattern compiles, else SS_EINVAL naming it. */
int ss_sites_pattern_ok(const char *pattern, ss_err_t *err);

#endif
