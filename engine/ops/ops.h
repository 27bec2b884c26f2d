/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_OPS_OPS_H
#define SS_ENGINE_OPS_OPS_H

/*
 * Shared machinery of the reference kernels (internal to engine/ops/).
 *
 * Every kernel file exports one table of ss_op_t ended by an entry whose
 * op_type is NULL; registry.c searches them.  The helpers here are the
 * pieces every infer needs to stay safe on hostile shapes (checked element
 * counts, axis normalization, reading small integer inputs) and the one
 * broadcasting iterator every elementwise op with more than one input
 * runs on.
 *
 * THREADS: [any]; nothing here keeps state.
 */

#include <stdbool.h>
#include <stdint.h>

#include "engine/ir/ir.h"

/* Largest element count any tensor may have (2^40): far above any real
 * model, low enough that numel * 8 bytes and index arithmetic never wrap. */
#define SS_OPS_MAX_NUMEL ((int64_t)1 << 40)

extern const ss_op_t ss__ops_unary[];
extern const ss_op_t ss__ops_binary[];
extern const ss_op_t ss__ops_matmul[];
extern const ss_op_t ss__ops_conv[];
extern const ss_op_t ss__ops_pool[];
extern const ss_op_t ss__ops_norm[];
extern const ss_op_t ss__ops_shape[];
extern const ss_op_t ss__ops_tensor[];
extern const ss_op_t ss__ops_reduce[];
extern const ss_op_t ss__ops_quant[];
extern const ss_op_t ss__ops_math[];     /* math.c */
extern const ss_op_t ss__ops_index[];    /* index.c */
extern const ss_op_t ss__ops_reduce_more[]; /* reduce_more.c */
extern const ss_op_t ss__ops_layout[];   /* layout.c */
extern const ss_op_t ss__ops_resize[];   /* resize.c */
extern const ss_op_t ss__ops_misc[];     /* misc.c */
extern const ss_op_t ss__ops_nd[];       /* nd.c */
extern const ss_op_t ss__ops_convtranspose[]; /* convtranspose.c */
extern const ss_op_t ss__ops_rnn[];      /* rnn.c */
extern const ss_op_t ss__ops_gridsample[]; /* gridsample.c */
extern const ss_op_t ss__ops_nms[];      /* nms.c */
extern const ss_op_t ss__ops_unique[];   /* unique.c */
extern const ss_op_t ss__ops_einsum[];   /* einsum.c */
extern const ss_op_t ss__ops_moe[];      /* moe.c: com.microsoft.MoE */
extern const ss_op_t ss__ops_roi[];      /* roi.c: RoiAlign, MaxUnpool */
extern const ss_op_t ss__ops_spectral[]; /* spectral.c: DFT, STFT, MelWeightMatrix */

/* ConvTranspose's geometry as the spec reads it (convtranspose.c): nsp
 * spatial axes, N, C (X's channels), M (Y's), the kernel k, strides s,
 * dilations d, the begin pads pb and the output sizes out, resolved from
 * pads, output_padding, output_shape and auto_pad.  The reference kernel
 * and the oneDNN deconvolution step (engine/plan/plan_fuse_conv.c) read
 * it, so both compute the same output.  [any] */
#define SS_OPS_CONVT_MAX_SP 6
typedef struct ss__ops_convt {
    int nsp;
    int64_t group, in[SS_OPS_CONVT_MAX_SP], k[SS_OPS_CONVT_MAX_SP];
    int64_t s[SS_OPS_CONVT_MAX_SP], d[SS_OPS_CONVT_MAX_SP];
    int64_t pb[SS_OPS_CONVT_MAX_SP], out[SS_OPS_CONVT_MAX_SP];
    int64_t N, C, M;
} ss__ops_convt_t;
int ss__ops_convt_geom(const ss_node_t *n, const ss_tensor_t *x,
                       const ss_tensor_t *w, ss__ops_convt_t *g,
                       ss_err_t *err);

