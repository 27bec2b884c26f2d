/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_DNNL_INT_H
#define SS_ENGINE_DNNL_INT_H

/*
 * Private to engine/dnnl*.c: the object layout and the helpers the
 * per-kind constructors share.  Nothing outside the oneDNN layer includes
 * this (it pulls in oneDNN's header).
 *
 * A primitive object is a oneDNN primitive plus a table of its execution
 * arguments.  Each argument says where its memory comes from at run time:
 * in[i], the caller's out, or a constant packed at creation and owned
 * here.  ss_dnn_run turns that table into dnnl_exec_arg_t.
 *
 * THREADS: objects are written only while they are built (one thread);
 * afterwards they are read-only but for the spare set of memory objects,
 * which one run at a time holds (atomic exchange).
 */

#include <stdatomic.h>

#include <oneapi/dnnl/dnnl.h>

#include "engine/dnnl/dnnl.h"

/* ss__dnn_arg_t.src: >= 0 is in[src]; these are the other sources. */
enum {
    SS__DNN_SRC_OUT = -1,
    SS__DNN_SRC_CONST = -2
};

#define SS__DNN_MAX_ARGS 24

typedef struct ss__dnn_arg {
    int arg;                  /* DNNL_ARG_* */
    int src;
    dnnl_memory_desc_t md;    /* the layout the primitive reads/writes */
    const void *udata;        /* CONST, until packed: the caller's data */
    dnnl_memory_t cmem;       /* CONST: packed; owned, or shared's */
    void *cbuf;               /* CONST: its buffer, owned (NULL if shared) */
    struct ss__dnn_packed *shared; /* CONST: a reference, or NULL */
    struct ss_memacct *acct;  /* CONST: what cbuf was charged to (a
                               * reference), or NULL */
    size_t charged;
} ss__dnn_arg_t;

/* A run done by our own code instead of oneDNN's (dnnl_pool8.c). */
typedef struct ss__dnn_kern ss__dnn_kern_t;

struct ss_dnn_stream {
    dnnl_stream_t stream;
    int threads;
};

/* The memory objects one run of an object wraps its run-time pointers in
 * (dnnl_run.c): one per argument that is not a constant, in argument
 * order, then the scratchpad's. */
typedef struct ss__dnn_mems {
    int n;
    dnnl_memory_t m[SS__DNN_MAX_ARGS + 1];
} ss__dnn_mems_t;

struct ss_dnn_prim {
    const char *what;         /* "inner product", for messages */
    dnnl_primitive_t prim;
    char impl[64];
    size_t scratch;
    dnnl_memory_desc_t scratch_md;
    int n_in;
    int dst_ndim;
    int64_t dst_dims[SS_DNN_MAX_DIMS];
    size_t const_bytes;
    /* >= 0: in[sum_in] is a residual the SUM post-op adds: ss_dnn_run
     * copies its sum_bytes into dst first (dnnl_wino.c) */
    int sum_in;
    size_t sum_bytes;
    int n_args, cap_args;
    /* Grown as arguments are added: a memory descriptor is ~700 bytes,
     * and a fixed table of SS__DNN_MAX_ARGS cost ~17 KB per object, per
     * plan, per model. */
    ss__dnn_arg_t *args;
    /* non-NULL: ss_dnn_run runs this instead of prim (in[0] -> out) */
    ss__dnn_kern_t *kern;
    /* A set of memory objects no run is using, or NULL: a run takes it
     * (atomic exchange) and puts it back after, so that no two runs share
     * one; a run that finds none makes its own (dnnl_run.c).  0: not yet
     * known whether sets can be kept, 1 yes, -1 no (a padded argument). */
    _Atomic(ss__dnn_mems_t *) spare;
    _Atomic int keep_mems;
    /* 1: made with activation layouts (ss__dnn_md_layout), so its 3-
     * and 5-D arguments have one (ss_dnn_prim_layout) */
    int layouts;
};

/* Sets of memory objects made so far, process-wide (tests: a thread
 * running one object again and again makes one).  [any] */
extern _Atomic long ss__dnn_mems_made;

/* Destroys a set of memory objects (NULL: nothing).  [any] */
void ss__dnn_mems_free(ss__dnn_mems_t *m);

/* The process-wide CPU engine, created on first use.  [any] */
int ss__dnn_engine(dnnl_engine_t *out, ss_err_t *err);

/* The one mapping of oneDNN status to our codes: success is 0;
 * unimplemented is SS_EUNSUPP (the caller falls back to its reference
 * kernel), out_of_memory SS_ENOMEM, anything else SS_EDNNL.  The message
 * names the oneDNN call and the op. */
int ss__dnn_check(dnnl_status_t st, ss_err_t *err, const char *call,
                  const char *what);

