/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine/ir/edit.h: ONNX round trips of the fixtures (encode, reload, same
 * outputs bit for bit), atomic save, clone + edit + finalize, metadata
 * (the per-layer bf16 list through a saved file), and finalize's
 * refusals.
 */

#include <unistd.h>

#include "engine/ir/edit.h"
#include "tests/tap.h"
#include "tests/unit/run_util.h"

static const char *const models[] = { "mlp_op13", "cnn_op13",
                                      "transformer_op13" };

static void
round_trip(const char *model)
{
    char path[1024];
    ss_graph_t *g = NULL, *g2 = NULL, *g3 = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t r1, r2;
    void *buf = NULL;
    size_t len = 0;
    int same = 1;

    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    if (!ok(ss_graph_load_onnx(fx_path(path, sizeof(path), model,
                                       "model.onnx"), &g, &err) == 0,
            "%s loads", model)
        || !ok(ss_npz_read(fx_path(path, sizeof(path), model, "batch7.npz"),
                           SS_NPY_DEFAULT_MAX_BYTES, &z, &err) == 0,
               "%s batch7 loads", model)) {
        tap_diag("%s", err.msg);
        goto done;
    }
    ok(ss_graph_encode_onnx(g, &buf, &len, &err) == 0 && len > 0,
       "%s encodes", model);
    tap_diag("%s: %zu bytes encoded", model, len);
    ok(ss_graph_load_onnx_buffer(buf, len, &g2, &err) == 0,
       "%s reloads from the encoding", model);
    if (g2 == NULL) {
        tap_diag("%s", err.msg);
        goto done;
    }
    is_int(ss_graph_weight_bytes(g2), ss_graph_weight_bytes(g),
           "%s: same weight bytes", model);
    is_int(ss_graph_num_outputs(g2), ss_graph_num_outputs(g),
           "%s: same outputs", model);
    if (run_prepare(&r1, g, z, &err) < 0 || run_prepare(&r2, g2, z, &err) < 0
        || run_once(&r1, &err) < 0 || run_once(&r2, &err) < 0) {
        ok(0, "%s runs: %s", model, err.msg);
        goto done;
    }
    for (int i = 0; i < r1.n_out; i++)
        same &= memcmp(r1.out[i].data, r2.out[i].data,
                       (size_t)out_numel(&r1, i) * 4) == 0;
    ok(same, "%s: reloaded model gives identical outputs on batch7", model);
    snprintf(path, sizeof(path), "%s/test_edit_%s.onnx",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", model);
    ok(ss_graph_save_onnx(g2, path, &err) == 0, "%s saves atomically",
       model);
    ok(ss_graph_load_onnx(path, &g3, &err) == 0 && g3 != NULL
       && ss_graph_weight_bytes(g3) == ss_graph_weight_bytes(g),
       "%s: the saved file loads", model);
    unlink(path);
    ok(ss_graph_save_onnx(g2, "/nonexistent-dir/x/model.onnx", &err)
       == SS_EIO && strstr(err.msg, "/nonexistent-dir") != NULL,
       "%s: saving into a missing folder is SS_EIO naming the path", model);
done:
    run_close(&r1);
    run_close(&r2);
    ss_free(buf);
    ss_graph_free(g);
    ss_graph_free(g2);
    ss_graph_free(g3);
    ss_npz_free(z);
}

/* clone; out' = 2 * out; a dead node and an unused value; an extra
 * output; metadata; then finalize and compare with the original. */
static void
edit_mlp(void)
{
    char path[1024];
    ss_graph_t *g = NULL, *c = NULL, *c2 = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t r0, r1;
    ss_tensor_t *two = NULL;
    void *buf = NULL;
    size_t len;
    int out, y2, k2, in0, relu_out, hid = -1, n0, ok_all = 1;

    memset(&r0, 0, sizeof(r0));
    memset(&r1, 0, sizeof(r1));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13", "batch7.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    ok(ss_graph_clone(g, &c, &err) == 0, "clone");
    n0 = c->n_nodes;
    out = c->outputs[0];
    in0 = c->inputs[0];
    for (int i = 0; i < c->n_nodes && hid < 0; i++)
        if (strcmp(c->nodes[i].op_type, "Gemm") == 0)
            hid = c->nodes[i].outputs[0];
    ok(ss_graph_find_value(c, c->values[out].name) == out
       && ss_graph_find_value(c, "no such value") == -1, "find_value");
    ss__tensor_new(SS_DTYPE_F32, 0, NULL, &two, &err);
    *(float *)two->data = 2.0f;
    k2 = ss_graph_add_value(c, "two", two, &err);
    y2 = ss_graph_add_value(c, NULL, NULL, &err);
    ok(k2 >= 0 && y2 >= 0 && ss_graph_add_value(c, "two", NULL, &err) < 0,
       "add_value (names unique)");
    ss_graph_replace_uses(c, out, y2);
    ok(ss_graph_add_node(c, "Mul", "double", 2, (int[]){ out, k2 }, 1, &y2,
                         0, NULL, &err) >= 0, "add_node Mul");
    relu_out = ss_graph_add_value(c, "dead_relu", NULL, &err);
    ok(ss_graph_add_node(c, "Relu", "dead", 1, &in0, 1, &relu_out, 0, NULL,
                         &err) >= 0, "add_node dead Relu");
    ss_graph_kill_node(c, ss_graph_add_node(c, "Relu", "killed", 1, &in0, 1,
                                            (int[]){ ss_graph_add_value(
                                                c, NULL, NULL, &err) },
                                            0, NULL, &err));
    ok(ss_graph_add_output(c, hid, &err) == 1, "add_output (calibration)");
    ok(ss_graph_set_meta(c, "slimserve.test", "yes", &err) == 0
       && ss_graph_set_meta(c, "slimserve.test", "again", &err) == 0,
       "set_meta");
    ss_err_clear(&err);
    ok(ss_graph_finalize(c, &err) == 0, "finalize %s", err.msg);
    is_int(c->n_nodes, n0 + 1, "finalize dropped the dead and killed nodes");
    is_int(ss_graph_find_value(c, "dead_relu"), -1,
           "finalize dropped the unused value");
    is_str(ss_graph_meta(c, "slimserve.test"), "again", "meta replaced");
    ok(ss_graph_precision(c) == SS_DTYPE_F32, "precision f32 by default");
    if (run_prepare(&r0, g, z, &err) < 0 || run_prepare(&r1, c, z, &err) < 0
        || run_once(&r0, &err) < 0 || run_once(&r1, &err) < 0) {
        ok(0, "edited graph runs: %s", err.msg);
        goto done;
    }
    is_int(r1.n_out, 2, "two outputs");
    for (int64_t i = 0; i < out_numel(&r0, 0); i++)
        ok_all &= ((float *)r1.out[0].data)[i]
                  == 2.0f * ((float *)r0.out[0].data)[i];
    ok(ok_all, "edited output is exactly twice the original");
    is_int(r1.out[1].ndim, 2, "the calibration output is 2-D");
    /* metadata and precision survive encoding */
    ss_graph_set_meta(c, "slimserve.precision", "bf16", &err);
    ok(ss_graph_encode_onnx(c, &buf, &len, &err) == 0
       && ss_graph_load_onnx_buffer(buf, len, &c2, &err) == 0,
       "edited graph round-trips");
    ok(c2 != NULL && ss_graph_precision(c2) == SS_DTYPE_BF16
       && strcmp(ss_graph_meta(c2, "slimserve.test"), "again") == 0,
       "metadata survives the round trip");
done:
    run_close(&r0);
    run_close(&r1);
    ss_free(buf);
    ss_graph_free(g);
    ss_graph_free(c);
    ss_graph_free(c2);
    ss_npz_free(z);
}

static void
refusals(void)
{
    char path[1024];
    ss_graph_t *g = NULL, *c = NULL;
    ss_err_t err = { 0 };
    int v, w, x;

    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0)
        return;
    ss_graph_clone(g, &c, &err);
    v = ss_graph_add_value(c, "undefined", NULL, &err);
    w = ss_graph_add_value(c, NULL, NULL, &err);
    ss_graph_add_node(c, "Relu", "reads_nothing", 1, &v, 1, &w, 0, NULL,
                      &err);
    ss_graph_add_output(c, w, &err);
    is_int(ss_graph_finalize(c, &err), SS_EBADMODEL,
           "finalize refuses a read of an undefined value");
    ss_graph_free(c);
    ss_graph_clone(g, &c, &err);
    x = ss_graph_add_value(c, NULL, NULL, &err);
    ss_graph_add_node(c, "NoSuchOp", "bad", 1, &c->inputs[0], 1, &x, 0, NULL,
                      &err);
    is_int(ss_graph_finalize(c, &err), SS_EUNSUPP,
           "finalize refuses an op without a kernel");
    ok(ss_graph_add_node(c, "Relu", "x", 1, (int[]){ 99999 }, 1, &x, 0, NULL,
                         &err) == SS_EINVAL, "add_node checks ids");
    ss_graph_free(c);
    ss_graph_free(g);
}