/* Sets err to SS_EINVAL with "node 'name' (Op): <message>"; returns it. */
int ss__ops_fail(ss_err_t *err, const ss_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with another code (SS_EUNSUPP for valid but unsupported). */
int ss__ops_failc(ss_err_t *err, int code, const ss_node_t *n,
                  const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Bytes per element for the types kernels handle; 0 for the others. */
size_t ss__ops_dtype_size(ss_dtype_t t);
const char *ss__ops_dtype_name(ss_dtype_t t);

/* Element count of t (dims already validated), 0 for an empty tensor. */
int64_t ss__ops_numel(const ss_tensor_t *t);
/* Product of dims[from, to). */
int64_t ss__ops_prod(const int64_t *dims, int from, int to);

/* Checks that input i is present, has a known dtype, a rank in [0, 8] and
 * dims in [0, SS_OPS_MAX_NUMEL] with a product under the limit. */
int ss__ops_check_input(const ss_node_t *n, const ss_tensor_t *const *in,
                        int i, ss_err_t *err);
/* Checks inputs [0, count) that are present; required ones must be. */
int ss__ops_check_inputs(const ss_node_t *n, const ss_tensor_t *const *in,
                         int required, ss_err_t *err);
/* Fills out with dtype and shape after checking the element count. */
int ss__ops_set_out(const ss_node_t *n, ss_tensor_t *out, ss_dtype_t dt,
                    int ndim, const int64_t *dims, ss_err_t *err);

/* Normalizes axis for a tensor of rank r into [0, r) (or [0, r] when
 * allow_end is set); fails naming what. */
int ss__ops_axis(const ss_node_t *n, int64_t axis, int r, bool allow_end,
                 int *out, ss_err_t *err);

/* Input i counts as given when present in the node and in[]. */
bool ss__ops_has_input(const ss_node_t *n, const ss_tensor_t *const *in,
                       int i);
/* Input i when the node has it (ss__ops_has_input), else NULL: how an
 * optional input (a bias, a zero point) is read. */
const ss_tensor_t *ss__ops_opt_input(const ss_node_t *n,
                                     const ss_tensor_t *const *in, int i);
/* Output k is wanted when the node names it and the caller gave a buffer
 * (for run). */
bool ss__ops_want_output(const ss_node_t *n, const ss_tensor_t *out, int k);

/* Reads an int32/int64 tensor of at most max elements that must be known
 * (data set); returns the count or a negative code.  what names it. */
int ss__ops_read_ints(const ss_node_t *n, const ss_tensor_t *t,
                      const char *what, int64_t *vals, int max,
                      ss_err_t *err);
/* Reads a scalar (or one-element tensor) of any numeric type as double. */
int ss__ops_read_scalar(const ss_node_t *n, const ss_tensor_t *t,
                        const char *what, double *v, ss_err_t *err);
/* A Slice's output as a view of its input (in[0] dense; the other
 * inputs constants, as the kernel reads them): its dims, the stride of
 * each in input elements (negative for a negative step) and the element
 * offset of its first element.  [any] */
int ss__ops_slice_view(const ss_node_t *n, int opset,
                       const ss_tensor_t *const *in, int64_t *dims,
                       int64_t *str, int64_t *off, ss_err_t *err);
/* Element i of a numeric tensor as double / int64. */
double ss__ops_get_f64(const void *data, ss_dtype_t dt, int64_t i);
int64_t ss__ops_get_i64(const void *data, ss_dtype_t dt, int64_t i);
bool ss__ops_is_int(ss_dtype_t t);
bool ss__ops_is_float(ss_dtype_t t);

/* ---- broadcasting ----------------------------------------------------- */

#define SS_BCAST_MAX_IN 4

/*
 * Multidirectional (numpy) broadcasting of up to four inputs to one
 * output.  After ss__bcast_init the shape is coalesced: adjacent axes that
 * every input walks the same way are merged, so the innermost run is as
 * long as possible.  ss__bcast_run calls row() once per innermost run with
 * pointers to its first elements and each input's step (0 or 1 element).
 */
typedef struct ss_bcast {
    int n_in;
    int ndim;                   /* after coalescing, >= 1 */
    int64_t dims[SS_MAX_DIMS];
    int64_t strides[SS_BCAST_MAX_IN][SS_MAX_DIMS]; /* elements, 0 = bcast */
    int64_t numel;
} ss_bcast_t;

/* Computes the broadcast shape of shapes[0..n_in) into out_ndim/out_dims;
 * fails naming the node when they do not broadcast. */
int ss__bcast_shape(const ss_node_t *n, int n_in, const ss_tensor_t *const *t,
                    int *out_ndim, int64_t *out_dims, ss_err_t *err);
/* Prepares the iteration of inputs t[0..n_in) to the shape out. */
void ss__bcast_init(ss_bcast_t *b, int n_in, const ss_tensor_t *const *t,
                    const ss_tensor_t *out);

typedef void (*ss_bcast_row_fn)(void *ctx, void *out, const void *const *in,
                                const int64_t *step, int64_t count);
/* esize[i] is the element size of input i, osize the output's. */
void ss__bcast_run(const ss_bcast_t *b, void *out, size_t osize,
                   const void *const *in, const size_t *esize,
                   ss_bcast_row_fn row, void *ctx);

/* ---- sliding windows (Conv, pooling) ---------------------------------- */

/*
 * The geometry of a window sliding over 1 to 3 spatial axes, from the
 * attributes strides, dilations, pads and auto_pad, and for pooling
 * ceil_mode.  Index 0 is height and 1 is width; a rank-1 input is handled
 * as 2-D with a unit height.  Index 2 is the depth of a 3-D window (the
 * first spatial axis of an [N, C, D, H, W] tensor), a unit axis for 1-D
 * and 2-D ones: it is last so that 1-D and 2-D users keep their indices.
 */
typedef struct ss_window {
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], out[3];
} ss_window_t;

/* The index into ss_window_t's arrays of spatial axis i of nsp. */
static inline int
ss__ops_window_axis(int nsp, int i)
{
    return nsp == 3 ? (i == 0 ? 2 : i - 1) : i + 2 - nsp;
}

/* Writes the output dims [N, C, spatial...] of a window over x. */
static inline void
ss__ops_window_dims(const ss_window_t *w, const ss_tensor_t *x,
                    int64_t *dims)
{
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    for (int i = 0; i < x->ndim - 2; i++)
        dims[2 + i] = w->out[ss__ops_window_axis(x->ndim - 2, i)];
}

int ss__ops_window(const ss_node_t *n, int nsp, const int64_t *in_sp,
                   const int64_t *kernel, bool ceil_mode, ss_window_t *w,
                   ss_err_t *err);

#endif
