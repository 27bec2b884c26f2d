/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_ONNX_INT_H
#define SS_ENGINE_ONNX_INT_H

/*
 * Shared between the ONNX importer's files (onnx.c, onnx_ops.c,
 * onnx_tensor.c, onnx_strip.c).
 *
 * THREADS: [any]; an import context belongs to one load call.
 */

#include "engine/ir/ir.h"
#include "engine/ir/onnx.pb-c.h"

/* Everything a model's constants may hold together. */
#define SS_MODEL_MAX_BYTES ((size_t)16 << 30)

/* Where an initializer's raw_data lies in the source (onnx_strip.c). */
typedef struct ss__onnx_raw {
    size_t off, len;
    int set;             /* 0: it has no raw_data */
    int realigned;       /* 1: read it at side_off in cx->side instead */
    size_t side_off;
} ss__onnx_raw_t;

/* A model without its initializers' raw_data payloads: buf (owned) for
 * protobuf-c, refs[i] for gp->initializer[i]. */
typedef struct ss__onnx_stripped {
    uint8_t *buf;
    size_t len;
    ss__onnx_raw_t *refs;
    size_t n_refs;
} ss__onnx_stripped_t;

/* Strips the model in buf (len bytes).  0: done; 1: the walk could not
 * parse it (hand buf to protobuf-c as it is); -1: no memory.  Borrows
 * buf. */
int ss__onnx_strip(const void *buf, size_t len, ss__onnx_stripped_t *out);
/* Frees what ss__onnx_strip made; accepts NULL. */
void ss__onnx_stripped_free(ss__onnx_stripped_t *st);

typedef struct ss__onnx_ctx {
    const char *source;  /* for messages */
    const char *dir;     /* external data directory; NULL: refused */
    size_t budget;       /* bytes of constants still allowed */
    /* Set while an initializer whose raw_data was stripped is decoded:
     * its payload is raw_src[raw->off ..], read instead of tp's. */
    const uint8_t *raw_src;
    const ss__onnx_raw_t *raw;
    int raw_mapped;      /* raw_src is a file mapping: drop read pages */
    /* raw_src's mapping when it is a model file's: element-aligned
     * payloads become tensors that point into it (onnx_tensor.c) */
    ss_filemap_t *map;
    /* the realigned copy of the payloads map cannot serve in place
     * (ss__onnx_realign); NULL if none */
    ss_filemap_t *side;
} ss__onnx_ctx_t;

/* For the stripped initializers of gp (refs[i] for gp->initializer[i])
 * whose payload in cx->map is not aligned to its element: copies them,
 * aligned, into an unlinked file next to the model and maps it as
 * cx->side, so that they too become file pages rather than anonymous
 * memory (onnx_tensor.c says why).  Sets cx->side and marks those
 * refs, or leaves both alone (nothing to realign, or no disk-backed
 * place for it: those payloads are then copied as before); it never
 * fails the load. */
void ss__onnx_realign(ss__onnx_ctx_t *cx, const Onnx__GraphProto *gp,
                      ss__onnx_raw_t *refs);

/* Decodes tp (raw_data, typed fields or external data) into a new tensor.
 * what names it in messages ("initializer 'w'"). */
int ss__onnx_tensor(ss__onnx_ctx_t *cx, const Onnx__TensorProto *tp,
                    const char *what, ss_tensor_t **out, ss_err_t *err);

/* What the import accepts (onnx_ops.c).  "'name'" or "#idx" into buf. */
void ss__onnx_node_label(const Onnx__NodeProto *np, size_t idx, char *buf,
                         size_t len);
/* Whether d names the default ONNX domain ("", NULL or "ai.onnx"). */
int ss__onnx_default_domain(const char *d);
/* np's op as the engine registers it: "<domain>.<op_type>" outside the
 * default domain (into buf), else its op_type. */
const char *ss__onnx_qualified(const Onnx__NodeProto *np, char *buf,
                               size_t len);
/* Fails naming every node of gp whose op the engine has no kernel for
 * (source and g->opset in the message). */
int ss__onnx_check_ops(const Onnx__GraphProto *gp, const ss_graph_t *g,
                       const char *source, ss_err_t *err);
/* Sets g->opset from m's default-domain import; fails outside 1..17. */
int ss__onnx_check_opset(const Onnx__ModelProto *m, ss_graph_t *g,
                         const char *source, ss_err_t *err);

/* Imports the model in buf (len bytes) named source (messages); dir is
 * where its external data lies (NULL: refused), map buf's file mapping
 * (NULL for a caller's buffer): onnx.c. */
int ss__onnx_load(const void *buf, size_t len, const char *source,
                  const char *dir, ss_filemap_t *map, ss_graph_t **out,
                  ss_err_t *err);
/* Puts g's nodes in topological order (its subgraphs' reads count) and
 * sets each value's producer; a cycle is SS_EBADMODEL (toposort.c). */
int ss__ir_sort_nodes(ss_graph_t *g, const char *source, ss_err_t *err);

/* Refuses op versions and training-mode nodes the engine does not run,
 * naming op, version and node (opset.c). */
int ss__ir_check_versions(const ss_graph_t *g, ss_err_t *err);

/* The rank of value id, derived from its producers where the IR does not
 * hold it (engine/ir/rank.c), or -1.  memo: g->n_values ints set to -2
 * by the caller, shared by calls on the same graph. */
int ss__ir_rank(const ss_graph_t *g, int id, int *memo);

#endif