/* "slimserve.bf16_nodes": set, matched exactly, refused for names it
 * cannot carry, and kept by ss_graph_save_onnx and a reload. */
static void
bf16_nodes(void)
{
    char path[1024], tmp[] = "/tmp/ss-test-edit.XXXXXX", file[1100];
    const char *two[] = { "/fc1/Gemm", "fc2" }, *bad[] = { "a,b" };
    ss_graph_t *g = NULL, *r = NULL;
    ss_err_t err = { 0 };

    if (!ok(ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                       "model.onnx"), &g, &err) == 0,
            "mlp_op13 loads: %s", err.msg)
        || !ok(mkdtemp(tmp) != NULL, "temporary folder"))
        goto done;
    ok(!ss_graph_node_bf16(g, "fc2"), "no list: no node is bf16");
    is_int(ss_graph_set_bf16_nodes(g, 2, two, &err), 0, "set the list");
    is_str(ss_graph_meta(g, SS_GRAPH_BF16_NODES), "/fc1/Gemm,fc2",
           "the list is the names joined by ','");
    ok(ss_graph_node_bf16(g, "/fc1/Gemm") && ss_graph_node_bf16(g, "fc2")
       && !ss_graph_node_bf16(g, "fc") && !ss_graph_node_bf16(g, "fc2 ")
       && !ss_graph_node_bf16(g, "/fc1/Gemm,fc2")
       && !ss_graph_node_bf16(g, ""), "names are matched exactly");
    is_int(ss_graph_set_bf16_nodes(g, 1, bad, &err), SS_EINVAL,
           "a name with a ',' is refused");
    is_str(ss_graph_meta(g, SS_GRAPH_BF16_NODES), "/fc1/Gemm,fc2",
           "a refused list leaves the old one");
    snprintf(file, sizeof(file), "%s/m.onnx", tmp);
    ss_err_clear(&err);
    ok(ss_graph_save_onnx(g, file, &err) == 0
       && ss_graph_load_onnx(file, &r, &err) == 0, "saved and reloaded: %s",
       err.msg);
    ok(r != NULL && ss_graph_node_bf16(r, "fc2")
       && ss_graph_node_bf16(r, "/fc1/Gemm") && !ss_graph_node_bf16(r, "x")
       && ss_graph_precision(r) == SS_DTYPE_F32,
       "the list survives save and reload (and is not whole-graph bf16)");
    ss_graph_set_meta(g, "slimserve.precision", "bf16", &err);
    ok(ss_graph_node_bf16(g, "x"), "whole-graph bf16 means every node");
    unlink(file);
    rmdir(tmp);
