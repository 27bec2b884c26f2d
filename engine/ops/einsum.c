/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Einsum (opset 12): the reference kernel.
 *
 * DESIGN.  The equation is parsed once per call into labels: a..z, A..Z,
 * and one label per dim an ellipsis stands for (right-aligned, so the
 * ellipses of inputs of different ranks broadcast as numpy's do).  Every
 * label gets a size and, per input, a stride (the sum of the strides of
 * the input's dims it labels: a label repeated in one term walks a
 * diagonal; a broadcast dim of size 1 has stride 0).  The output's labels
 * are the explicit ones after "->", or else the ellipsis then the letters
 * that appear once, in ASCII order (numpy's implicit mode).  The kernel
 * then walks every output index and, inside it, every combination of the
 * contracted labels, multiplying the inputs' elements and summing in
 * double (integers in int64, wrapping).  Plain loops: Einsum in the
 * models this engine serves is a small contraction, and correctness is
 * what the node suite checks; a model that uses it for a big matmul runs
 * slowly, not wrongly.  The product of all label sizes is capped
 * (MAX_WORK) so a hostile equation cannot spin for hours.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"
#include "engine/ops/ops.h"

#include <string.h>

#define MAX_IN 8
#define N_LETTERS 52
#define MAX_LABELS (N_LETTERS + SS_MAX_DIMS)
#define MAX_WORK ((int64_t)1 << 32)

typedef struct {
    int n_in;
    int n_used, used[MAX_LABELS];   /* labels in use, out ones first */
    int n_out;                      /* the first n_out of used */
    int64_t size[MAX_LABELS];
    int64_t stride[MAX_IN][MAX_LABELS];
    int64_t out_dims[SS_MAX_DIMS];
} ein_t;

static int
letter(char c)
{
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= 'A' && c <= 'Z')
        return 26 + (c - 'A');
    return -1;
}

/* One term's labels into lab[] (an ellipsis as -2), their count into
 * *cnt, whether it has an ellipsis into *ell. */
static int
parse_term(const ss_node_t *n, const char *s, size_t len, int *lab, int *cnt,
           bool *ell, ss_err_t *err)
{
    *cnt = 0;
    *ell = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ')
            continue;
        if (s[i] == '.') {
            if (*ell || i + 2 >= len || s[i + 1] != '.' ||
                s[i + 2] != '.')
                return ss__ops_fail(err, n, "bad ellipsis in the equation");
            *ell = true;
            i += 2;
            if (*cnt >= SS_MAX_DIMS)
                return ss__ops_fail(err, n, "a term has too many labels");
            lab[(*cnt)++] = -2;
            continue;
        }
        if (letter(s[i]) < 0)
            return ss__ops_fail(err, n, "bad character '%c' in the "
                                "equation", s[i]);
        if (*cnt >= SS_MAX_DIMS)
            return ss__ops_fail(err, n, "a term has too many labels");
        lab[(*cnt)++] = letter(s[i]);
    }
    return 0;
}

