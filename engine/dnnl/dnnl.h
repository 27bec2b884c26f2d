/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_DNNL_H
#define SS_ENGINE_DNNL_H

/*
 * The oneDNN primitive layer: the engine's fast path for its hot ops.
 *
 * The plan compiler creates one primitive object (ss_dnn_prim_t) per fused
 * op, for concrete shapes, once; executors run it many times.  This header
 * hides oneDNN's types: a caller never includes <oneapi/dnnl/dnnl.h>.
 *
 * Creating.  Each kind has a descriptor struct and an ss_dnn_<kind>_new().
 * Zero-initialize the struct ("= {0}"), then fill what you need: a zero
 * dtype means f32, NULL strides mean dense row-major, zero post-ops means
 * none.  dtype is the activations' type (src, dst, post-op tensors): F32,
 * or BF16 (tested for Linear only; constants stay f32 and are converted
 * when packed).  Primitives that mix types (int8 with output scales,
 * bf16 from f32 weights, type conversions) are in engine/dnnl/dnnl_q.h.
 * Constant operands (weights, bias, gamma/beta) are given as plain f32
 * arrays that are BORROWED during the call only: the object reorders them
 * into the layout the kernel prefers and owns that copy.
 *
 * Layouts.  Activations (every pointer given to ss_dnn_run) are dense and
 * row-major: [M,K] for Linear, NCHW for Conv and pooling, and whatever dims
 * the descriptor names otherwise.  Matmul operands and the reorder may have
 * explicit strides (in elements), so a transpose can be folded away.
 * Optionally, a 4-D NCHW activation whose C is a multiple of 16 may be
 * kept BLOCKED (oneDNN's nChw16c: [N][C/16][H][W][16], the same size as
 * NCHW, no padding) between convolutions, pooling, binary and eltwise ops:
 * measured here, 3x3 convs run 2-3x faster blocked (brgconv) than on NCHW
 * (gemm), and a reorder to or from NCHW costs 10-30% of such a conv.
 * For other channel counts NHWC (channels last, same size) does nearly as
 * well: 2.5-3x faster than NCHW (brgconv), about 25% slower than nChw16c.
 * Eltwise is layout-blind; a reorder converts at the chain's ends.
 *
 * Running.  ss_dnn_run(p, stream, in, out, scratch) with
 *     in[0]       the main source (Linear/Conv/pool/... src; matmul A;
 *                 binary src0; reorder src),
 *     in[1]       matmul B when it is not constant; binary src1,
 *     then        one pointer per BINARY post-op, in post-op order,
 *     out         the destination,
 *     scratch     ss_dnn_prim_scratch_size(p) bytes, 64-byte aligned
 *                 (NULL when the size is 0), private to the calling thread.
 * ss_dnn_prim_num_inputs(p) says how many in[] pointers the object reads.
 * out may equal in[0] for eltwise, softmax and binary (when src0 has the
 * dst shape); and may not alias anything otherwise.  No other temporary
 * memory is needed at run time: oneDNN's scratchpad is user-managed.
 *
 * Post-ops run on the op's result in order:
 *     ELTWISE  dst = f(dst; alpha, beta)
 *     BINARY   dst = dst <op> t, t a run-time tensor broadcastable to dst
 *              (numpy rules, right-aligned, t's dims 1 or equal to dst's);
 *              a residual add is a BINARY ADD with t = the residual.  A t
 *              with dst's full shape has dst's layout; others are plain.
 *              Full-shape, per-tensor and per-channel (dim 1) t keep the
 *              fast kernels; other broadcasts may fall back to oneDNN's
 *              slow reference code (ss_dnn_prim_impl says "ref:any").
 *     SUM      dst = alpha * (old dst) + dst: out must already hold the
 *              residual (no extra in[] pointer; saves one read stream when
 *              the plan can write the residual there in place), except
 *              for a Linear, which reads it from in[] (ss_dnn_linear_desc_t).
 * For Linear the dst is 2-D [M,N]; for Conv it is [N,OC,OH,OW]; for matmul
 * the dst dims of the descriptor.
 *
 * Errors: a oneDNN failure becomes SS_EDNNL with a message naming the
 * call and the op, except "unimplemented", which is SS_EUNSUPP like any
 * shape or parameter this layer cannot do (the caller then falls back to
 * its reference kernel), and out-of-memory, SS_ENOMEM; nonsense input
 * gives SS_EINVAL.  On failure *out is NULL.
 *
 * THREADS: primitive objects are immutable after creation; any number of
 * threads may run one object at once, each with its own stream and
 * scratch.  A stream belongs to one thread at a time (the executor's).
 * The engine is created once, lazily, under pthread_once.  Nothing here
 * locks on the run path.
 */

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"

