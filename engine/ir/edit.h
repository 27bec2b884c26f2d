/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_EDIT_H
#define SS_ENGINE_EDIT_H

/*
 * Building, changing and saving graphs: what compress/ needs to turn a
 * served model into a variant, and tests to make models in C.
 *
 * A graph being edited is a private copy (ss_graph_clone); edits append
 * values and nodes, replace constants, and mark nodes dead; then
 * ss_graph_finalize() restores the invariants every graph has after import
 * (topological node order, producers, unused values and dead nodes
 * dropped, io infos and weight bytes recomputed, every op known) so the
 * result can be planned and run like a loaded model.  ss_graph_save_onnx()
 * writes standard ONNX (opset of the source, or raised to 13 when QDQ ops
 * with per-axis scales need it), atomically.
 *
 * Metadata: key/value strings carried in ONNX's metadata_props, e.g.
 * "slimserve.precision" = "bf16" to run an f32 file in bf16 (see
 * ss_graph_precision()), "slimserve.bf16_nodes" to run only some of its
 * layers in bf16 (ss_graph_node_bf16()).
 *
 * THREADS: a graph being edited belongs to one thread; a finalized graph is
 * immutable again.
 */

#include "engine/engine.h"
#include "engine/ir/ir.h"

/* A deep copy of g (values, constants, nodes, attributes, metadata). */
int ss_graph_clone(const ss_graph_t *g, ss_graph_t **out, ss_err_t *err);

/* Adds a value named name (must be unique; NULL picks a fresh unique name)
 * and returns its id.  constant, when not NULL, is taken (the graph owns
 * it and its data from now on, also on failure). */
int ss_graph_add_value(ss_graph_t *g, const char *name,
                       ss_tensor_t *constant, ss_err_t *err);

/* Adds a node reading and writing value ids (-1 for an omitted optional
 * input); attrs are copied.  Returns the node index.  Order does not
 * matter until ss_graph_finalize(). */
int ss_graph_add_node(ss_graph_t *g, const char *op_type, const char *name,
                      int n_in, const int *in, int n_out, const int *out,
                      int n_attrs, const ss_attr_t *attrs, ss_err_t *err);

/* Replaces (or sets) value id's constant; t is taken. */
int ss_graph_set_constant(ss_graph_t *g, int id, ss_tensor_t *t,
                          ss_err_t *err);

/* Marks node idx dead; finalize drops it. */
void ss_graph_kill_node(ss_graph_t *g, int idx);

/* Rewires every reader of value `from` (nodes and graph outputs) to read
 * `to` instead. */
void ss_graph_replace_uses(ss_graph_t *g, int from, int to);

/* Makes value id an extra graph output (for calibration: observe an
 * intermediate tensor).  Returns its output index. */
int ss_graph_add_output(ss_graph_t *g, int id, ss_err_t *err);

/* Makes graph input `name` a constant holding a copy of value (same
 * dtype and rank as declared): plans compiled from g are specialised to
 * it, and the input is gone (bind.c). */
int ss_graph_bind_input(ss_graph_t *g, const char *name,
                        const ss_tensor_t *value, ss_err_t *err);
/* Looks a value up by name; -1 when absent. */
int ss_graph_find_value(const ss_graph_t *g, const char *name);

/* Restores the graph invariants; see above. */
int ss_graph_finalize(ss_graph_t *g, ss_err_t *err);

/* Metadata (copied). */
int ss_graph_set_meta(ss_graph_t *g, const char *key, const char *value,
                      ss_err_t *err);
const char *ss_graph_meta(const ss_graph_t *g, const char *key);

/* SS_DTYPE_BF16 when the graph asks to run in bf16, else SS_DTYPE_F32. */
ss_dtype_t ss_graph_precision(const ss_graph_t *g);

/*
 * Per-layer bf16: metadata "slimserve.bf16_nodes" lists node names joined
 * by ',' (e.g. "/fc1/Gemm,/conv2/Conv"); the plan runs those Linear/Conv
 * nodes in bf16 and every other node in f32 (engine/plan/plan_bf16.c).
 * "slimserve.precision" = "bf16" still means every node.  A listed name
 * that matches no node is ignored, with a warning when the graph is
 * planned: a variant keeps loading, in f32 for that layer, after an edit
 * renamed it.  Names are matched exactly (no trimming); empty entries
 * are skipped.
 */
#define SS_GRAPH_BF16_NODES "slimserve.bf16_nodes"

/* Sets the list to names[0..n-1] (n == 0: an empty list, no node).  A
 * name that is empty or contains ',' cannot be listed: SS_EINVAL. */
int ss_graph_set_bf16_nodes(ss_graph_t *g, int n, const char *const *names,
                            ss_err_t *err);
/* 1 when the node named name is to run in bf16: the whole graph is bf16,
 * or the list names it; else 0. */
int ss_graph_node_bf16(const ss_graph_t *g, const char *name);

/* Serializes g as an ONNX ModelProto. */
int ss_graph_encode_onnx(const ss_graph_t *g, void **buf, size_t *len,
                         ss_err_t *err);
/* Writes it to path atomically (temporary file, fsync, rename, fsync of the
 * folder). */
int ss_graph_save_onnx(const ss_graph_t *g, const char *path,
                       ss_err_t *err);

#endif
