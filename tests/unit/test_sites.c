/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LoRA sites and PEFT's target_modules (engine/ir/sites.h): the sites
 * of the fixtures' MLP (Gemm, transB) and transformer (MatMul on a
 * transposed weight, a bias Add after it), and the matching of a list
 * (names, suffixes after a dot), a regular expression (whole names) and
 * "all-linear".
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/engine.h"
#include "engine/ir/sites.h"
#include "tests/tap.h"

static ss_site_t *
find(const ss_site_t *s, int n, const char *module)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].module, module) == 0)
            return (ss_site_t *)&s[i];
    return NULL;
}

static void
check_model(const char *top, const char *name, int want_sites)
{
    char path[4096];
    ss_graph_t *g = NULL;
    ss_site_t *s = NULL;
    ss_err_t err = { 0 };
    int n = -1, rc;

    snprintf(path, sizeof path, "%s/tests/fixtures/%s/model.onnx", top, name);
    if (!ok(ss_graph_load_onnx(path, &g, &err) == 0, "%s loads (%s)", name,
            err.msg))
        return;
    rc = ss_sites_find(g, &s, &n, &err);
    ok(rc == 0 && n == want_sites, "%s: %d sites (%d)", name, want_sites, n);
    if (strcmp(name, "mlp_op17") == 0) {
        const ss_site_t *f1 = find(s, n, "fc1"), *f3 = find(s, n, "fc3");

        ok(f1 != NULL && f1->in == 64 && f1->out == 128 && f1->w_nk
           && f1->y_bias == f1->y,
           "fc1: a Gemm with transB, in 64, out 128, tapped at its output");
        ok(f3 != NULL && f3->in == 64 && f3->out == 10,
           "fc3: in 64, out 10");
    } else {
        const ss_site_t *q = find(s, n, "layers.0.attn.qkv");
        const ss_site_t *h = find(s, n, "head");

        ok(q != NULL && q->in == 32 && q->out == 96 && !q->w_nk
           && q->y_bias != q->y,
           "layers.0.attn.qkv: from the node's name, MatMul on [in, out], "
           "tapped past its bias Add");
        ok(h != NULL && h->out == 10, "head: a Gemm");
        ok(find(s, n, "layers.1.ff2") != NULL, "layers.1.ff2 found");
    }
    ss_free(s);
    ss_graph_free(g);
}

int
main(void)
{
    const char *top = getenv("top_srcdir");
    ss_site_t s;
    ss_err_t err = { 0 };
    static const char *const l1[] = { "qkv" }, *const l2[] = { "attn.qkv" };
    static const char *const l3[] = { "c1", "ff2" }, *const l4[] = { "fc1" };

    if (top == NULL)
        top = ".";
    check_model(top, "mlp_op17", 3);
    check_model(top, "transformer_op17", 9);

    memset(&s, 0, sizeof(s));
    snprintf(s.module, sizeof(s.module), "layers.0.attn.qkv");
    ok(ss_site_targeted(&s, NULL, l1, 1), "list: a suffix after a dot");
    ok(ss_site_targeted(&s, NULL, l2, 1), "list: a dotted suffix");
    ok(!ss_site_targeted(&s, NULL, l3, 2), "list: no other name");
    ok(ss_site_targeted(&s, "layers\\.[0-9]+\\.attn\\.(qkv|out)", NULL, 0),
       "pattern: the whole name");
    ok(!ss_site_targeted(&s, "qkv", NULL, 0),
       "pattern: a part of the name is no match (fullmatch)");
    ok(ss_site_targeted(&s, "all-linear", NULL, 0), "all-linear");
    snprintf(s.module, sizeof(s.module), "fc1");
    ok(!ss_site_targeted(&s, NULL, (const char *const[]){ "c1" }, 1),
       "list: a suffix not after a dot is no match");
    ok(ss_site_targeted(&s, NULL, l4, 1), "list: the name itself");
    ok(ss_site_targeted(&s, "fc[12]", NULL, 0), "pattern fc[12]");
    ok(!ss_site_targeted(&s, "fc[", NULL, 0), "a bad pattern matches nothing");
    ok(ss_sites_pattern_ok("fc[", &err) == SS_EINVAL
       && strstr(err.msg, "fc[") != NULL,
       "a bad pattern is refused naming it (%s)", err.msg);
    ok(ss_sites_pattern_ok("fc[12]", &err) == 0, "a good pattern passes");
    snprintf(s.module, sizeof(s.module), "x");
    snprintf(s.alt, sizeof(s.alt), "blk.fc1");
    ok(ss_site_targeted(&s, NULL, l4, 1), "list: the alt name matches too");
    ok(ss_site_targeted(&s, "blk\\..*", NULL, 0),
       "pattern: the alt name matches too");
    return tap_done();
}