static int
plan(const ss_node_t *n, const ss_tensor_t *const *in, ein_t *e,
     ss_err_t *err)
{
    const char *eq = ss__attr_string(n, "equation", NULL), *arrow, *p;
    int lab[MAX_IN][SS_MAX_DIMS], cnt[MAX_IN], ell_rank[MAX_IN], E = 0;
    int olab[SS_MAX_DIMS], ocnt = 0, seen[MAX_LABELS] = { 0 };
    bool ell[MAX_IN], oell = false, in_out[MAX_LABELS] = { false };
    int64_t work = 1;
    int rc, t = 0;

    memset(e, 0, sizeof(*e));
    if (eq == NULL)
        return ss__ops_fail(err, n, "no equation");
    e->n_in = n->n_inputs;
    if (e->n_in < 1 || e->n_in > MAX_IN)
        return ss__ops_failc(err, SS_EUNSUPP, n, "%d inputs (1 to %d are "
                             "supported)", e->n_in, MAX_IN);
    if ((rc = ss__ops_check_inputs(n, in, e->n_in, err)) < 0)
        return rc;
    arrow = strstr(eq, "->");
    /* the input terms */
    for (p = eq;; t++) {
        const char *end = p;

        while (*end != '\0' && *end != ',' && end != arrow)
            end++;
        if (t >= e->n_in)
            return ss__ops_fail(err, n, "the equation has more terms than "
                                "the %d inputs", e->n_in);
        if ((rc = parse_term(n, p, (size_t)(end - p), lab[t], &cnt[t],
                             &ell[t], err)) < 0)
            return rc;
        if (*end != ',')
            break;
        p = end + 1;
    }
    if (t + 1 != e->n_in)
        return ss__ops_fail(err, n, "the equation has %d terms for %d "
                            "inputs", t + 1, e->n_in);
    for (int i = 0; i < e->n_in; i++) {
        int letters = cnt[i] - (ell[i] ? 1 : 0);

        if (in[i]->dtype != in[0]->dtype)
            return ss__ops_fail(err, n, "inputs of different types");
        if (ell[i] ? in[i]->ndim < letters : in[i]->ndim != letters)
            return ss__ops_fail(err, n, "input %d has rank %d for %d "
                                "labels", i, in[i]->ndim, letters);
        ell_rank[i] = ell[i] ? in[i]->ndim - letters : 0;
        if (ell_rank[i] > E)
            E = ell_rank[i];
    }
    for (int l = 0; l < MAX_LABELS; l++)
        e->size[l] = -1;
    /* sizes: letters must agree; ellipsis dims broadcast */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_in; i++) {
            int64_t st = 1;

            for (int d = in[i]->ndim - 1, k = cnt[i] - 1; d >= 0; k--) {
                int64_t sz = in[i]->dims[d];

                if (lab[i][k] == -2) {
                    /* the ellipsis: its dims, right to left */
                    for (int j = ell_rank[i] - 1; j >= 0; j--, d--) {
                        int l = N_LETTERS + (E - ell_rank[i]) + j;

                        sz = in[i]->dims[d];
                        if (pass == 0) {
                            if (e->size[l] < 0 || e->size[l] == 1)
                                e->size[l] = sz;
                            else if (sz != 1 && sz != e->size[l])
                                return ss__ops_fail(err, n, "ellipsis dims "
                                                    "do not broadcast");
                            seen[l]++;
                        } else if (!(sz == 1 && e->size[l] != 1)) {
                            e->stride[i][l] += st;
                        }
                        st *= sz;
                    }
                    continue;
                }
                if (pass == 0) {
                    if (e->size[lab[i][k]] >= 0 && e->size[lab[i][k]] != sz)
                        return ss__ops_fail(err, n, "label '%c' has sizes "
                                            "%lld and %lld",
                                            lab[i][k] < 26
                                                ? 'a' + lab[i][k]
                                                : 'A' + lab[i][k] - 26,
                                            (long long)e->size[lab[i][k]],
                                            (long long)sz);
                    e->size[lab[i][k]] = sz;
                    seen[lab[i][k]]++;
                } else {
                    e->stride[i][lab[i][k]] += st;
                }
                st *= sz;
                d--;
            }
        }
    }
    /* the output's labels */
    if (arrow != NULL) {
        const char *o = arrow + 2;

        if ((rc = parse_term(n, o, strlen(o), olab, &ocnt, &oell, err)) < 0)
            return rc;
        for (int k = 0; k < ocnt; k++) {
            if (olab[k] == -2) {
                for (int j = 0; j < E; j++) {
                    if (e->n_used >= SS_MAX_DIMS)
                        return ss__ops_fail(err, n, "output rank over %d",
                                            SS_MAX_DIMS);
                    e->used[e->n_used++] = N_LETTERS + j;
                    in_out[N_LETTERS + j] = true;
                }
                continue;
            }
            if (seen[olab[k]] == 0 || in_out[olab[k]])
                return ss__ops_fail(err, n, "output label not in the "
                                    "inputs, or repeated");
            if (e->n_used >= SS_MAX_DIMS)
                return ss__ops_fail(err, n, "output rank over %d",
                                    SS_MAX_DIMS);
            e->used[e->n_used++] = olab[k];
            in_out[olab[k]] = true;
        }
    } else {
        static const int order[N_LETTERS] = {
            26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41,
            42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 0, 1, 2, 3, 4, 5, 6, 7,
            8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25
        };

        for (int j = 0; j < E; j++) {
            e->used[e->n_used++] = N_LETTERS + j;
            in_out[N_LETTERS + j] = true;
        }
        for (int k = 0; k < N_LETTERS; k++)
            if (seen[order[k]] == 1) {
                if (e->n_used >= SS_MAX_DIMS)
                    return ss__ops_fail(err, n, "output rank over %d",
                                        SS_MAX_DIMS);
                e->used[e->n_used++] = order[k];
                in_out[order[k]] = true;
            }
    }
    e->n_out = e->n_used;
    for (int k = 0; k < e->n_out; k++)
        e->out_dims[k] = e->size[e->used[k]];
    for (int l = 0; l < MAX_LABELS; l++)
        if (seen[l] > 0 && !in_out[l])
            e->used[e->n_used++] = l;
    for (int k = 0; k < e->n_used; k++) {
        int64_t sz = e->size[e->used[k]];

        if (sz == 0)
            work = 0;
        else if (work > 0 && (sz > MAX_WORK || (work *= sz) > MAX_WORK))
            return ss__ops_failc(err, SS_EUNSUPP, n, "more than 2^32 "
                                 "products to sum");
    }
    return 0;
}