done:
    ss_graph_free(g);
    ss_graph_free(r);
}

/* One editing session; 0 or the first error (err set). */
static int
session(const ss_graph_t *g, ss_err_t *err)
{
    ss_graph_t *c = NULL, *r = NULL;
    ss_tensor_t *t = NULL;
    void *buf = NULL;
    size_t len;
    int rc, k, y, out;

    if ((rc = ss_graph_clone(g, &c, err)) < 0)
        goto done;
    out = c->outputs[0];
    if ((rc = ss__tensor_new(SS_DTYPE_F32, 0, NULL, &t, err)) < 0)
        goto done;
    *(float *)t->data = 3.0f;
    if ((k = rc = ss_graph_add_value(c, NULL, t, err)) < 0
        || (y = rc = ss_graph_add_value(c, "y3", NULL, err)) < 0)
        goto done;
    ss_graph_replace_uses(c, out, y);
    if ((rc = ss_graph_add_node(c, "Mul", "triple", 2, (int[]){ out, k }, 1,
                                &y, 0, NULL, err)) < 0
        || (rc = ss_graph_add_output(c, c->inputs[0], err)) < 0
        || (rc = ss_graph_set_meta(c, "k", "v", err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss_graph_encode_onnx(c, &buf, &len, err)) < 0
        || (rc = ss_graph_load_onnx_buffer(buf, len, &r, err)) < 0)
        goto done;
    rc = 0;
done:
    ss_free(buf);
    ss_graph_free(c);
    ss_graph_free(r);
    return rc;
}

/* Every allocation of a session failing in turn: a clean error each time
 * (ASan checks that nothing leaks). */
static void
alloc_failures(void)
{
    char path[1024];
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int n, bad = 0;

    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0)
        return;
    for (n = 1; n < 5000; n++) {
        int rc;

        memset(&err, 0, sizeof(err));
        ss_alloc_fail_after(n);
        rc = session(g, &err);
        ss_alloc_fail_after(0);
        if (rc == 0)
            break;
        if (err.msg[0] == '\0')
            bad++;
    }
    ok(n > 20 && n < 5000 && bad == 0, "allocation failure %d times over "
       "(clone, edit, finalize, encode, reload), each a clean error", n - 1);
    ss_graph_free(g);
}

int
main(void)
{
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
        round_trip(models[i]);
    edit_mlp();
    refusals();
    bf16_nodes();
    alloc_failures();
    return tap_done();
}
