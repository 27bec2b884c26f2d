/* SPDX-License-Identifier: Apache-2.0 */
/*
 * compress/search_cfg.c: a configuration with per-layer bf16 builds a
 * variant whose metadata "slimserve.bf16_nodes" names exactly the chosen
 * layers' nodes (both factors of a low-rank layer), the whole graph's
 * bf16 instead of a list, and a refusal when no chosen layer is a named
 * node.  Deterministic: test_search.py checks the search around it, but
 * which variant a latency search writes depends on the machine.
 */

#include <string.h>

#include "common/alloc.h"
#include "compress/search_int.h"
#include "engine/ir/edit.h"
#include "tests/tap.h"
#include "tests/unit/run_util.h"

static int
build(ss__search_t *s, const ss__scfg_t *c, ss_graph_t **g, ss_err_t *err)
{
    json_t *notes = json_array();
    int rc = ss__s_build(s, c, g, notes, err);

    json_decref(notes);
    return rc;
}

int
main(void)
{
    static const char *const names[] = { "/fc1/Gemm", "/fc2/Gemm",
                                         "/fc3/Gemm" };
    char path[1024];
    ss_graph_t *src = NULL, *g = NULL;
    ss_search_opts_t o;
    ss_compress_ctl_t none;
    ss__search_t s;
    ss__scfg_t c;
    ss_err_t err = { 0 };
    const char *m;

    memset(&o, 0, sizeof(o));
    memset(&none, 0, sizeof(none));
    memset(&s, 0, sizeof(s));
    o.time_limit_s = 7 * 86400.0;
    o.budget.max_accuracy_drop = 0.01;
    o.budget.min_agreement = -1;
    if (!ok(ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                       "model.onnx"), &src, &err) == 0,
            "mlp_op13 loads: %s", err.msg))
        return tap_done();
    s.src = src;
    s.o = &o;
    s.outer = &none;
    s.ctl = none;
    s.n_layers = 3;
    for (int i = 0; i < 3; i++)
        s.labels[i] = ss_strdup(names[i]);

    memset(&c, 0, sizeof(c));
    c.bf16l[1] = 1;
    ok(build(&s, &c, &g, &err) == 0, "fc2 in bf16 builds: %s", err.msg);
    is_str(g ? ss_graph_meta(g, SS_GRAPH_BF16_NODES) : NULL, "/fc2/Gemm",
           "the variant lists fc2 alone");
    ok(g && ss_graph_meta(g, "slimserve.precision") == NULL,
       "and is not whole-graph bf16");
    ss_graph_free(g);
    g = NULL;

    memset(&c, 0, sizeof(c));
    c.bf16l[0] = c.bf16l[2] = 1;
    c.st[0] = SS__S_RANK0;      /* low-rank 1/8: two factor nodes */
    ok(build(&s, &c, &g, &err) == 0, "fc1 low-rank + bf16, fc3 bf16 "
       "builds: %s", err.msg);
    m = g ? ss_graph_meta(g, SS_GRAPH_BF16_NODES) : NULL;
    is_str(m, "/fc1/Gemm/lowrank_a,/fc1/Gemm/lowrank_b,/fc3/Gemm",
           "the list names both factors of fc1 and fc3, not fc2");
    ok(g && ss_graph_node_bf16(g, "/fc3/Gemm")
       && !ss_graph_node_bf16(g, "/fc2/Gemm"), "the engine reads it so");
    ss_graph_free(g);
    g = NULL;

    c.bf16 = 1;
    ok(build(&s, &c, &g, &err) == 0, "with the whole graph's bf16 builds");
    ok(g && ss_graph_precision(g) == SS_DTYPE_BF16
       && ss_graph_meta(g, SS_GRAPH_BF16_NODES) == NULL,
       "whole-graph bf16: precision bf16, no list");
    ss_graph_free(g);
    g = NULL;

    ss_free(s.labels[1]);
    s.labels[1] = ss_strdup("Gemm");    /* a label that is no node name */
    memset(&c, 0, sizeof(c));
    c.bf16l[1] = 1;
    is_int(build(&s, &c, &g, &err), SS_EUNSUPP,
           "no chosen layer is a named node: refused (%s)", err.msg);
    ok(g == NULL, "and nothing built");

    for (int i = 0; i < 3; i++)
        ss_free(s.labels[i]);
    ss_graph_free(src);
    return tap_done();
}
