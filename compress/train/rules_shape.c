/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of the ops that move elements without arithmetic:
 * Concat, Slice, Pad (index maps), Transpose, Gather.  Conventions:
 * rules.c.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- Concat, Slice: index maps ------------------------------------------ */

/*
 * Concat and Slice move elements without arithmetic, so their backward
 * is a gather or scatter through an index map, and the map is made once,
 * at build time, by running the op's own reference kernel on int64
 * element ids in place of the data: whatever the engine's Slice does with
 * negative, clamped or stepped ranges, the map does too, with no second
 * reading of the attributes to keep in line.
 */

/* Runs node n's reference kernel with input k replaced by ids (and
 * every other input as the graph has it, constant or a same-shaped id
 * tensor when it is the data of another Concat input, or left out when
 * bit k of omit is set).  Ids start at base: input i's run from base +
 * the numel of the inputs before it.  *ys gets the output's ids
 * (ss_free), numel(y) of them. */
static int
run_ids(ss__tb_t *b, const ss_node_t *n, int n_data, int64_t base,
        unsigned omit, int64_t **ys, ss_err_t *err)
{
    const ss_op_t *op = ss__op_find(n->op_type);
    ss_tensor_t in[SS__STEP_IN], out;
    const ss_tensor_t *inp[SS__STEP_IN];
    const ss__tv_t *yv = V(b, ss__tb_out(b, n, 0));
    int k, rc = 0;

    *ys = NULL;
    if (op == NULL || n->n_inputs > SS__STEP_IN)
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' (%s): no "
                          "index map", label(n), n->op_type);
    memset(in, 0, sizeof(in));
    for (k = 0; k < n->n_inputs; k++) {
        int v = ss__tb_in(b, n, k);
        const ss__tv_t *xv;

        inp[k] = NULL;
        if (v < 0 || (omit & (1u << k)))
            continue;
        xv = V(b, v);
        in[k].dtype = xv->dtype;
        in[k].ndim = xv->ndim;
        memcpy(in[k].dims, xv->dims, sizeof(in[k].dims));
        inp[k] = &in[k];
        if (k < n_data) {
            int64_t *id = ss_malloc((size_t)(xv->numel ? xv->numel : 1) *
                                    sizeof(int64_t));

            if (id == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for an index "
                                "map");
                goto done;
            }
            for (int64_t i = 0; i < xv->numel; i++)
                id[i] = base + i;
            base += xv->numel;
            in[k].dtype = SS_DTYPE_I64;
            in[k].data = id;
        } else if (xv->kind == SS__TV_CONST) {
            in[k].data = xv->cdata->data;
        } else {
            rc = ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s': input %d "
                            "is computed at run time, not a constant",
                            n->op_type, label(n), k);
            goto done;
        }
    }
    memset(&out, 0, sizeof(out));
    out.dtype = SS_DTYPE_I64;
    out.ndim = yv->ndim;
    memcpy(out.dims, yv->dims, sizeof(out.dims));
    if ((out.data = ss_malloc((size_t)(yv->numel ? yv->numel : 1) *
                              sizeof(int64_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for an index map");
        goto done;
    }
    if ((rc = op->run(n, b->g->opset, inp, &out, err)) < 0) {
        ss_free(out.data);
        goto done;
    }
    *ys = out.data;
done:
    for (k = 0; k < n_data && k < n->n_inputs; k++)
        if (inp[k] != NULL)
            ss_free(in[k].data);
    return rc;
}

/* out (+)= in through map (aux, taken): gather out[j] = in[map[j]]
 * (scatter 0), or over a zeroed out scatter out[map[i]] = in[i] (1), or
 * out[map[i]] += in[i] where map[i] >= 0 (2: a map that may repeat or
 * skip). */
static int
emit_index(ss__tb_t *b, const ss_node_t *n, int scatter, int64_t *map,
           int in, int out, int acc, ss_err_t *err)
{
    ss__step_t s;

    ss__r_dx_step(&s, ss__k_index, scatter ? "scatter" : "gather", n, in,
                  out, acc);
    s.aux = map;
    s.op = scatter;
    return ss__step_add(b, &s, err);
}

int
ss__bwd_concat(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int y = ss__tb_out(b, n, 0), gy = ss__tb_grad_have(b, y);
    int64_t *ys = NULL, base = 0, ny = V(b, y)->numel;
    int k, rc = 0;

    if (gy < 0)
        return 0;
    if ((rc = run_ids(b, n, n->n_inputs, 0, 0, &ys, err)) < 0)
        return rc;
    for (k = 0; k < n->n_inputs; k++) {
        int x = ss__tb_in(b, n, k), gx, acc;
        int64_t nx = V(b, x)->numel, *map;

        if (!ss__tb_needs(b, x)) {
            base += nx;
            continue;
        }
        if ((map = ss_malloc((size_t)(nx ? nx : 1) * sizeof(*map))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for an index map");
            break;
        }
        /* input k's ids sit somewhere in y: invert */
        for (int64_t o = 0; o < ny; o++)
            if (ys[o] >= base && ys[o] < base + nx)
                map[ys[o] - base] = o;
        base += nx;
        if ((gx = ss__tb_grad(b, x, &acc, err)) < 0) {
            ss_free(map);
            rc = gx;
            break;
        }
        if ((rc = emit_index(b, n, 0, map, gy, gx, acc, err)) < 0)
            break;
    }
    ss_free(ys);
    return rc;
}

int
ss__bwd_slice(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    int64_t *ys;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0 ||
        (rc = run_ids(b, n, 1, 0, 0, &ys, err)) < 0)
        return rc;
    return emit_index(b, n, 1, ys, gy, gx, acc, err);
}

/* Pad: dx sums dy over the outputs that copy each input element (one
 * in constant mode, several at the borders in edge and reflect mode).
 * The map runs the engine's Pad on ids from 1 with the pad value left
 * at 0, so a padded output reads id 0: no input.  (Before opset 11 the
 * value is an attribute, which would read as an id: refused unless 0.) */
int
ss__bwd_pad(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    int64_t *ys, ny = V(b, ss__tb_out(b, n, 0))->numel;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if (b->g->opset < 11 && ss__attr_float(n, "value", 0) != 0)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Pad '%s' with a "
                          "value attribute of %g (opset %d)", label(n),
                          ss__attr_float(n, "value", 0), b->g->opset);
    if ((rc = run_ids(b, n, 1, 1, 1u << 2, &ys, err)) < 0)
        return rc;
    for (int64_t i = 0; i < ny; i++)
        ys[i] -= 1;
    return emit_index(b, n, 2, ys, gy, gx, acc, err);
}

/* ---- Transpose ---------------------------------------------------------- */

/* aux for k_transpose: int64 [0] nd, [1..8] in dims, [9..16] perm */
static int
transpose_step(ss__tb_t *b, const ss_node_t *n, int x, const int64_t *perm,
               int y, int acc, ss_err_t *err)
{
    const ss__tv_t *xv = V(b, x);
    ss__step_t s;

    step_init(&s, ss__k_transpose, "Transpose", n);
    s.p[0] = xv->ndim;
    for (int i = 0; i < xv->ndim; i++) {
        s.p[1 + i] = xv->dims[i];
        s.p[9 + i] = perm[i];
    }
    s.n_in = 1;
    s.in[0] = x;
    s.n_out = 1;
    s.out[0] = y;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}

static int
read_perm(ss__tb_t *b, const ss_node_t *n, int r, int64_t *perm,
          ss_err_t *err)
{
    const int64_t *pv;
    int np = ss__attr_ints(n, "perm", &pv);

    if (r > 8)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Transpose '%s' of rank "
                          "%d", label(n), r);
    for (int i = 0; i < r; i++)
        perm[i] = np < 0 ? r - 1 - i : pv[i];
    (void)b;
    return 0;
}