#define SS_DNN_MAX_DIMS 6   /* oneDNN matmul/binary handle up to 12 */
#define SS_DNN_MAX_POST 8

typedef struct ss_dnn_stream ss_dnn_stream_t;
typedef struct ss_dnn_prim ss_dnn_prim_t;

/* Element-wise functions, for ss_dnn_eltwise_new and ELTWISE post-ops.
 * alpha/beta as oneDNN defines them. */
typedef enum {
    SS_DNN_RELU = 1,      /* x > 0 ? x : alpha * x  (LeakyRelu: alpha) */
    SS_DNN_GELU_ERF,      /* Gelu, and the Erf decomposition of it */
    SS_DNN_GELU_TANH,     /* Gelu approximate="tanh" */
    SS_DNN_TANH,
    SS_DNN_LOGISTIC,      /* Sigmoid */
    SS_DNN_CLIP,          /* min(max(x, alpha), beta); Clip */
    SS_DNN_EXP,
    SS_DNN_LOG,
    SS_DNN_SQRT,
    SS_DNN_ABS,
    SS_DNN_SQUARE,
    SS_DNN_LINEAR,        /* alpha * x + beta; Neg is alpha=-1 */
    SS_DNN_POW,           /* alpha * x^beta; Pow by a constant */
    SS_DNN_ELU,           /* alpha: ONNX Elu alpha */
    SS_DNN_SWISH,         /* x * sigmoid(alpha * x) */
    SS_DNN_SOFT_RELU,     /* log(1 + e^x); Softplus */
    SS_DNN_HARDSWISH,
    SS_DNN_ROUND
} ss_dnn_eltwise_alg_t;

/* Binary ops, for ss_dnn_binary_new and BINARY post-ops. */
typedef enum {
    SS_DNN_ADD = 1,
    SS_DNN_SUB,
    SS_DNN_MUL,
    SS_DNN_DIV,
    SS_DNN_MAX,
    SS_DNN_MIN
} ss_dnn_binary_alg_t;

/* Activation layouts, of any spatial rank (3- to 5-D tensors [N, C, ...]:
 * NCW, NCHW, NCDHW).  The names say the 2-D form. */
typedef enum {
    SS_DNN_PLAIN = 0,     /* dense row-major (NCHW) */
    SS_DNN_BLOCKED,       /* nCw16c, nChw16c, nCdhw16c: C % 16 == 0 only */
    SS_DNN_NHWC           /* channels last (nwc, nhwc, ndhwc); any C */
} ss_dnn_layout_t;

typedef enum {
    SS_DNN_PO_ELTWISE = 1,
    SS_DNN_PO_BINARY,
    SS_DNN_PO_SUM,
    SS_DNN_PO_DW          /* conv only: a depthwise 3x3 pad-1 conv of dst
                           * (ss_dnn_conv_desc_t's dw_* fields); the
                           * post-ops after it, and dst, are that conv's */
} ss_dnn_po_kind_t;

typedef struct ss_dnn_postop {
    ss_dnn_po_kind_t kind;
    int alg;              /* ss_dnn_eltwise_alg_t or ss_dnn_binary_alg_t */
    float alpha, beta;    /* ELTWISE parameters; SUM: alpha is the scale
                           * (0 is taken as 1) */
    int ndim;             /* BINARY: the run-time tensor's shape */
    int64_t dims[SS_DNN_MAX_DIMS];
} ss_dnn_postop_t;

typedef struct ss_dnn_postops {
    int n;
    ss_dnn_postop_t op[SS_DNN_MAX_POST];
} ss_dnn_postops_t;