/* dnnl_data_type_undef for a type oneDNN has no kernels for. */
dnnl_data_type_t ss__dnn_dtype(ss_dtype_t t);
/* dnnl_alg_kind_undef for an unknown value. */
dnnl_alg_kind_t ss__dnn_eltwise_alg(int alg);
dnnl_alg_kind_t ss__dnn_binary_alg(int alg);

/* Dense row-major descriptor of ndim dims. */
int ss__dnn_md_dense(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                     dnnl_data_type_t dt, ss_err_t *err, const char *what);
/* A descriptor with explicit strides, or dense when strides is NULL. */
int ss__dnn_md_strided(dnnl_memory_desc_t *md, int ndim,
                       const int64_t *dims, const int64_t *strides,
                       dnnl_data_type_t dt, ss_err_t *err,
                       const char *what);

/* The descriptor of a tensor in layout l: dense, or nChw16c. */
int ss__dnn_md_layout(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                      dnnl_data_type_t dt, ss_dnn_layout_t l, ss_err_t *err,
                      const char *what);

/* A new, empty object (dst dims set by the caller). */
int ss__dnn_prim_alloc(const char *what, ss_dnn_prim_t **out, ss_err_t *err);
/* Registers a run-time argument (src >= 0 or SS__DNN_SRC_OUT). */
int ss__dnn_add_arg(ss_dnn_prim_t *p, int arg, int src, ss_err_t *err);
/* Registers a constant, given in layout user_md, to pack in finish. */
int ss__dnn_add_const(ss_dnn_prim_t *p, int arg,
                      const dnnl_memory_desc_t *user_md, const void *data,
                      ss_err_t *err);

/* An attribute with a user-managed scratchpad and the post-ops of po,
 * whose BINARY tensors broadcast to dst (dst_ndim dims; full-shape ones in
 * dst's layout l).  New reference in *out (NULL on failure). */
int ss__dnn_attr(const ss_dnn_postops_t *po, int dst_ndim,
                 const int64_t *dst_dims, dnnl_data_type_t dt,
                 ss_dnn_layout_t l, dnnl_primitive_attr_t *out,
                 ss_err_t *err, const char *what);

/* Creates the primitive descriptor for op_desc; new pd in *out. */
int ss__dnn_pd(const_dnnl_op_desc_t op_desc, const_dnnl_primitive_attr_t a,
               dnnl_primitive_desc_t *out, ss_err_t *err, const char *what);

/* Completes p from pd: creates the primitive, registers one run-time
 * argument per BINARY post-op of po (from in[po_first_in] on), reads every
 * argument's layout from pd, packs the constants, sizes the scratchpad.
 * Borrows pd (the caller destroys it). */
int ss__dnn_finish(ss_dnn_prim_t *p, const_dnnl_primitive_desc_t pd,
                   const ss_dnn_postops_t *po, int po_first_in,
                   ss_err_t *err);

/* The constructor kit (dnnl_build.c).  A constructor runs
 *   ss__dnn_build_start, its checks, its memory descriptors, b.attr,
 *   ss__dnn_build_op, and always ss__dnn_build_end. */
typedef struct ss__dnn_build {
    const char *what;
    ss_dnn_prim_t *p;                 /* the object being built */
    dnnl_primitive_attr_t attr;       /* owned, destroyed at the end */
    dnnl_primitive_desc_t pd;         /* owned, destroyed at the end */
} ss__dnn_build_t;

/* A constant argument of ss__dnn_build_op, given in layout md.  An
 * optional one (bias, gamma, beta) is left out when data is NULL; a
 * required one is an error then. */
typedef struct ss__dnn_carg {
    int arg;                          /* DNNL_ARG_* */
    const dnnl_memory_desc_t *md;
    const void *data;                 /* borrowed until packed */
    int optional;
} ss__dnn_carg_t;

/* Zeroes b and allocates its object, named what (a string literal). */
int ss__dnn_build_start(ss__dnn_build_t *b, const char *what,
                        ss_err_t *err);
/* Destroys b's attr and pd; on rc < 0 also the object.  *out is the new
 * object (NULL on failure); returns rc. */
int ss__dnn_build_end(ss__dnn_build_t *b, int rc, ss_dnn_prim_t **out);
/* Records the object's dst dims. */
void ss__dnn_set_dst(ss_dnn_prim_t *p, int ndim, const int64_t *dims);
/* Creates b->pd from od under b->attr (od NULL: b->pd is made already,
 * as for a reorder), registers in[i] as in_args[i] for i < n_in, then the
 * constants, then dst as dst_arg, and runs ss__dnn_finish with the
 * BINARY post-op tensors of po from in[n_in] on. */
int ss__dnn_build_op(ss__dnn_build_t *b, const_dnnl_op_desc_t od,
                     const int *in_args, int n_in,
                     const ss__dnn_carg_t *cargs, int n_cargs, int dst_arg,
                     const ss_dnn_postops_t *po, ss_err_t *err);

/* A descriptor with format_tag_any: the layout oneDNN prefers. */
int ss__dnn_md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                   dnnl_data_type_t dt, ss_err_t *err, const char *what);