int
ss__fwd_transpose(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);
    int64_t perm[8];
    int rc;

    if ((rc = read_perm(b, n, V(b, x)->ndim, perm, err)) < 0)
        return rc;
    if (V(b, x)->act16)         /* rules.c: bf16 through shape ops */
        ss__tv_set_act16(b, ss__tb_out(b, n, 0));
    return transpose_step(b, n, x, perm, ss__tb_out(b, n, 0), 0, err);
}

int
ss__bwd_transpose(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, r = V(b, ss__tb_in(b, n, 0))->ndim, rc;
    int64_t perm[8], inv[8];

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if ((rc = read_perm(b, n, r, perm, err)) < 0)
        return rc;
    for (int i = 0; i < r; i++)
        inv[perm[i]] = i;
    return transpose_step(b, n, gy, inv, gx, acc, err);
}

/* ---- Gather ----------------------------------------------------------- */

/* p: [0] outer, [1] the axis' length, [2] inner, [3] indices */
static int
gather_geom(ss__tb_t *b, const ss_node_t *n, int64_t *p, ss_err_t *err)
{
    const ss__tv_t *xv = V(b, ss__tb_in(b, n, 0));
    int64_t axis = ss__attr_int(n, "axis", 0);

    if (axis < 0)
        axis += xv->ndim;
    if (axis < 0 || axis >= xv->ndim)
        return ss_err_set(err, SS_EINVAL, "trainer: Gather '%s': axis out "
                          "of range", label(n));
    p[0] = prod(xv->dims, 0, (int)axis);
    p[1] = xv->dims[axis];
    p[2] = prod(xv->dims, (int)axis + 1, xv->ndim);
    p[3] = V(b, ss__tb_in(b, n, 1))->numel;
    return 0;
}

/* The trainer's own Gather (any element size): a bf16 activation
 * passes through as it is (rules.c), which the engine's reference
 * kernel, typed by the graph, would not take. */
int
ss__fwd_gather(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc;

    step_init(&s, ss__k_gather, "Gather", n);
    s.n_in = 2;
    s.in[0] = ss__tb_in(b, n, 0);
    s.in[1] = ss__tb_in(b, n, 1);
    s.n_out = 1;
    s.out[0] = ss__tb_out(b, n, 0);
    if (s.in[1] < 0 || (V(b, s.in[1])->dtype != SS_DTYPE_I64 &&
                        V(b, s.in[1])->dtype != SS_DTYPE_I32))
        return ss_err_set(err, SS_EUNSUPP, "trainer: Gather '%s': indices "
                          "not int32 or int64", label(n));
    if ((rc = gather_geom(b, n, s.p, err)) < 0)
        return rc;
    if (V(b, s.in[0])->act16)
        ss__tv_set_act16(b, s.out[0]);
    return ss__step_add(b, &s, err);
}

int
ss__bwd_gather(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int ix = ss__tb_in(b, n, 1), gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    ss__r_dx_step(&s, ss__k_gather_bwd, "Gather'", n, gy, gx, acc);
    s.n_in = 2;
    s.in[1] = ix;
    if ((rc = gather_geom(b, n, s.p, err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}