/* Appends the eltwise post-op (alg, alpha, beta) to po: 1 when done, 0
 * when po is full or oneDNN 2.6 would run it wrong.  Its post-op
 * injector keeps ONE eltwise injector per algorithm (a map keyed by the
 * algorithm kind), so a second eltwise of an algorithm already in the
 * list runs with the first one's alpha and beta: x B * 0.7 * 0.5 came
 * out as x B * 0.49 (a MatMul, fused or with a constant weight, f32 and
 * int8 alike), Mul-Relu-Mul and Clip-Mul-Clip too, and so did
 * nn.MultiheadAttention's scores.  A linear right after a linear is
 * folded into it (alpha2 (alpha1 x + beta1) + beta2, exact up to one
 * rounding); any other repeat with other parameters is refused, and the
 * caller ends its fusion there. */
int ss_dnn_postops_add_eltwise(ss_dnn_postops_t *po, int alg, float alpha,
                               float beta);

/* Linear / Gemm with a constant weight: dst[M,N] = src[M,K] x W + bias,
 * then post-ops.  A MatMul of [B,T,K] by a constant [K,N] is this with
 * M = B*T.  Runs as oneDNN's 2-D matmul (its brgemm kernel is faster than
 * the inner product's from a few hundred rows, equal below; dnnl_ops.c),
 * as an inner product where oneDNN has no matmul for it.  A SUM post-op
 * reads its residual from in[] too, after the binary post-ops' tensors:
 * ss_dnn_run copies it into out first, or adds it in place when it is
 * out (ss_dnn_prim_sum_input). */
typedef struct ss_dnn_linear_desc {
    ss_dtype_t dtype;     /* src/dst; 0 = F32 */
    int64_t m, k, n;
    const float *w;       /* borrowed; see w_nk */
    int w_nk;             /* 1: w is [N,K] (PyTorch Linear, Gemm transB=1);
                           * 0: w is [K,N] (ONNX MatMul, Gemm transB=0) */
    const float *bias;    /* [N], borrowed, or NULL */
    ss_dnn_postops_t post;
} ss_dnn_linear_desc_t;

/* MatMul with numpy broadcasting of the batch dims:
 * dst[..., M, N] = A[..., M, K] x B[..., K, N] (+ bias[N]), then post-ops.
 * All three have the same ndim (2..SS_DNN_MAX_DIMS; unsqueeze first); each
 * batch dim of A and B is 1 or equal to dst's.  Strides (elements, one per
 * dim) describe a non-dense operand, e.g. B = K^T of a [B,H,T,D] tensor is
 * dims {B,H,D,T} with strides {H*T*D, T*D, 1, D}.  dst is computed from A
 * and B and is always dense. */
typedef struct ss_dnn_matmul_desc {
    ss_dtype_t dtype;
    int ndim;
    int64_t a_dims[SS_DNN_MAX_DIMS], b_dims[SS_DNN_MAX_DIMS];
    const int64_t *a_strides;   /* borrowed, or NULL = dense */
    const int64_t *b_strides;
    const float *b_const;       /* non-NULL: B is a constant (dense,
                                 * b_dims), packed now; else in[1] */
    const float *bias;          /* [N] or NULL, borrowed */
    ss_dnn_postops_t post;
    ss_dtype_t out_dtype;       /* ss_dnn_matmul_train_new: dst's dtype,
                                 * 0 = F32, BF16 with dtype BF16 */
} ss_dnn_matmul_desc_t;

/* The depth axis of a 3-D (volumetric) convolution or pooling: [N, C, D,
 * H, W] tensors, a kernel [.., KD, KH, KW]; 0 stride or dilation = 1. */
typedef struct ss_dnn_depth {
    int64_t in, k, stride, dilation, pad_begin, pad_end;
} ss_dnn_depth_t;

/* Convolution, ONNX conventions: src NCHW, w [OC, IC/group, KH, KW],
 * dilation >= 1 (ONNX's; converted to oneDNN's d-1 inside), pads
 * {top, left} and {bottom, right}.  nsp, the spatial rank, makes it 1-D
 * (src [N, C, W], w [OC, IC/group, KW]: ih and kh 1, the H entries of the
 * arrays unused) or 3-D (src [N, C, D, H, W] and w [.., KD, KH, KW], the
 * depth axis in depth); training and the DW post-op are 2-D only. */