static int
infer_einsum(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    ein_t e;
    ss_dtype_t dt;
    int rc;

    (void)opset;
    if ((rc = plan(n, in, &e, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    if (!ss__dyn_is_float(dt) && !ss__ops_is_int(dt))
        return ss__ops_failc(err, SS_EUNSUPP, n, "Einsum on %s is not "
                             "supported", ss__ops_dtype_name(dt));
    return ss__ops_set_out(n, &out[0], dt, e.n_out, e.out_dims, err);
}

static int
run_einsum(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t idx[MAX_LABELS] = { 0 }, n_outer = 1, n_inner = 1;
    ss_dtype_t dt = in[0]->dtype;
    bool isf = ss__dyn_is_float(dt);
    ein_t e;
    int rc;

    (void)opset;
    if ((rc = plan(n, in, &e, err)) < 0)
        return rc;
    for (int k = 0; k < e.n_out; k++)
        n_outer *= e.size[e.used[k]];
    for (int k = e.n_out; k < e.n_used; k++)
        n_inner *= e.size[e.used[k]];
    for (int64_t o = 0; o < n_outer; o++) {
        double acc = 0;
        int64_t iacc = 0;

        /* o in row-major order over the out labels */
        for (int64_t k = e.n_out - 1, q = o; k >= 0; k--) {
            idx[k] = q % e.size[e.used[k]];
            q /= e.size[e.used[k]];
        }
        for (int k = e.n_out; k < e.n_used; k++)
            idx[k] = 0;
        for (int64_t r = 0; r < n_inner; r++) {
            double prod = 1;
            uint64_t iprod = 1;

            for (int i = 0; i < e.n_in; i++) {
                int64_t off = 0;

                for (int k = 0; k < e.n_used; k++)
                    off += idx[k] * e.stride[i][e.used[k]];
                if (isf)
                    prod *= ss__dyn_get(in[i]->data, dt, off);
                else
                    iprod *= (uint64_t)ss__dyn_geti(in[i]->data, dt, off);
            }
            acc += prod;
            iacc = (int64_t)((uint64_t)iacc + iprod);
            for (int k = e.n_used - 1; k >= e.n_out; k--) {
                if (++idx[k] < e.size[e.used[k]])
                    break;
                idx[k] = 0;
            }
        }
        if (isf)
            ss__dyn_set(out[0].data, dt, o, acc);
        else
            ss__dyn_seti(out[0].data, dt, o, iacc);
    }
    return 0;
}

const ss_op_t ss__ops_einsum[] = {
    { "Einsum", infer_einsum, run_einsum },
    { NULL, NULL, NULL }
};
