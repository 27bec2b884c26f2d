/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parallel batch slices of the trainer (compress/train/slices.c).
 *
 * A trainer for 2 threads whose rows are independent runs its batch as 2
 * slices, each a one-thread trainer: the MLP (forced: SS_TRAIN_SLICES=1;
 * its small step is otherwise built for one thread) and transformer
 * fixtures in
 * f32 and bf16 (the transformer also with its gradient clipped, which
 * sums the slices' gradients before the update instead of in it), the
 * CNN fixture with frozen BatchNorm, and a KL loss on a teacher's
 * outputs.  Each against the same model trained whole on one
 * thread, on the same batches: the first loss within 1e-6 relative, the
 * first gradient within 1e-5 relative L2 (f32; bf16 2e-3: a slice's
 * products may block their sums differently), and the parameters after 5
 * SGD steps (momentum 0.9) within 1e-5 (bf16 1e-3).  Why these bounds
 * hold: each
 * slice computes its rows exactly as the whole batch does up to the
 * order of float sums over rows (the weight gradients), which moves f32
 * results by ~1e-7 relative.  (Not AdamW for the parameters: it turns
 * the rounding noise of a gradient that is zero in exact arithmetic --
 * attention's key bias -- into steps of lr, 3e-3 apart between any two
 * summation orders.)  Two sliced runs give the same bytes.
 * ss_train_describe says "2 slices", and the slices' helper threads
 * ("ss-train") exist while the trainer lives (on a machine with 2 CPUs)
 * and are gone after ss_train_free.  ss_train_forward (validation) of
 * a sliced trainer against a whole one's, within 1e-6 (bf16 too).
 * The batch runs whole, saying why, where slices would change the
 * result: the CNN with BatchNorm on batch statistics, Sophia, a batch of
 * 6 rows, a graph that subtracts the batch's mean (rows mix); and where
 * they would not pay: a wide MLP (152 k parameters in a few steps),
 * which SS_TRAIN_SLICES=1 slices, computing the same.  A bad batch (a
 * label out of range in the second slice's rows, half a batch) is
 * refused as a whole trainer refuses it, parameters untouched.
 */

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/pace.h"
#include "compress/train/train.h"
#include "engine/dnnl/dnnl.h"
#include "engine/io/npy.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/threads_named.h"

#define BATCH 64
#define STEPS 5

static char *
path(char *buf, size_t n, const char *name, const char *suffix)
{
    const char *top = getenv("top_srcdir");

    snprintf(buf, n, "%s/tests/fixtures/%s%s", top ? top : ".", name,
             suffix);
    return buf;
}

static void
opts(ss_train_opts_t *o, int threads, int bf16)
{
    ss_train_opts_default(o);
    o->loss = SS_LOSS_CE;
    o->threads = threads;
    o->opt = SS_OPT_SGD;
    o->lr = 0.05;
    o->momentum = 0.9;
    o->bf16 = bf16;
}

static int
cpus(void)
{
    cpu_set_t s;

    return sched_getaffinity(0, sizeof(s), &s) == 0 ? CPU_COUNT(&s) : 1;
}

static double
rel_l2(const float *a, const float *b, int64_t n)
{
    double d = 0, s = 0;

    for (int64_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / (s > 0 ? s : 1));
}

typedef struct data {
    ss_tensor_t x, y, tea;      /* views of the rows of one step */
    const ss_tensor_t *x0, *y0;
    float *teacher;             /* KL: random logits for every row */
    int64_t classes;
} data_t;

static void
batch_at(data_t *d, int step, ss_train_batch_t *b)
{
    int64_t r0 = (int64_t)step * BATCH % (d->x0->dims[0] - BATCH);
    size_t row = (size_t)(ss_tensor_numel(d->x0) / d->x0->dims[0])
                 * ss_dtype_size(d->x0->dtype);

    d->x = *d->x0;
    d->x.dims[0] = BATCH;
    d->x.data = (char *)d->x0->data + (size_t)r0 * row;
    d->y = *d->y0;
    d->y.dims[0] = BATCH;
    d->y.data = (int64_t *)d->y0->data + r0;
    b->inputs = &d->x;
    b->labels = &d->y;
    b->teacher = NULL;
    if (d->teacher != NULL) {
        d->tea.dtype = SS_DTYPE_F32;
        d->tea.ndim = 2;
        d->tea.dims[0] = BATCH;
        d->tea.dims[1] = d->classes;
        d->tea.data = d->teacher + r0 * d->classes;
        b->teacher = &d->tea;
    }
}

/* Trains STEPS steps; returns the trainer (caller frees), *l0 the first
 * loss, g0 (caller's, flat floats) the first gradient. */
static ss_train_t *
train(const ss_graph_t *g, data_t *d, const ss_train_opts_t *o, double *l0,
      float **g0, char *desc, size_t dl)
{
    ss_train_t *t = NULL;
    ss_err_t err = { 0 };
    ss_train_batch_t b;

    batch_at(d, 0, &b);
    if (ss_train_new(g, &d->x, o, &t, &err) < 0) {
        tap_diag("ss_train_new: %s", err.msg);
        return NULL;
    }
    ss_train_describe(t, desc, dl);
    for (int s = 0; s < STEPS; s++) {
        double l;

        batch_at(d, s, &b);
        if (ss_train_grads_compute(t, &b, &l, &err) < 0 ||
            (s == 0 && (*g0 = malloc((size_t)ss_train_flat_size(t)
                                     * sizeof(float))) == NULL)) {
            tap_diag("step %d: %s", s, err.msg);
            ss_train_free(t);
            return NULL;
        }
        /* step 0 reads the gradient before the update (a sliced trainer
         * sums its slices' then); the others leave the sum to the
         * update, block by block (without clipping) */
        if (s == 0) {
            *l0 = l;
            memcpy(*g0, ss_train_grads(t), (size_t)ss_train_flat_size(t)
                                           * sizeof(float));
        }
        if (ss_train_apply(t, &err) < 0) {
            tap_diag("step %d: %s", s, err.msg);
            ss_train_free(t);
            return NULL;
        }
    }
    return t;
}

/* ss_train_forward (validation) of a fresh sliced trainer against a
 * fresh whole one: each slice computes its rows. */
static void
forward(const char *name, const ss_graph_t *g, data_t *d,
        const ss_train_opts_t *o1, const ss_train_opts_t *o2, double tol)
{
    enum { NOUT = BATCH * 1024 };
    float *yw = calloc(NOUT, sizeof(float)), *ys = calloc(NOUT, sizeof(float));
    ss_train_t *w = NULL, *s = NULL;
    ss_train_batch_t b;
    ss_err_t err = { 0 };
    int rc = -1;

    batch_at(d, 1, &b);
    if (yw != NULL && ys != NULL
        && ss_train_new(g, b.inputs, o1, &w, &err) == 0
        && ss_train_new(g, b.inputs, o2, &s, &err) == 0
        && ss_train_forward(w, b.inputs, yw, &err) == 0)
        rc = ss_train_forward(s, b.inputs, ys, &err);
    ok(rc == 0 && rel_l2(ys, yw, NOUT) <= tol, "%s: the forward alone "
       "within %.0e of the whole batch's (%.3g)%s", name, tol,
       rc == 0 ? rel_l2(ys, yw, NOUT) : -1.0, rc == 0 ? "" : err.msg);
    ss_train_free(w);
    ss_train_free(s);
    free(yw);
    free(ys);
}

/* Sliced on 2 threads against whole on 1: loss, gradient, parameters;
 * two sliced runs the same bytes; the crew's threads. */
static void
compare(const char *name, const ss_graph_t *g, data_t *d,
        const ss_train_opts_t *base)
{
    ss_train_opts_t o1 = *base, o2 = *base;
    ss_train_t *w = NULL, *s = NULL, *s2 = NULL;
    float *gw = NULL, *gs = NULL, *gs2 = NULL;
    double lw = 0, ls = 0, ls2 = 0, tg = base->bf16 ? 2e-3 : 1e-5;
    double tw = base->bf16 ? 1e-3 : 1e-5, dg, dw;
    char dw_[512] = "", ds[512] = "", ds2[512] = "";
    int64_t n;

    o1.threads = 1;
    o2.threads = 2;
    w = train(g, d, &o1, &lw, &gw, dw_, sizeof(dw_));
    s = train(g, d, &o2, &ls, &gs, ds, sizeof(ds));
    if (!ok(w != NULL && s != NULL, "%s: trained whole and sliced", name))
        goto done;
    ok(strstr(ds, "the batch in 2 slices on 2 threads") != NULL
       && strstr(dw_, "the batch whole (one thread)") != NULL,
       "%s: 2 slices on 2 threads (%s), whole on one", name,
       strrchr(ds, ';') ? strrchr(ds, ';') + 2 : ds);
    if (cpus() >= 2)
        ok(threads_named("ss-train") >= 1, "%s: the slices' helper runs "
           "(%d ss-train threads)", name, threads_named("ss-train"));
    n = ss_train_flat_size(w);
    dg = rel_l2(gs, gw, n);
    dw = rel_l2(ss_train_params(s), ss_train_params(w), n);
    ok(fabs(ls - lw) <= 1e-6 * fabs(lw), "%s: first loss %.9g sliced, "
       "%.9g whole", name, ls, lw);
    ok(dg <= tg, "%s: first gradient within %.0e relative L2 of the whole "
       "batch's (%.3g)", name, tg, dg);
    ok(dw <= tw, "%s: parameters after %d steps within %.0e (%.3g)", name,
       STEPS, tw, dw);
    forward(name, g, d, &o1, &o2, 1e-6);
    s2 = train(g, d, &o2, &ls2, &gs2, ds2, sizeof(ds2));
    ok(s2 != NULL && memcmp(ss_train_params(s2), ss_train_params(s),
                            (size_t)n * sizeof(float)) == 0,
       "%s: two sliced runs give the same bytes", name);
done:
    ss_train_free(w);
    ss_train_free(s);
    ss_train_free(s2);
    free(gw);
    free(gs);
    free(gs2);
}

/* A pace hook (common/pace.h) on the trainer's thread: the slices call
 * it between ops, on the helpers too, one thread at a time. */
static atomic_int pace_in, pace_calls, pace_helper, pace_overlap;
static pthread_t main_thread;

static void
count_pace(void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&pace_in, 1) > 0)
        atomic_fetch_add(&pace_overlap, 1);
    /* long enough that two unlocked callers would meet here */
    for (volatile int i = 0; i < 200000; i++)
        ;
    atomic_fetch_add(&pace_calls, 1);
    if (!pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&pace_helper, 1);
    atomic_fetch_sub(&pace_in, 1);
}