typedef struct ss_dnn_conv_desc {
    ss_dtype_t dtype;
    int nsp;                    /* 1, 2 or 3; 0 = 2 */
    int64_t n, ic, ih, iw;
    int64_t oc, kh, kw;
    ss_dnn_depth_t depth;       /* nsp 3 */
    int64_t group;              /* 0 = 1 */
    int64_t stride[2];          /* 0 = 1 */
    int64_t dilation[2];        /* 0 = 1 */
    int64_t pad_begin[2], pad_end[2];
    const float *w;             /* borrowed */
    const float *bias;          /* [OC] or NULL, borrowed */
    ss_dnn_layout_t src_layout, dst_layout;
    ss_dnn_postops_t post;
    ss_dtype_t out_dtype;       /* training (ss_dnn_conv_train_*): what
                                 * FWD and BWD_DATA write; 0 = F32, or
                                 * BF16 with dtype BF16 */
    /* With a DW post-op (a 1x1 f32 conv): the depthwise conv after it,
     * weights [OC,1,3,3] and bias [OC] (borrowed), stride 1 or 2, pads
     * 1; dst is its output.  oneDNN computes it from rows of the 1x1's
     * output held in cache: the expanded tensor of a MobileNetV2 block
     * is never written whole (plan_fuse_dw.c). */
    const float *dw_w, *dw_bias;
    int64_t dw_stride;
    /* ConvTranspose as oneDNN's deconvolution (f32/bf16 inference): ic
     * the source's channels, oc the output's, w ONNX's [IC, OC/group,
     * (KD,) KH, KW]; tout the output's spatial sizes (nsp of them, depth
     * first), which output_padding / output_shape may make longer than
     * the window reaches (pad_end is unused): the rows past it are the
     * bias.  SS_EUNSUPP when they are a stride or more. */
    int transposed;
    int64_t tout[3];
} ss_dnn_conv_desc_t;

typedef enum {
    SS_DNN_POOL_MAX = 1,
    SS_DNN_POOL_AVG_INCLUDE,    /* AveragePool count_include_pad=1 */
    SS_DNN_POOL_AVG_EXCLUDE     /* AveragePool default */
} ss_dnn_pool_alg_t;

/* Pooling over NCHW.  GlobalAveragePool: kernel = {IH, IW}, no pads.
 * ceil_mode: the caller adds to pad_end what makes the last window fit.
 * nsp as for a conv: 1-D [N, C, W] or 3-D [N, C, D, H, W] (depth). */
typedef struct ss_dnn_pool_desc {
    ss_dtype_t dtype;
    ss_dnn_pool_alg_t alg;
    int nsp;                    /* 1, 2 or 3; 0 = 2 */
    int64_t n, c, ih, iw;
    ss_dnn_depth_t depth;       /* nsp 3 */
    int64_t kernel[2];
    int64_t stride[2];          /* 0 = 1 */
    int64_t dilation[2];        /* 0 = 1, ONNX convention */
    int64_t pad_begin[2], pad_end[2];
    ss_dnn_layout_t layout;     /* of src and dst */
} ss_dnn_pool_desc_t;

/* Softmax / LogSoftmax over one axis of a dense tensor. */
typedef struct ss_dnn_softmax_desc {
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_DNN_MAX_DIMS];
    int axis;                   /* 0..ndim-1 (normalize negatives first) */
    int log;                    /* 1: LogSoftmax */
    ss_dtype_t y_dtype;         /* ss_dnn_softmax_train_new: dst's (and
                                 * diff_dst's) dtype, 0 = dtype; there
                                 * dtype (src's and diff_src's) may be
                                 * BF16 when y_dtype is */
} ss_dnn_softmax_desc_t;

/* Layer normalization over the LAST dim: dims {rows, C} or any leading
 * shape; ONNX's axis < ndim-1 is the caller's flatten to 2-D. */
typedef struct ss_dnn_layernorm_desc {
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_DNN_MAX_DIMS];
    float eps;
    const float *gamma;         /* [C] or NULL (= 1), borrowed */
    const float *beta;          /* [C] or NULL (= 0), borrowed */
} ss_dnn_layernorm_desc_t;

/* Element-wise function of a dense tensor of numel elements. */
typedef struct ss_dnn_eltwise_desc {
    ss_dtype_t dtype;
    int64_t numel;
    ss_dnn_eltwise_alg_t alg;
    float alpha, beta;
} ss_dnn_eltwise_desc_t;

/* dst = src0 <op> src1 (then post-ops).  src1 broadcasts to src0, which
 * has the dst shape: numpy, right-aligned; b_ndim <= a_ndim.  When it is
 * src0 that broadcasts, swap for ADD/MUL/MAX/MIN or use the reference. */