/* The spatial geometry of a convolution or pooling, ONNX's terms and
 * order (depth, height, width; nsp of them): input, kernel, stride and
 * dilation (0 = 1), pads. */
typedef struct ss__dnn_geom {
    int nsp;
    int64_t in[3], k[3], stride[3], dil[3], pb[3], pe[3];
} ss__dnn_geom_t;

/* The geometry of a conv or pool descriptor's fields (nsp 0 = 2: ih, iw
 * and the [2] arrays; 1: iw and the W entries; 3: depth first). */
int ss__dnn_geom(ss__dnn_geom_t *g, int nsp, const ss_dnn_depth_t *depth,
                 int64_t ih, int64_t iw, const int64_t k[2],
                 const int64_t stride[2], const int64_t dilation[2],
                 const int64_t pad_begin[2], const int64_t pad_end[2],
                 ss_err_t *err, const char *what);

/* The window of a convolution or pooling in oneDNN's terms (dil is
 * dilation - 1), and the output's spatial dims (0 when the window does
 * not fit). */
typedef struct ss__dnn_window {
    dnnl_dims_t kernel, strides, dil, pl, pr;
    int64_t out[3];
} ss__dnn_window_t;

int ss__dnn_window_of(ss__dnn_window_t *w, const ss__dnn_geom_t *g,
                      ss_err_t *err, const char *what);
/* The same for a 2-D window. */
int ss__dnn_window(ss__dnn_window_t *w, int64_t ih, int64_t iw,
                   const int64_t kernel[2], const int64_t stride[2],
                   const int64_t dilation[2], const int64_t pad_begin[2],
                   const int64_t pad_end[2], ss_err_t *err,
                   const char *what);

/* Max pooling on 8-bit NHWC: p (the oneDNN pooling of d) runs our loop
 * instead (dnnl_pool8.c); other pools are left as they are. */
int ss__dnn_pool8_attach(ss_dnn_prim_t *p, const ss_dnn_pool_desc_t *d,
                         const ss__dnn_window_t *win, ss_err_t *err);
void ss__dnn_kern_run(const ss__dnn_kern_t *k, const void *in, void *out);

/* A pooling's oneDNN algorithm, window and output dims [N, C, OH, OW]
 * (d's nsp + 2 of them; an output dim of 0: the window does not fit;
 * callers check). */
int ss__dnn_pool_geom(const ss_dnn_pool_desc_t *d, dnnl_alg_kind_t *alg,
                      ss__dnn_window_t *win, int64_t *dd, ss_err_t *err,
                      const char *what);

/* The primitive descriptor of backward op od into b->pd, under b->attr,
 * with the forward's pd as the hint (dnnl_train.c). */
int ss__dnn_bwd_pd(ss__dnn_build_t *b, const_dnnl_op_desc_t od,
                   const_dnnl_primitive_desc_t hint, ss_err_t *err);

/* The weight dims of a convolution, [G,] OC/G, IC/G, then the nsp
 * kernel dims k (G only when grouped); returns how many. */
int ss__dnn_conv_wdims(int64_t group, int64_t oc, int64_t ic, int nsp,
                       const int64_t *k, int64_t wd[6]);

/* A forward convolution's memory and op descriptors (ss_dnn_conv_new,
 * ss_dnn_qconv_new): g's geometry (nsp, n, ic, ih, iw, oc, kh, kw, depth,
 * group, stride, dilation, pads; nothing else read), src and dst in their
 * layouts, weights in the kernel's choice, wuser the dense ONNX-order
 * weights, bias f32 [OC].  dt: src, dst, weights, user weights. */
typedef struct ss__dnn_conv_md {
    dnnl_convolution_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    ss__dnn_window_t win;
    int nd;                     /* rank of src and dst (nsp + 2) */
    int64_t dd[5];              /* dst dims */
} ss__dnn_conv_md_t;

int ss__dnn_conv_md(ss__dnn_conv_md_t *m, const ss_dnn_conv_desc_t *g,
                    const dnnl_data_type_t dt[4], ss_dnn_layout_t src_layout,
                    ss_dnn_layout_t dst_layout, int has_bias, ss_err_t *err,
                    const char *what);

/* The Winograd form of conv d (dnnl_wino.c): 1 with b->pd and b->attr
 * made for it and *po the post-ops to finish with (*sum: a residual ADD
 * became a SUM, read from in[1]); 0 when d has none (b untouched). */
int ss__dnn_conv_wino(ss__dnn_build_t *b, const ss_dnn_conv_desc_t *d,
                      const dnnl_memory_desc_t *src,
                      const dnnl_memory_desc_t *w,
                      const dnnl_memory_desc_t *bias,
                      const dnnl_memory_desc_t *dst,
                      const ss__dnn_window_t *win, const int64_t dd[4],
                      ss_dnn_postops_t *po, int *sum);

#endif