/* A bad batch to a sliced trainer: refused with the whole batch's
 * message before any slice runs, parameters untouched. */
static void
bad_batch(const ss_graph_t *g, data_t *d)
{
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_err_t err = { 0 };
    ss_train_batch_t b;
    float *w0 = NULL;
    int64_t *y, keep;
    int rc1 = 0, rc2 = 0;

    opts(&o, 2, 0);
    batch_at(d, 0, &b);
    if (ss_train_new(g, &d->x, &o, &t, &err) < 0
        || (w0 = malloc((size_t)ss_train_flat_size(t) * sizeof(float)))
           == NULL) {
        ok(0, "bad batch: trainer built (%s)", err.msg);
        goto done;
    }
    memcpy(w0, ss_train_params(t), (size_t)ss_train_flat_size(t)
                                    * sizeof(float));
    y = (int64_t *)d->y.data + BATCH - 1;   /* the second slice's row */
    keep = *y;
    *y = 10;
    rc1 = ss_train_step(t, &b, NULL, &err);
    *y = keep;
    ok(rc1 == SS_EINVAL && strstr(err.msg, "label 10 of row 63") != NULL,
       "bad batch: a label out of range refused (%s)", err.msg);
    d->x.dims[0] = BATCH / 2;
    rc2 = ss_train_step(t, &b, NULL, &err);
    d->x.dims[0] = BATCH;
    ok(rc2 == SS_EINVAL && strstr(err.msg, "not of the shape") != NULL,
       "bad batch: half a batch refused (%s)", err.msg);
    ok(memcmp(w0, ss_train_params(t), (size_t)ss_train_flat_size(t)
                                      * sizeof(float)) == 0
       && ss_train_steps_done(t) == 0, "bad batch: parameters untouched");
done:
    free(w0);
    ss_train_free(t);
}