typedef struct ss_dnn_binary_desc {
    ss_dtype_t dtype;
    ss_dnn_binary_alg_t alg;
    int a_ndim, b_ndim;
    int64_t a_dims[SS_DNN_MAX_DIMS], b_dims[SS_DNN_MAX_DIMS];
    ss_dnn_layout_t layout;     /* of src0, dst, and src1 if full-shape */
    ss_dnn_postops_t post;
} ss_dnn_binary_desc_t;

/* A copy between two layouts of the same dims: Transpose is dims = the
 * OUTPUT dims, src_strides = the input's strides permuted, dst dense.
 * NCHW <-> blocked: a *_layout BLOCKED (then that side's strides must be
 * NULL). */
typedef struct ss_dnn_reorder_desc {
    ss_dtype_t dtype;           /* the source's (and the destination's
                                 * unless dst_dtype says otherwise) */
    int ndim;
    int64_t dims[SS_DNN_MAX_DIMS];
    const int64_t *src_strides; /* borrowed, or NULL = dense */
    const int64_t *dst_strides;
    int64_t src_offset;         /* elements from in[0] to the first one
                                 * read (a slice of in[0]); strided or
                                 * dense sources only */
    ss_dnn_layout_t src_layout, dst_layout;
    ss_dtype_t dst_dtype;       /* 0: dtype; F32 <-> BF16 converts on the
                                 * way (round to nearest even) */
} ss_dnn_reorder_desc_t;

/* Whether a tensor of these dims can be BLOCKED: 3- to 5-D, C % 16 == 0.
 * (NHWC takes any 3- to 5-D tensor.)  [any] */
int ss_dnn_blocked_ok(int ndim, const int64_t *dims);

/* Streams: one per executor thread.  threads > 0 sets the OpenMP thread
 * count of the calling thread before each run (0: leave it).  [any] */
int ss_dnn_stream_new(int threads, ss_dnn_stream_t **out, ss_err_t *err);
void ss_dnn_stream_free(ss_dnn_stream_t *s);
/* Sets the thread count s runs with (as ss_dnn_stream_new's); returns
 * the one it had.  A plan whose primitives were made for one thread runs
 * them on one (engine/plan/plan_threads.c).  [worker: s's thread] */
int ss_dnn_stream_threads(ss_dnn_stream_t *s, int threads);

/* Constructors: return 0 and a new object, or a negative code and *out =
 * NULL.  Descriptors and the arrays they point to are borrowed for the
 * call.  [any] */
int ss_dnn_linear_new(const ss_dnn_linear_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);
int ss_dnn_matmul_new(const ss_dnn_matmul_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);
int ss_dnn_conv_new(const ss_dnn_conv_desc_t *d, ss_dnn_prim_t **out,
                    ss_err_t *err);
int ss_dnn_pool_new(const ss_dnn_pool_desc_t *d, ss_dnn_prim_t **out,
                    ss_err_t *err);
int ss_dnn_softmax_new(const ss_dnn_softmax_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err);
int ss_dnn_layernorm_new(const ss_dnn_layernorm_desc_t *d,
                         ss_dnn_prim_t **out, ss_err_t *err);
int ss_dnn_eltwise_new(const ss_dnn_eltwise_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err);
int ss_dnn_binary_new(const ss_dnn_binary_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);
int ss_dnn_reorder_new(const ss_dnn_reorder_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err);

/* Concat of n run-time inputs along axis 1 (channels) of 3-D to 5-D
 * f32/bf16 tensors, each read in its own layout, dst written in
 * dst_layout (dnnl_concat.c).  oneDNN copies each input into its channel
 * range of dst: one pass, no reorder around it, when the layouts agree;
 * an input in another layout, or a blocked dst at a channel offset that
 * is no multiple of 16, goes through a reorder into its part of dst.
 * SS_EUNSUPP where oneDNN has no way.  [any] */
#define SS_DNN_CONCAT_MAX 16
typedef struct ss_dnn_concat_desc {
    ss_dtype_t dtype;
    int ndim, n;
    int64_t dims[SS_DNN_CONCAT_MAX][5];     /* input i's */
    ss_dnn_layout_t src_layout[SS_DNN_CONCAT_MAX], dst_layout;
} ss_dnn_concat_desc_t;

int ss_dnn_concat_new(const ss_dnn_concat_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);

