/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NonMaxSuppression, as a plain C reference kernel.
 *
 * DESIGN.  Per batch and class: the boxes scoring above score_threshold,
 * best first (ties to the lower index), are taken greedily; a box is
 * dropped when its IoU with one already taken exceeds iou_threshold;
 * at most max_output_boxes_per_class are taken.  Boxes are corners
 * (center_point_box 0, in either order) or centre and size (1).  The
 * output, [selected, 3] of (batch, class, box), has as many rows as the
 * data selects, so every input must be a constant when the plan is
 * compiled: infer runs the selection to size it, run repeats it.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

typedef struct {
    double s;
    int64_t i;
} cand_t;

static int
by_score(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;

    if (a->s != b->s)
        return a->s > b->s ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static void
corners(const ss_tensor_t *bx, int64_t k, bool center, double *c)
{
    double v[4];

    for (int j = 0; j < 4; j++)
        v[j] = ss__dyn_get(bx->data, bx->dtype, k * 4 + j);
    if (center) {       /* x_c, y_c, w, h -> y1, x1, y2, x2 */
        c[0] = v[1] - v[3] / 2;
        c[1] = v[0] - v[2] / 2;
        c[2] = v[1] + v[3] / 2;
        c[3] = v[0] + v[2] / 2;
    } else {
        c[0] = fmin(v[0], v[2]);
        c[1] = fmin(v[1], v[3]);
        c[2] = fmax(v[0], v[2]);
        c[3] = fmax(v[1], v[3]);
    }
}

static double
iou(const double *a, const double *b)
{
    double ih = fmin(a[2], b[2]) - fmax(a[0], b[0]);
    double iw = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    double inter, uni;

    if (ih <= 0 || iw <= 0)
        return 0;
    inter = ih * iw;
    uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
          - inter;
    return uni > 0 ? inter / uni : 0;
}

/* Runs the selection; writes rows to sel (when not NULL); returns the row
 * count or a negative code. */
static int64_t
nms(const ss_node_t *n, const ss_tensor_t *const *in, int64_t *sel,
    ss_err_t *err)
{
    const ss_tensor_t *bx = in[0], *sc = in[1];
    bool center = ss__attr_int(n, "center_point_box", 0) != 0;
    int64_t B = bx->dims[0], N = bx->dims[1], C = sc->dims[1], rows = 0;
    int64_t maxk = 0;
    double iou_t = 0, score_t = -INFINITY;
    bool has_score = false;
    cand_t *cand = NULL;
    int64_t *taken = NULL;
    double *box = NULL;
    int rc;

    if (ss__ops_has_input(n, in, 2)) {
        double v;

        if ((rc = ss__ops_read_scalar(n, in[2], "max_output_boxes_per_class",
                                      &v, err)) < 0)
            return rc;
        maxk = v > 0 ? (int64_t)fmin(v, 1e12) : 0;
    }
    if (ss__ops_has_input(n, in, 3)
        && (rc = ss__ops_read_scalar(n, in[3], "iou_threshold", &iou_t,
                                     err)) < 0)
        return rc;
    if (ss__ops_has_input(n, in, 4)) {
        if ((rc = ss__ops_read_scalar(n, in[4], "score_threshold", &score_t,
                                      err)) < 0)
            return rc;
        has_score = true;
    }
    cand = ss_malloc(sizeof(*cand) * (size_t)(N + 1));
    taken = ss_malloc(sizeof(*taken) * (size_t)(N + 1));
    box = ss_malloc(sizeof(*box) * 4 * (size_t)(N + 1));
    if (cand == NULL || taken == NULL || box == NULL) {
        rows = ss_err_set(err, SS_ENOMEM, "no memory for NonMaxSuppression");
        goto done;
    }
    for (int64_t b = 0; b < B; b++) {
        for (int64_t k = 0; k < N; k++)
            corners(bx, b * N + k, center, &box[4 * k]);
        for (int64_t c = 0; c < C; c++) {
            int64_t nc = 0, nt = 0;

            for (int64_t k = 0; k < N && maxk > 0; k++) {
                double s = ss__dyn_get(sc->data, sc->dtype,
                                       (b * C + c) * N + k);

                if (!has_score || s > score_t)
                    cand[nc++] = (cand_t){ s, k };
            }
            qsort(cand, (size_t)nc, sizeof(*cand), by_score);
            for (int64_t q = 0; q < nc && nt < maxk; q++) {
                bool keep = true;

                for (int64_t t = 0; t < nt && keep; t++)
                    keep = iou(&box[4 * cand[q].i], &box[4 * taken[t]])
                           <= iou_t;
                if (!keep)
                    continue;
                taken[nt++] = cand[q].i;
                if (sel != NULL) {
                    sel[3 * rows] = b;
                    sel[3 * rows + 1] = c;
                    sel[3 * rows + 2] = cand[q].i;
                }
                rows++;
            }
        }
    }
done:
    ss_free(cand);
    ss_free(taken);
    ss_free(box);
    return rows;
}

static int
infer_nms(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[2];
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (in[0]->ndim != 3 || in[0]->dims[2] != 4 || in[1]->ndim != 3
        || in[1]->dims[0] != in[0]->dims[0]
        || in[1]->dims[2] != in[0]->dims[1])
        return ss__ops_fail(err, n, "boxes must be [B, N, 4] and scores "
                            "[B, C, N]");
    if (!ss__dyn_is_float(in[0]->dtype) || !ss__dyn_is_float(in[1]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "boxes and scores must be "
                             "floats");
    for (int i = 0; i < 5 && i < n->n_inputs; i++)
        if (ss__ops_has_input(n, in, i) && in[i]->data == NULL)
            return ss__ops_failc(err, SS_EUNSUPP, n, "the selection decides "
                                 "the output's shape: input %d must be a "
                                 "constant known when the plan is compiled",
                                 i);
    if ((dims[0] = nms(n, in, NULL, err)) < 0)
        return (int)dims[0];
    dims[1] = 3;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 2, dims, err);
}

static int
run_nms(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    int64_t rows;

    (void)opset;
    if ((rows = nms(n, in, NULL, err)) < 0)
        return (int)rows;
    if (rows != out[0].dims[0])
        return ss__ops_fail(err, n, "selected %lld boxes, planned for %lld",
                            (long long)rows, (long long)out[0].dims[0]);
    rows = nms(n, in, out[0].data, err);
    return rows < 0 ? (int)rows : 0;
}

const ss_op_t ss__ops_nms[] = {
    { "NonMaxSuppression", infer_nms, run_nms },
    { NULL, NULL, NULL }
};