static void
paced(const ss_graph_t *g, data_t *d)
{
    ss_train_opts_t o;
    ss_train_t *t = NULL, *t1 = NULL;
    ss_err_t err = { 0 };
    ss_train_batch_t b;
    int ok1 = 0, whole_calls;

    opts(&o, 1, 0);
    batch_at(d, 0, &b);
    main_thread = pthread_self();
    /* the ops of one whole step on one thread */
    if (ss_train_new(g, &d->x, &o, &t1, &err) == 0) {
        ss_pace_set(count_pace, NULL);
        ok1 = ss_train_step(t1, &b, NULL, &err) == 0;
        ss_pace_set(NULL, NULL);
    }
    whole_calls = atomic_exchange(&pace_calls, 0);
    o.threads = 2;
    if (ok1 && ss_train_new(g, &d->x, &o, &t, &err) == 0) {
        ss_pace_set(count_pace, NULL);
        for (int s = 0; s < STEPS && ok1; s++)
            ok1 = ss_train_step(t, &b, NULL, &err) == 0;
        ss_pace_set(NULL, NULL);
    }
    ok(ok1 && t != NULL, "paced: trained (%s)", ok1 ? "" : err.msg);
    ok(atomic_load(&pace_calls) >= STEPS * whole_calls,
       "paced: %d pace points in %d sliced steps, a whole step has %d "
       "(%d on the helper)", atomic_load(&pace_calls), STEPS, whole_calls,
       atomic_load(&pace_helper));
    ok(atomic_load(&pace_overlap) == 0, "paced: the hook never ran on two "
       "threads at once (%d)", atomic_load(&pace_overlap));
    ss_train_free(t);
    ss_train_free(t1);
}