void ss_dnn_prim_free(ss_dnn_prim_t *p);

/* Training (dnnl_train.c): a convolution whose operands are all run-time
 * and dense (d->w, d->bias, post-ops and layouts must be unset; dtype F32,
 * or BF16: the two operands a pass reads are bf16, what it writes f32
 * unless d->out_dtype is BF16: then FWD's dst and BWD_DATA's diff_src
 * are bf16 too, and BWD_WEIGHTS still writes f32):
 *   FWD           in[0] src, in[1] weights, in[2] bias when bias; out dst
 *   BWD_DATA      in[0] diff_dst, in[1] weights; out diff_src
 *   BWD_WEIGHTS   in[0] src, in[1] diff_dst; out diff_weights
 * Weights are [OC, IC/group, KH, KW].  [any] */
typedef enum {
    SS_DNN_CONV_FWD = 0,
    SS_DNN_CONV_BWD_DATA,
    SS_DNN_CONV_BWD_WEIGHTS
} ss_dnn_conv_pass_t;

int ss_dnn_conv_train_new(const ss_dnn_conv_desc_t *d,
                          ss_dnn_conv_pass_t pass, int bias,
                          ss_dnn_prim_t **out, ss_err_t *err);
/* The activation layouts a training convolution of d runs fastest in:
 * oneDNN's forward-training primitive is asked with format any for src,
 * weights and dst, and *src, *dst are its choices when they are PLAIN,
 * BLOCKED or NHWC, else (channels padded to a block, blocks of 8) the
 * nearest: BLOCKED where C % 16 == 0, NHWC otherwise.  d->dtype as for
 * ss_dnn_conv_train_new; layouts in d are ignored.  [any] */
int ss_dnn_conv_train_pick(const ss_dnn_conv_desc_t *d,
                           ss_dnn_layout_t *src, ss_dnn_layout_t *dst,
                           ss_err_t *err);
/* A pass of ss_dnn_conv_train_new with the activations in
 * d->src_layout / d->dst_layout (the forward's src and dst; the
 * backward's diff_src and diff_dst take the same) and the weights in the
 * layout the primitive picks (format any):
 *   FWD           in[0] src, in[1] weights (w_bytes, prim's layout),
 *                 in[2] bias when bias; out dst
 *   BWD_DATA      in[0] diff_dst, in[1] weights (prim's layout); out
 *                 diff_src
 *   BWD_WEIGHTS   in[0] src, in[1] diff_dst; out diff_weights (prim's
 *                 layout)
 * w_reorder converts: FWD, BWD_DATA from dense f32 [OC, IC/G, KH, KW]
 * to the prim's weights (bf16 when w_bf16); BWD_WEIGHTS from the prim's
 * diff weights (f32) to dense f32, adding to what is there when acc. */
typedef struct ss_dnn_conv_blk {
    ss_dnn_prim_t *prim;        /* new */
    ss_dnn_prim_t *w_reorder;   /* new */
    size_t w_bytes;             /* of the prim-layout weights */
    int w_bf16;
} ss_dnn_conv_blk_t;

int ss_dnn_conv_train_blk_new(const ss_dnn_conv_desc_t *d,
                              ss_dnn_conv_pass_t pass, int bias, int acc,
                              ss_dnn_conv_blk_t *out, ss_err_t *err);
/* A matmul of two run-time operands (d->b_const and d->bias unset) that
 * writes f32 (or bf16 when d->out_dtype is BF16: the trainer's bf16
 * activations and their gradients) whatever d->dtype is: BF16 reads A and
 * B as bf16 (products in bf16, sums in f32).  Post-ops as
 * ss_dnn_matmul_new (BINARY tensors f32).  [any] */
int ss_dnn_matmul_train_new(const ss_dnn_matmul_desc_t *d,
                            ss_dnn_prim_t **out, ss_err_t *err);
/* 1 when oneDNN runs bf16 natively here (AVX512_BF16 or AMX, and
 * ONEDNN_MAX_CPU_ISA does not cap it below); *isa (may be NULL) is the
 * name of the ISA oneDNN runs at.  [any] */
int ss_dnn_bf16_native(const char **isa);
/* Softmax / LogSoftmax for training over d's dense dims: src and
 * diff_src d->dtype (F32, or BF16 when y_dtype is: attention's scores),
 * dst and diff_dst d->y_dtype (F32, or BF16: the trainer's bf16
 * activations).
 *   forward   in[0] src; out dst
 *   backward  in[0] diff_dst, in[1] the forward's dst; out diff_src
 * [any] */
