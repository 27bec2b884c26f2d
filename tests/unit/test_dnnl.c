/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oneDNN layer: inner product (Linear) and matmul against naive loops,
 * with post-op combinations; packed weights on huge pages; two threads
 * sharing one object; errors; and,
 * as diagnostics only, the speed of a 256x1024x1024 Linear.
 * Tolerance: |got - want| <= 1e-5 + 1e-4 |want| per element (f32).
 */

#include "config.h"

#include <pthread.h>
#include <time.h>

#include "common/clock.h"
#include "engine/dnnl/internal.h"
#include "tests/unit/test_dnnl.h"

/* dst[M,N] = src[M,K] x W + bias; W is [N,K] when w_nk, else [K,N]. */
static void
ref_linear(const float *src, const float *w, int w_nk, const float *bias,
           float *dst, int64_t m, int64_t k, int64_t n)
{
    int64_t i, j, l;

    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double acc = bias ? bias[j] : 0.0;

            for (l = 0; l < k; l++)
                acc += (double)src[i * k + l] *
                       (w_nk ? w[j * k + l] : w[l * n + j]);
            dst[i * n + j] = (float)acc;
        }
}

static void
linear_case(const char *name, int64_t m, int64_t k, int64_t n, int w_nk,
            int with_bias, const ss_dnn_postops_t *po)
{
    ss_dnn_linear_desc_t d = { 0 };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    float *src = rnd((size_t)(m * k)), *w = rnd((size_t)(k * n));
    float *bias = rnd((size_t)n), *out = rnd((size_t)(m * n));
    float *want = zeros((size_t)(m * n)), *old = NULL;
    float *bin[SS_DNN_MAX_POST];
    const void *in[2 + SS_DNN_MAX_POST];
    int64_t dd[2] = { m, n };
    int i, nb = 0, sum = 0, rc;

    d.m = m;
    d.k = k;
    d.n = n;
    d.w = w;
    d.w_nk = w_nk;
    d.bias = with_bias ? bias : NULL;
    if (po)
        d.post = *po;
    in[0] = src;
    for (i = 0; i < d.post.n; i++)
        if (d.post.op[i].kind == SS_DNN_PO_BINARY) {
            bin[nb] = rnd(numel(d.post.op[i].ndim, d.post.op[i].dims));
            in[1 + nb] = bin[nb];
            nb++;
        }
    for (i = 0; i < d.post.n; i++)
        sum |= d.post.op[i].kind == SS_DNN_PO_SUM;
    old = rnd((size_t)(m * n));
    /* a Linear's SUM reads its residual from in[], after the binary
     * post-ops' tensors: copied into out first (out holds other bytes) */
    if (sum)
        in[1 + nb] = old;
    else
        memcpy(out, old, (size_t)(m * n) * sizeof(float));
    rc = ss_dnn_linear_new(&d, &p, &err);
    if (!ok(rc == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    is_int(ss_dnn_prim_num_inputs(p), 1 + nb + sum, "%s: inputs", name);
    is_int(ss_dnn_prim_sum_input(p), sum ? 1 + nb : -1, "%s: sum input",
           name);
    ref_linear(src, w, w_nk, d.bias, want, m, k, n);
    ref_post(want, 2, dd, &d.post, (const float *const *)bin, old);
    if (run(p, in, out) == 0)
        check_close(out, want, (size_t)(m * n), name);
    else
        ok(0, "%s: run", name);
    if (sum) {
        char nm[96];

        /* in place: the residual is out itself */
        snprintf(nm, sizeof(nm), "%s in place", name);
        memcpy(out, old, (size_t)(m * n) * sizeof(float));
        in[1 + nb] = out;
        if (run(p, in, out) == 0)
            check_close(out, want, (size_t)(m * n), nm);
        else
            ok(0, "%s: run", nm);
    }
done:
    ss_dnn_prim_free(p);
    for (i = 0; i < nb; i++)
        ss_free(bin[i]);
    ss_free(src);
    ss_free(w);
    ss_free(bias);
    ss_free(out);
    ss_free(want);
    ss_free(old);
}

static void
test_linear(void)
{
    ss_dnn_postops_t po = { 0 };
    int64_t same[2] = { 37, 29 }, row[1] = { 29 }, col[2] = { 37, 1 };

    linear_case("linear W[N,K] + bias", 37, 53, 29, 1, 1, NULL);
    linear_case("linear W[K,N], no bias", 37, 53, 29, 0, 0, NULL);
    linear_case("linear M=1", 1, 64, 48, 1, 1, NULL);

    po.n = 1;
    po.op[0] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    linear_case("linear + relu", 37, 53, 29, 1, 1, &po);
    po.op[0] = po_elt(SS_DNN_GELU_ERF, 0.f, 0.f);
    linear_case("linear + gelu(erf)", 37, 53, 29, 1, 1, &po);
    po.op[0] = po_elt(SS_DNN_GELU_TANH, 0.f, 0.f);
    linear_case("linear + gelu(tanh)", 37, 53, 29, 0, 1, &po);
    po.op[0] = po_bin(SS_DNN_ADD, 2, same);
    linear_case("linear + residual add", 37, 53, 29, 1, 1, &po);
    po.op[0] = (ss_dnn_postop_t){ .kind = SS_DNN_PO_SUM, .alpha = 0.5f };
    linear_case("linear + sum(0.5)", 37, 53, 29, 1, 1, &po);

    po.n = 3;
    po.op[0] = po_bin(SS_DNN_MUL, 1, row);
    po.op[1] = po_elt(SS_DNN_CLIP, -0.5f, 0.75f);
    po.op[2] = po_bin(SS_DNN_SUB, 2, col);
    linear_case("linear + mul[N] + clip + sub[M,1]", 37, 53, 29, 0, 1, &po);
    po.op[0] = po_elt(SS_DNN_LINEAR, 0.125f, 0.5f);
    po.op[1] = po_elt(SS_DNN_TANH, 0.f, 0.f);
    po.op[2] = po_bin(SS_DNN_ADD, 2, same);
    linear_case("linear + linear + tanh + add", 37, 53, 29, 1, 0, &po);
}

/* Naive batched matmul with numpy broadcasting and arbitrary strides. */
static void
ref_matmul(int nd, const int64_t *ad, const int64_t *as, const float *a,
           const int64_t *bd, const int64_t *bs, const float *b,
           const float *bias, const int64_t *dd, float *dst)
{
    size_t total = numel(nd, dd), i;
    int64_t M = dd[nd - 2], N = dd[nd - 1], K = ad[nd - 1];

    for (i = 0; i < total; i++) {
        int64_t idx[SS_DNN_MAX_DIMS], oa = 0, ob = 0, l;
        size_t r = i;
        double acc;
        int k;

        for (k = nd - 1; k >= 0; k--) {
            idx[k] = (int64_t)(r % (size_t)dd[k]);
            r /= (size_t)dd[k];
        }
        for (k = 0; k < nd - 2; k++) {
            oa += (ad[k] == 1 ? 0 : idx[k]) * as[k];
            ob += (bd[k] == 1 ? 0 : idx[k]) * bs[k];
        }
        acc = bias ? bias[idx[nd - 1]] : 0.0;
        for (l = 0; l < K; l++)
            acc += (double)a[oa + idx[nd - 2] * as[nd - 2] + l * as[nd - 1]] *
                   b[ob + l * bs[nd - 2] + idx[nd - 1] * bs[nd - 1]];
        dst[i] = (float)acc;
    }
    (void)M;
    (void)N;
}

static void
dense_strides(int nd, const int64_t *d, int64_t *s)
{
    int i;

    s[nd - 1] = 1;
    for (i = nd - 2; i >= 0; i--)
        s[i] = s[i + 1] * d[i + 1];
}

/* b_perm: when set, B is stored as the transpose of its last two dims
 * (like K of [..,T,D] read as [..,D,T]). */
static void
matmul_case(const char *name, int nd, const int64_t *ad, const int64_t *bd,
            int b_t, int b_const, int with_bias, const ss_dnn_postops_t *po)
{
    ss_dnn_matmul_desc_t d = { 0 };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    int64_t as[SS_DNN_MAX_DIMS], bs[SS_DNN_MAX_DIMS], dd[SS_DNN_MAX_DIMS];
    int64_t ddn;
    size_t na = numel(nd, ad), nb_ = numel(nd, bd), ndst;
    float *a = rnd(na), *b = rnd(nb_), *bias = rnd((size_t)bd[nd - 1]);
    float *out = NULL, *want = NULL, *bin[SS_DNN_MAX_POST];
    const void *in[2 + SS_DNN_MAX_POST];
    int i, nbin = 0, first, rc;

    d.ndim = nd;
    memcpy(d.a_dims, ad, (size_t)nd * sizeof(*ad));
    memcpy(d.b_dims, bd, (size_t)nd * sizeof(*bd));
    dense_strides(nd, ad, as);
    dense_strides(nd, bd, bs);
    if (b_t) {
        /* Stored as [..., N, K]: swap the last two strides. */
        bs[nd - 1] = bd[nd - 2];
        bs[nd - 2] = 1;
        d.b_strides = bs;
    }
    for (i = 0; i < nd - 2; i++)
        dd[i] = ad[i] > bd[i] ? ad[i] : bd[i];
    dd[nd - 2] = ad[nd - 2];
    dd[nd - 1] = bd[nd - 1];
    ndst = numel(nd, dd);
    out = rnd(ndst);
    want = zeros(ndst);
    d.b_const = b_const ? b : NULL;
    d.bias = with_bias ? bias : NULL;
    if (po)
        d.post = *po;
    in[0] = a;
    in[1] = b;
    first = b_const ? 1 : 2;
    for (i = 0; i < d.post.n; i++)
        if (d.post.op[i].kind == SS_DNN_PO_BINARY) {
            bin[nbin] = rnd(numel(d.post.op[i].ndim, d.post.op[i].dims));
            in[first + nbin] = bin[nbin];
            nbin++;
        }
    rc = ss_dnn_matmul_new(&d, &p, &err);
    if (!ok(rc == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    ddn = ss_dnn_prim_dst_dims(p, dd);
    is_int(ddn, nd, "%s: dst ndim", name);
    ref_matmul(nd, ad, as, a, bd, bs, b, d.bias, dd, want);
    ref_post(want, nd, dd, &d.post, (const float *const *)bin, NULL);
    if (run(p, in, out) == 0)
        check_close(out, want, ndst, name);
    else
        ok(0, "%s: run", name);
done:
    ss_dnn_prim_free(p);
    for (i = 0; i < nbin; i++)
        ss_free(bin[i]);
    ss_free(a);
    ss_free(b);
    ss_free(bias);
    ss_free(out);
    ss_free(want);
}

static void
test_matmul(void)
{
    ss_dnn_postops_t po = { 0 };
    int64_t a2[2] = { 19, 23 }, b2[2] = { 23, 17 };
    int64_t a3[3] = { 3, 11, 16 }, b3[3] = { 3, 16, 9 };
    int64_t a4[4] = { 2, 1, 5, 7 }, b4[4] = { 1, 3, 7, 4 };
    /* Attention: Q [B,H,T,D] x K^T, K stored [B,H,T,D]. */
    int64_t q[4] = { 2, 4, 10, 8 }, kt[4] = { 2, 4, 8, 10 };
    int64_t mask[4] = { 2, 1, 1, 10 };
    int64_t x3[3] = { 4, 6, 32 }, w3[3] = { 1, 32, 24 };
    int64_t res3[3] = { 4, 6, 24 };

    matmul_case("matmul 2D", 2, a2, b2, 0, 0, 0, NULL);
    matmul_case("matmul 3D batched", 3, a3, b3, 0, 0, 0, NULL);
    matmul_case("matmul 4D broadcast", 4, a4, b4, 0, 0, 0, NULL);
    po.n = 2;
    po.op[0] = po_elt(SS_DNN_LINEAR, 0.35355339f, 0.f);
    po.op[1] = po_bin(SS_DNN_ADD, 4, mask);
    matmul_case("matmul QK^T (strided B) * scale + mask", 4, q, kt, 1, 0, 0,
                &po);
    matmul_case("matmul const B 3D [B,T,K]x[K,N] + bias", 3, x3, w3, 0, 1, 1,
                NULL);
    po.n = 2;
    po.op[0] = po_elt(SS_DNN_GELU_ERF, 0.f, 0.f);
    po.op[1] = po_bin(SS_DNN_ADD, 3, res3);
    matmul_case("matmul const B^T + bias + gelu + residual", 3, x3, w3, 1, 1,
                1, &po);
}

static uint16_t
to_bf16(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float
from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;

    memcpy(&f, &u, 4);
    return f;
}

/* bf16 activations, f32 weights packed to bf16 at creation, f32 bias.
 * Tolerance is bf16's: 1e-2 relative + 2e-2 absolute for K = 64 sums. */
static void
test_linear_bf16(void)
{
    enum { M = 9, K = 64, N = 24 };
    ss_dnn_linear_desc_t d = { .dtype = SS_DTYPE_BF16, .m = M, .k = K,
                               .n = N, .w_nk = 1 };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    float *src = rnd(M * K), *w = rnd(N * K), *bias = rnd(N);
    float *want = zeros(M * N);
    uint16_t sb[M * K], db[M * N];
    const void *in[1] = { sb };
    int i, bad = 0;

    for (i = 0; i < M * K; i++) {
        sb[i] = to_bf16(src[i]);
        src[i] = from_bf16(sb[i]);
    }
    d.w = w;
    d.bias = bias;
    d.post.n = 1;
    d.post.op[0] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    ref_linear(src, w, 1, bias, want, M, K, N);
    ref_post(want, 2, (int64_t[]){ M, N }, &d.post, NULL, NULL);
    if (!ok(ss_dnn_linear_new(&d, &p, &err) == 0, "bf16 linear: create")) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    ok(run(p, in, db) == 0, "bf16 linear: run");
    for (i = 0; i < M * N; i++)
        bad += !(fabs(from_bf16(db[i]) - want[i]) <=
                 2e-2 + 1e-2 * fabs(want[i]));
    is_int(bad, 0, "bf16 linear + relu close to f32 (%s)",
           ss_dnn_prim_impl(p));
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(w);
    ss_free(bias);
    ss_free(want);
}

/* Objects built from the same weights share one packed copy (a plan per
 * batch size packs the same initializer).  Freeing one must leave the
 * other's weights alive (ASan sees a use after free otherwise), and new
 * bytes at the same address must be packed afresh, not served the old
 * copy. */
static void
test_shared_weights(void)
{
    enum { K = 64, N = 24 };
    ss_dnn_linear_desc_t d = { .k = K, .n = N, .w_nk = 1 };
    ss_dnn_prim_t *p1 = NULL, *p8 = NULL, *q1 = NULL;
    ss_err_t err = { 0 };
    float *src = rnd(8 * K), *w = rnd(N * K), *bias = rnd(N);
    float *want8 = zeros(8 * N), *want1 = zeros(N);
    float *out8 = zeros(8 * N), *out1 = zeros(N);
    const void *in[1] = { src };

    d.w = w;
    d.bias = bias;
    d.m = 1;
    if (!ok(ss_dnn_linear_new(&d, &p1, &err) == 0, "shared: create m=1"))
        goto done;
    d.m = 8;
    if (!ok(ss_dnn_linear_new(&d, &p8, &err) == 0, "shared: create m=8"))
        goto done;
    ref_linear(src, w, 1, bias, want8, 8, K, N);
    ss_dnn_prim_free(p1);
    p1 = NULL;
    ok(run(p8, in, out8) == 0, "shared: m=8 runs after m=1 is freed");
    check_close(out8, want8, 8 * N, "shared: m=8 still has its weights");
    /* Same address, new bytes: q1 must see them, p8 must not. */
    for (int i = 0; i < N * K; i++)
        w[i] = -w[i] + 0.25f;
    d.m = 1;
    if (!ok(ss_dnn_linear_new(&d, &q1, &err) == 0, "shared: create again"))
        goto done;
    ref_linear(src, w, 1, bias, want1, 1, K, N);
    ok(run(q1, in, out1) == 0, "shared: run the new object");
    check_close(out1, want1, N, "shared: changed bytes are packed afresh");
    ok(run(p8, in, out8) == 0, "shared: run the old object again");
    check_close(out8, want8, 8 * N, "shared: the old copy is unchanged");
done:
    if (err.msg[0])
        printf("#   %s\n", err.msg);
    ss_dnn_prim_free(p1);
    ss_dnn_prim_free(p8);
    ss_dnn_prim_free(q1);
    ss_free(src);
    ss_free(w);
    ss_free(bias);
    ss_free(want8);
    ss_free(want1);
    ss_free(out8);
    ss_free(out1);
}

/* Bytes of this process's mappings advised as huge pages (VmFlags "hg"
 * in /proc/self/smaps), or -1 when the file cannot be read. */
static long long
huge_advised(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    long long total = 0, size = 0;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Size: %lld kB", &size) == 1)
            continue;
        if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " hg") != NULL)
            total += size << 10;
    }
    fclose(f);
    return total;
}

/* Packed weights of 2 MB and more live on memory advised as transparent
 * huge pages (common/alloc.h: ss_aligned_alloc_huge): a 1024x1024 Linear
 * (4 MB packed) adds at least that much advised memory, and computes
 * what the naive loop does. */
static void
test_huge_weights(void)
{
    enum { M = 3, K = 1024, N = 1024 };
    ss_dnn_linear_desc_t d = { .m = M, .k = K, .n = N, .w_nk = 1 };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    float *src = rnd(M * K), *w = rnd(N * K), *want = zeros(M * N);
    float *out = zeros(M * N);
    const void *in[1] = { src };
    long long before = huge_advised(), after;
    FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char mode[128] = "";

    if (thp != NULL) {
        if (fgets(mode, sizeof(mode), thp) == NULL)
            mode[0] = '\0';
        fclose(thp);
    }
    d.w = w;
    if (!ok(ss_dnn_linear_new(&d, &p, &err) == 0, "huge: create"))
        goto done;
    after = huge_advised();
    if (before < 0 || strstr(mode, "[never]") != NULL || mode[0] == '\0')
        tap_diag("huge: no THP here (%s): advice not checked", mode);
    else
        ok(after - before >= (long long)K * N * 4, "huge: the packed 4 MB "
           "are advised as huge pages (%lld bytes more advised)",
           after - before);
    ref_linear(src, w, 1, NULL, want, M, K, N);
    ok(run(p, in, out) == 0, "huge: runs");
    check_close(out, want, M * N, "huge: 1024x1024 Linear");
done:
    if (err.msg[0])
        printf("#   %s\n", err.msg);
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(w);
    ss_free(want);
    ss_free(out);
}

/* Two threads run one object at once, each with its own stream and
 * scratch; both must reproduce the single-threaded result exactly. */
typedef struct worker {
    const ss_dnn_prim_t *p;
    const float *src;
    const float *want;
    size_t n;
    int iters;
    int mismatches;
    int rc;
} worker_t;

/* A Linear runs on oneDNN's matmul (its brgemm kernel 17-24% faster than
 * the inner product's at ViT-B/16's 1576 rows, dnnl_ops.c): the kernel
 * is the one a matmul of the same shapes picks, and it computes the
 * Linear, weights either way round, with bias and GELU, at a row count
 * and a width that fill no block (197 rows, N = 200 padded to 256). */
static void
test_linear_is_matmul(void)
{
    enum { M = 197, K = 96, N = 200 };
    ss_dnn_linear_desc_t d = { .m = M, .k = K, .n = N };
    ss_dnn_matmul_desc_t md = { .ndim = 2 };
    ss_dnn_prim_t *lin = NULL, *mm = NULL;
    ss_err_t err = { 0 };
    float *src = rnd(M * K), *w = rnd(N * K), *bias = rnd(N);
    float *want = zeros(M * N), *out = zeros(M * N);
    const void *in[1] = { src };

    d.w = w;
    d.bias = bias;
    d.post.n = 1;
    d.post.op[0] = po_elt(SS_DNN_GELU_ERF, 0.f, 0.f);
    md.a_dims[0] = M;
    md.a_dims[1] = K;
    md.b_dims[0] = K;
    md.b_dims[1] = N;
    md.b_const = w;
    for (int w_nk = 0; w_nk <= 1; w_nk++) {
        d.w_nk = w_nk;
        if (!ok(ss_dnn_linear_new(&d, &lin, &err) == 0 &&
                ss_dnn_matmul_new(&md, &mm, &err) == 0,
                "linear as matmul, W %s: create", w_nk ? "[N,K]" : "[K,N]"))
            break;
        ok(strcmp(ss_dnn_prim_impl(lin), ss_dnn_prim_impl(mm)) == 0,
           "linear W %s runs the matmul's kernel (%s; matmul %s)",
           w_nk ? "[N,K]" : "[K,N]", ss_dnn_prim_impl(lin),
           ss_dnn_prim_impl(mm));
        ref_linear(src, w, w_nk, bias, want, M, K, N);
        for (int i = 0; i < M * N; i++)
            want[i] = ref_eltwise(SS_DNN_GELU_ERF, want[i], 0.f, 0.f);
        if (ok(run(lin, in, out) == 0, "linear as matmul: run"))
            check_close(out, want, M * N, w_nk ? "linear as matmul, W [N,K]"
                                               : "linear as matmul, W [K,N]");
        ss_dnn_prim_free(lin);
        ss_dnn_prim_free(mm);
        lin = mm = NULL;
    }
    if (err.msg[0])
        printf("#   %s\n", err.msg);
    ss_dnn_prim_free(lin);
    ss_dnn_prim_free(mm);
    ss_free(src);
    ss_free(w);
    ss_free(bias);
    ss_free(want);
    ss_free(out);
}

/* A Linear src[m,k] x W[n,k]^T + bias, then eltwise alg. */
static int
linear_elt(int64_t m, int64_t k, int64_t n, const float *wt,
           const float *bias, int alg, ss_dnn_prim_t **out)
{
    ss_dnn_linear_desc_t d = { 0 };

    d.m = m;
    d.k = k;
    d.n = n;
    d.w = wt;
    d.w_nk = 1;
    d.bias = bias;
    d.post.n = 1;
    d.post.op[0] = po_elt(alg, 0.f, 0.f);
    return ss_dnn_linear_new(&d, out, NULL);
}

static void *
worker_main(void *arg)
{
    worker_t *w = arg;
    ss_dnn_stream_t *s = NULL;
    size_t sn = ss_dnn_prim_scratch_size(w->p);
    void *scratch = sn ? ss_aligned_alloc(sn) : NULL;
    float *out = ss_aligned_alloc(w->n * sizeof(float));
    const void *in[1] = { w->src };
    int i;

    if (out == NULL || (sn && scratch == NULL) ||
        (w->rc = ss_dnn_stream_new(1, &s, NULL)) < 0)
        goto done;
    for (i = 0; i < w->iters; i++) {
        memset(out, 0, w->n * sizeof(float));
        if ((w->rc = ss_dnn_run(w->p, s, in, out, scratch, NULL)) < 0)
            goto done;
        if (memcmp(out, w->want, w->n * sizeof(float)) != 0)
            w->mismatches++;
    }
done:
    ss_dnn_stream_free(s);
    ss_free(scratch);
    ss_free(out);
    return NULL;
}

static void
test_threads(void)
{
    ss_dnn_prim_t *p = NULL;
    worker_t w[2];
    pthread_t t[2];
    float *src = rnd(64 * 256), *wt = rnd(256 * 192), *bias = rnd(192);
    float *want = zeros(64 * 192);
    const void *in[1] = { src };
    int i;

    if (!ok(linear_elt(64, 256, 192, wt, bias, SS_DNN_GELU_ERF, &p) == 0,
            "threads: create"))
        goto done;
    ok(run(p, in, want) == 0, "threads: reference run");
    for (i = 0; i < 2; i++) {
        w[i] = (worker_t){ .p = p, .src = src, .want = want,
                           .n = 64 * 192, .iters = 20 };
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    for (i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < 2; i++) {
        is_int(w[i].rc, 0, "threads: worker %d runs", i);
        is_int(w[i].mismatches, 0, "threads: worker %d matches bitwise", i);
    }
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(wt);
    ss_free(bias);
    ss_free(want);
}

/* A run keeps its memory objects for the next (dnnl_run.c): runs of one
 * object on one thread, each on other buffers (inputs, output and scratch
 * at new addresses), all right, make one set between them. */
static void
test_kept_mems(void)
{
    enum { M = 8, K = 32, N = 48, RUNS = 6 };
    ss_dnn_prim_t *p = NULL;
    float *wt = rnd(K * N), *bias = rnd(N), *src[RUNS], *out[RUNS];
    float *want = zeros(M * N);
    long made;
    int i, bad = 0, rc = 0;

    for (i = 0; i < RUNS; i++) {
        src[i] = rnd(M * K);
        out[i] = zeros(M * N);
    }
    if (!ok(linear_elt(M, K, N, wt, bias, SS_DNN_RELU, &p) == 0,
            "kept mems: create"))
        goto done;
    made = atomic_load(&ss__dnn_mems_made);
    for (i = 0; i < RUNS; i++) {
        const void *in[1] = { src[i] };

        rc |= run(p, in, out[i]);     /* fresh scratch each run */
    }
    is_int(rc, 0, "kept mems: %d runs", RUNS);
    is_int((int)(atomic_load(&ss__dnn_mems_made) - made), 1,
           "kept mems: one set of memory objects made for %d runs", RUNS);
    for (i = 0; i < RUNS; i++) {
        ref_linear(src[i], wt, 1, bias, want, M, K, N);
        for (int j = 0; j < M * N; j++)
            want[j] = want[j] > 0.f ? want[j] : 0.f;
        bad += !check_close(out[i], want, M * N, "kept mems: a run read "
                            "its own input and wrote its own output");
    }
    is_int(bad, 0, "kept mems: all %d runs right", RUNS);
done:
    ss_dnn_prim_free(p);
    for (i = 0; i < RUNS; i++) {
        ss_free(src[i]);
        ss_free(out[i]);
    }
    ss_free(wt);
    ss_free(bias);
    ss_free(want);
}

static void
test_errors(void)
{
    ss_dnn_matmul_desc_t m = { 0 };
    ss_dnn_linear_desc_t l = { 0 };
    ss_dnn_binary_desc_t b = { 0 };
    ss_dnn_prim_t *p = (ss_dnn_prim_t *)&m;
    ss_err_t err = { 0 };
    float w[4] = { 0 };

    m.ndim = 2;
    m.a_dims[0] = 3;
    m.a_dims[1] = 4;
    m.b_dims[0] = 5;
    m.b_dims[1] = 2;
    is_int(ss_dnn_matmul_new(&m, &p, &err), SS_EINVAL, "matmul K mismatch");
    ok(p == NULL, "out is NULL on failure");
    ok(strstr(err.msg, "matmul") != NULL, "message names the op: %s",
       err.msg);
    l.m = l.k = l.n = 2;
    l.w = w;
    l.dtype = SS_DTYPE_I64;
    is_int(ss_dnn_linear_new(&l, &p, &err), SS_EUNSUPP, "linear int64");
    l.dtype = SS_DTYPE_F32;
    l.w = NULL;
    is_int(ss_dnn_linear_new(&l, &p, &err), SS_EINVAL, "linear NULL w");
    l.w = w;
    l.m = 0;
    is_int(ss_dnn_linear_new(&l, &p, &err), SS_EINVAL, "linear M = 0");
    b.alg = SS_DNN_ADD;
    b.a_ndim = 2;
    b.a_dims[0] = 3;
    b.a_dims[1] = 4;
    b.b_ndim = 2;
    b.b_dims[0] = 3;
    b.b_dims[1] = 2;
    is_int(ss_dnn_binary_new(&b, &p, &err), SS_EUNSUPP,
           "binary src1 not broadcastable");
    b.b_dims[1] = 4;
    b.post.n = 1;
    b.post.op[0] = po_elt(99, 0.f, 0.f);
    is_int(ss_dnn_binary_new(&b, &p, &err), SS_EINVAL, "unknown post-op alg");
    ss_dnn_prim_free(NULL);
    ss_dnn_stream_free(NULL);
}

/* Fail each of our allocations during a build in turn: every failure is
 * SS_ENOMEM with *out NULL, and (under ASan) nothing leaks. */
static void
test_alloc_failures(void)
{
    ss_dnn_linear_desc_t d = { .m = 4, .k = 8, .n = 6, .w_nk = 1 };
    float *w = rnd(48), *bias = rnd(6);
    int n, rc, wrong = 0;

    d.w = w;
    d.bias = bias;
    for (n = 1; n < 50; n++) {
        ss_dnn_prim_t *p = NULL;

        ss_alloc_fail_after(n);
        rc = ss_dnn_linear_new(&d, &p, NULL);
        ss_alloc_fail_after(0);
        ss_dnn_prim_free(p);
        if (rc == 0)
            break;
        wrong += rc != SS_ENOMEM || p != NULL;
    }
    ok(n > 1 && n < 50, "linear builds after %d injected failures", n - 1);
    is_int(wrong, 0, "each injected failure is SS_ENOMEM with no object");
    ss_free(w);
    ss_free(bias);
}

/* Diagnostics only: speed depends on the machine and its load. */
static void
bench(void)
{
    const int64_t M = 256, K = 1024, N = 1024, MN = 16;
    ss_dnn_linear_desc_t d = { 0 };
    ss_dnn_eltwise_desc_t e = { .numel = 16, .alg = SS_DNN_RELU };
    ss_dnn_prim_t *p = NULL, *q = NULL;
    ss_dnn_stream_t *s = NULL;
    float *src = rnd((size_t)(M * K)), *w = rnd((size_t)(K * N));
    float *out = zeros((size_t)(M * N)), *want = zeros((size_t)(MN * N));
    const void *in[1] = { src };
    void *scratch = NULL;
    double t0, best = 1e9, dt, naive;
    int i, reps = 10, bad;

    d.m = M;
    d.k = K;
    d.n = N;
    d.w = w;
    d.w_nk = 1;
    if (ss_dnn_linear_new(&d, &p, NULL) < 0 ||
        ss_dnn_stream_new(2, &s, NULL) < 0)
        goto done;
    if (ss_dnn_prim_scratch_size(p))
        scratch = ss_aligned_alloc(ss_dnn_prim_scratch_size(p));
    ss_dnn_run(p, s, in, out, scratch, NULL);
    for (i = 0; i < reps; i++) {
        t0 = ss_clock_mono_s();
        ss_dnn_run(p, s, in, out, scratch, NULL);
        dt = ss_clock_mono_s() - t0;
        if (dt < best)
            best = dt;
    }
    tap_diag("inner product %lldx%lldx%lld f32, 2 threads: %.1f GFLOP/s "
             "(best of %d, impl %s)", (long long)M, (long long)K,
             (long long)N, 2.0 * M * K * N / best * 1e-9, reps,
             ss_dnn_prim_impl(p));
    t0 = ss_clock_mono_s();
    ref_linear(src, w, 1, NULL, want, MN, K, N);
    naive = ss_clock_mono_s() - t0;
    /* The big shape takes another kernel than the small cases: check its
     * first rows too, with an absolute term for K = 1024 sums of ~10. */
    for (i = 0, bad = 0; i < MN * N; i++)
        bad += !(fabs(out[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i]));
    is_int(bad, 0, "256x1024x1024 inner product matches (first %lld rows)",
           (long long)MN);
    tap_diag("naive C loop (first %lld rows, double accumulator): %.2f "
             "GFLOP/s", (long long)MN, 2.0 * MN * K * N / naive * 1e-9);
    /* One thread: the layer's own cost, without OpenMP's fork/join
     * (about 2 us more here on 2 threads, milliseconds under load). */
    ss_dnn_stream_free(s);
    s = NULL;
    if (ss_dnn_stream_new(1, &s, NULL) == 0 &&
        ss_dnn_eltwise_new(&e, &q, NULL) == 0) {
        ss_dnn_run(q, s, in, out, NULL, NULL);
        t0 = ss_clock_mono_s();
        for (i = 0; i < 1000; i++)
            ss_dnn_run(q, s, in, out, NULL, NULL);
        tap_diag("per-run overhead (relu of 16 floats, 1 thread): %.2f us",
                 (ss_clock_mono_s() - t0) * 1e6 / 1000);
    }
done:
    ss_dnn_prim_free(p);
    ss_dnn_prim_free(q);
    ss_dnn_stream_free(s);
    ss_free(scratch);
    ss_free(src);
    ss_free(w);
    ss_free(out);
    ss_free(want);
}

int
main(void)
{
    if (ss_dnn_stream_new(0, &test_stream, NULL) < 0) {
        ok(0, "stream");
        return tap_done();
    }
    test_linear();
    test_linear_bf16();
    test_shared_weights();
    test_huge_weights();
    test_linear_is_matmul();
    test_matmul();
    test_threads();
    test_kept_mems();
    test_errors();
    test_alloc_failures();
    bench();
    ss_dnn_stream_free(test_stream);
    return tap_done();
}