/* Built for 2 threads, the batch runs whole, and describe says why. */
static void
whole(const char *name, const ss_graph_t *g, const ss_tensor_t *x,
      const ss_train_opts_t *o, const char *why)
{
    ss_train_t *t = NULL;
    ss_err_t err = { 0 };
    char desc[512] = "";

    if (ss_train_new(g, x, o, &t, &err) == 0)
        ss_train_describe(t, desc, sizeof(desc));
    ok(t != NULL && strstr(desc, "the batch whole") != NULL
       && strstr(desc, why) != NULL, "%s: the batch runs whole, saying "
       "\"%s\" (%s)", name, why, t != NULL ? strrchr(desc, ';') ? strrchr(
           desc, ';') + 2 : desc : err.msg);
    ss_train_free(t);
}

typedef struct fixture {
    ss_graph_t *g;
    ss_npz_t *z;
    data_t d;
} fixture_t;

static int
load(const char *m, fixture_t *f)
{
    char p[512];
    ss_err_t err = { 0 };

    memset(f, 0, sizeof(*f));
    if (ss_graph_load_onnx(path(p, sizeof(p), m, "_op17/model.onnx"), &f->g,
                           &err) < 0) {
        tap_diag("%s: %s", m, err.msg);
        return -1;
    }
    snprintf(p, sizeof(p), "%s/tests/fixtures/digits/%s_heldout.npz",
             getenv("top_srcdir") ? getenv("top_srcdir") : ".", m);
    if (ss_npz_read(p, 1 << 28, &f->z, &err) < 0) {
        tap_diag("%s: %s", p, err.msg);
        return -1;
    }
    f->d.x0 = ss_npz_tensor(f->z, 0);
    f->d.y0 = ss_npz_tensor(f->z, ss_npz_find(f->z, "labels"));
    return 0;
}