int ss_dnn_softmax_train_new(const ss_dnn_softmax_desc_t *d, int bwd,
                             ss_dnn_prim_t **out, ss_err_t *err);

/* Bytes of scratch a run needs (0: pass NULL).  [any] */
size_t ss_dnn_prim_scratch_size(const ss_dnn_prim_t *p);
/* Training (dnnl_train_nn.c): batch normalization with batch statistics
 * of a 4-D [N,C,H,W] activation in layout (scale and shift per channel,
 * f32; dtype F32 or BF16 for the activations and their gradients).
 *   forward   in[0] src, in[1] scale, in[2] shift; in[3] mean and in[4]
 *             variance (biased) are WRITTEN; out dst
 *   backward  in[0] diff_dst, in[1] src, in[2] mean, in[3] variance,
 *             in[4] scale, in[5] shift; in[6] diff_scale and in[7]
 *             diff_shift are WRITTEN; out diff_src
 * [any] */
typedef struct ss_dnn_bnorm_train_desc {
    ss_dtype_t dtype;
    int64_t n, c, h, w;
    ss_dnn_layout_t layout;
    float eps;
} ss_dnn_bnorm_train_desc_t;

int ss_dnn_bnorm_train_new(const ss_dnn_bnorm_train_desc_t *d, int bwd,
                           ss_dnn_prim_t **out, ss_err_t *err);
/* Pooling for training, d as for ss_dnn_pool_new (src, dst and the
 * diffs in d->layout).  *ws_bytes: the workspace max pooling's forward
 * WRITES to in[1] and its backward reads from in[1] (0 for average).
 *   forward   in[0] src (, in[1] workspace); out dst
 *   backward  in[0] diff_dst (, in[1] workspace); out diff_src
 * [any] */
int ss_dnn_pool_train_new(const ss_dnn_pool_desc_t *d, int bwd,
                          ss_dnn_prim_t **out, size_t *ws_bytes,
                          ss_err_t *err);
/* Element-wise backward of d (numel elements, any layout):
 * in[0] diff_dst, in[1] src; out diff_src.  [any] */
int ss_dnn_eltwise_bwd_new(const ss_dnn_eltwise_desc_t *d,
                           ss_dnn_prim_t **out, ss_err_t *err);

/* How many in[] pointers ss_dnn_run reads.  [any] */
int ss_dnn_prim_num_inputs(const ss_dnn_prim_t *p);
/* The in[] index of the residual a SUM post-op adds (a Linear's), which
 * may be out itself; -1 when none.  [any] */
int ss_dnn_prim_sum_input(const ss_dnn_prim_t *p);
/* The dst shape (dense, row-major); returns ndim.  [any] */
int ss_dnn_prim_dst_dims(const ss_dnn_prim_t *p, int64_t dims[SS_DNN_MAX_DIMS]);
/* Bytes of packed constants the object owns (weights, bias...).  [any] */
size_t ss_dnn_prim_const_bytes(const ss_dnn_prim_t *p);
/* The layout p reads in[i] in (i >= 0) or writes its dst in (i == -1):
 * BLOCKED for an nChw16c argument, NHWC for a channels-last one that is
 * not also dense NCHW (C or H*W of 1), PLAIN for anything else, including
 * a strided view of a dense tensor and an index p does not read.  3- and
 * 5-D arguments only of an object made with a layout (conv, pooling,
 * binary, a reorder between layouts): a 3-D Transpose's strided reorder
 * (plan_fuse_move.c) reads a channels-last-looking source.  [any] */
ss_dnn_layout_t ss_dnn_prim_layout(const ss_dnn_prim_t *p, int i);
/* The oneDNN implementation chosen, e.g. "brgemm:avx512_core" (borrowed,
 * lives as long as p), for logs and benchmarks.  [any] */
const char *ss_dnn_prim_impl(const ss_dnn_prim_t *p);

/* Runs p once, synchronously.  See the top of this file for in/out.
 * [worker] on the thread that owns s. */
int ss_dnn_run(const ss_dnn_prim_t *p, ss_dnn_stream_t *s,
               const void *const *in, void *out, void *scratch,
               ss_err_t *err);

#endif