static void
unload(fixture_t *f)
{
    free(f->d.teacher);
    ss_npz_free(f->z);
    ss_graph_free(f->g);
}

/* x - mean over the batch, then a MatMul: rows mix. */
static ss_graph_t *
mean_graph(void)
{
    mb_t *b = mb_new(17);
    uint32_t seed = 5;
    float w[8 * 4];
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    Onnx__NodeProto *n;

    for (int i = 0; i < 8 * 4; i++)
        w[i] = mb_rand(&seed);
    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 8 });
    mb_init_f32(b, "w", 2, (int64_t[]){ 8, 4 }, w);
    n = mb_node(b, "ReduceMean", "mean0", "x", "m");
    mb_attr_ints(b, n, "axes", 1, (int64_t[]){ 0 });
    mb_node(b, "Sub", "center", "x,m", "c");
    mb_node(b, "MatMul", "proj", "c,w", "y");
    mb_output(b, "y", SS_DTYPE_F32, -1, NULL);
    if (mb_load(b, &g, &err) < 0)
        tap_diag("mean graph: %s", err.msg);
    return g;
}

/* A wide two-layer MLP on the MLP fixture's inputs: 152 k parameters in
 * a few steps, which the cost rule trains whole. */
static ss_graph_t *
wide_graph(void)
{
    enum { H = 2048 };
    mb_t *b = mb_new(17);
    uint32_t seed = 9;
    float *w1 = malloc(64 * H * sizeof(float));
    float *w2 = malloc(H * 10 * sizeof(float));
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    for (int i = 0; w1 != NULL && i < 64 * H; i++)
        w1[i] = mb_rand(&seed) * 0.1f;
    for (int i = 0; w2 != NULL && i < H * 10; i++)
        w2[i] = mb_rand(&seed) * 0.05f;
    if (w1 != NULL && w2 != NULL) {
        mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 64 });
        mb_init_f32(b, "w1", 2, (int64_t[]){ 64, H }, w1);
        mb_init_f32(b, "w2", 2, (int64_t[]){ H, 10 }, w2);
        mb_node(b, "MatMul", "fc1", "x,w1", "h");
        mb_node(b, "Relu", "act", "h", "a");
        mb_node(b, "MatMul", "fc2", "a,w2", "y");
        mb_output(b, "y", SS_DTYPE_F32, -1, NULL);
        if (mb_load(b, &g, &err) < 0)
            tap_diag("wide graph: %s", err.msg);
    }
    free(w1);
    free(w2);
    return g;
}

int
main(void)
{
    int bf = ss_dnn_bf16_native(NULL);
    fixture_t mlp, tr, cnn;
    ss_train_opts_t o;

    if (load("mlp", &mlp) < 0 || load("transformer", &tr) < 0 ||
        load("cnn", &cnn) < 0)
        return tap_done();
    /* the MLP fixture's step is small (1.1 M multiply-adds forward): by
     * default it is built for one thread; forced, it slices */
    {
        ss_tensor_t x = *mlp.d.x0;

        x.dims[0] = BATCH;
        opts(&o, 2, 0);
        whole("mlp", mlp.g, &x, &o, "one thread: a small step");
    }
    setenv("SS_TRAIN_SLICES", "1", 1);
    opts(&o, 2, 0);
    compare("mlp f32", mlp.g, &mlp.d, &o);
    unsetenv("SS_TRAIN_SLICES");
    compare("transformer f32", tr.g, &tr.d, &o);
    o.clip_norm = 0.05;         /* the norm needs the sum before the update */
    compare("transformer f32, clipped", tr.g, &tr.d, &o);
    o.clip_norm = 0;
    o.bn = SS_BN_FROZEN;
    compare("cnn f32, BatchNorm frozen", cnn.g, &cnn.d, &o);
    if (bf) {
        opts(&o, 2, 1);
        setenv("SS_TRAIN_SLICES", "1", 1);
        compare("mlp bf16", mlp.g, &mlp.d, &o);
        unsetenv("SS_TRAIN_SLICES");
        compare("transformer bf16", tr.g, &tr.d, &o);
    } else {
        tap_diag("no native bf16: the bf16 cases are not run");
    }
    /* KL on a teacher's logits: the teacher's rows are cut too */
    opts(&o, 2, 0);
    o.loss = SS_LOSS_KL;
    o.temperature = 2.0;
    mlp.d.classes = 10;
    mlp.d.teacher = malloc((size_t)mlp.d.x0->dims[0] * 10 * sizeof(float));
    for (int64_t i = 0; mlp.d.teacher && i < mlp.d.x0->dims[0] * 10; i++)
        mlp.d.teacher[i] = (float)((double)(i * 7919 % 1000) / 1000.0 * 6 - 3);
    setenv("SS_TRAIN_SLICES", "1", 1);
    if (mlp.d.teacher != NULL)
        compare("mlp KL on a teacher", mlp.g, &mlp.d, &o);
    unsetenv("SS_TRAIN_SLICES");
    free(mlp.d.teacher);
    mlp.d.teacher = NULL;

    paced(tr.g, &tr.d);
    bad_batch(tr.g, &tr.d);
    {
        /* the cost rule: many parameters in few steps run whole; forced
         * (SS_TRAIN_SLICES=1), they slice and compute the same */
        ss_graph_t *wg = wide_graph();
        ss_tensor_t x = *mlp.d.x0;

        x.dims[0] = BATCH;
        opts(&o, 2, 0);
        if (wg != NULL) {
            whole("wide mlp", wg, &x, &o, "parameters in");
            setenv("SS_TRAIN_SLICES", "1", 1);
            compare("wide mlp, SS_TRAIN_SLICES=1", wg, &mlp.d, &o);
            unsetenv("SS_TRAIN_SLICES");
        }
        ss_graph_free(wg);
    }
    ok(threads_named("ss-train") == 0, "every trainer freed: no ss-train "
       "thread left (%d)", threads_named("ss-train"));

    /* where slices would change the result (forced past the cost rules:
     * these small graphs would otherwise be built for one thread) */
    setenv("SS_TRAIN_SLICES", "1", 1);
    {
        ss_tensor_t x = *cnn.d.x0, x6 = *mlp.d.x0, xm = { 0 };
        ss_graph_t *mg = mean_graph();

        x.dims[0] = BATCH;
        opts(&o, 2, 0);
        whole("cnn", cnn.g, &x, &o, "BatchNormalization");
        o.opt = SS_OPT_SOPHIA;
        x6.dims[0] = BATCH;
        whole("mlp sophia", mlp.g, &x6, &o, "Sophia");
        opts(&o, 2, 0);
        x6.dims[0] = 6;
        whole("mlp batch 6", mlp.g, &x6, &o, "a batch of 6 rows");
        if (mg != NULL) {
            o.loss = SS_LOSS_MSE;
            xm.dtype = SS_DTYPE_F32;
            xm.ndim = 2;
            xm.dims[0] = BATCH;
            xm.dims[1] = 8;
            whole("batch mean", mg, &xm, &o, "rows mix at ReduceMean");
        }
        ss_graph_free(mg);
    }
    unsetenv("SS_TRAIN_SLICES");
    unload(&mlp);
    unload(&tr);
    unload(&cnn);
    return tap_done();
}
