/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LoRA sites and PEFT's target_modules (sites.h says what and why).
 */

#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/sites.h"

/* "/layers.0/attn/qkv/MatMul" -> "layers.0.attn.qkv" into out; false
 * when the name has no path or does not fit. */
static bool
module_of_node(const char *name, char *out, size_t n)
{
    const char *last;
    size_t k;

    if (name == NULL || name[0] != '/' || (last = strrchr(name, '/')) == name
        || (size_t)(last - name - 1) >= n)
        return false;
    k = (size_t)(last - name - 1);
    memcpy(out, name + 1, k);
    out[k] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '/')
            *p = '.';
    return true;
}

/* See ss_site_t.y_bias. */
static int
past_bias(const ss_graph_t *g, int y, int64_t out)
{
    const ss_node_t *add = NULL;
    const ss_tensor_t *c;
    int readers = 0, b;

    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == y)
            return y;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == y) {
                readers++;
                add = &g->nodes[i];
            }
    if (readers != 1 || strcmp(add->op_type, "Add") != 0
        || (add->domain != NULL && add->domain[0] != '\0')
        || add->n_inputs != 2 || add->n_outputs < 1 || add->outputs[0] < 0)
        return y;
    b = add->inputs[0] == y ? add->inputs[1] : add->inputs[0];
    c = b >= 0 ? g->values[b].constant : NULL;
    /* [out] (or [1, out]): the shape of y, whatever its rank */
    if (c == NULL || c->dtype != SS_DTYPE_F32 || c->ndim < 1 || c->ndim > 2
        || c->dims[c->ndim - 1] != out || ss_tensor_numel(c) != out)
        return y;
    return add->outputs[0];
}

/* The site of node i of g into *s; false when it is none. */
static bool
site_of(const ss_graph_t *g, int i, ss_site_t *s)
{
    const ss_node_t *n = &g->nodes[i];
    bool gemm = strcmp(n->op_type, "Gemm") == 0;
    const ss_value_t *w;
    size_t wl;

    memset(s, 0, sizeof(*s));
    if ((!gemm && strcmp(n->op_type, "MatMul") != 0)
        || (n->domain != NULL && n->domain[0] != '\0') || n->n_inputs < 2
        || n->inputs[0] < 0 || n->inputs[1] < 0 || n->n_outputs < 1
        || n->outputs[0] < 0)
        return false;
    w = &g->values[n->inputs[1]];
    if (w->constant == NULL || w->constant->ndim != 2
        || w->constant->dtype != SS_DTYPE_F32
        || g->values[n->inputs[0]].constant != NULL
        || (gemm && (ss__attr_int(n, "transA", 0) != 0
                     || ss__attr_float(n, "alpha", 1.0f) != 1.0f)))
        return false;
    s->node = i;
    s->x = n->inputs[0];
    s->y = n->outputs[0];
    s->w = n->inputs[1];
    s->w_nk = gemm && ss__attr_int(n, "transB", 0) != 0;
    s->out = s->w_nk ? w->constant->dims[0] : w->constant->dims[1];
    s->in = s->w_nk ? w->constant->dims[1] : w->constant->dims[0];
    s->y_bias = gemm ? s->y : past_bias(g, s->y, s->out);
    wl = w->name != NULL ? strlen(w->name) : 0;
    if (wl > 7 && wl - 7 < SS_SITE_NAME_MAX
        && strcmp(w->name + wl - 7, ".weight") == 0) {
        memcpy(s->module, w->name, wl - 7);
        s->module[wl - 7] = '\0';
        module_of_node(n->name, s->alt, sizeof(s->alt));
        return true;
    }
    /* no name an adapter could use: no site */
    return module_of_node(n->name, s->module, sizeof(s->module));
}

int
ss_sites_find(const ss_graph_t *g, ss_site_t **out, int *n, ss_err_t *err)
{
    ss_site_t *s = NULL;
    int k = 0;

    *out = NULL;
    *n = 0;
    if (g->n_nodes > 0
        && (s = ss_calloc((size_t)g->n_nodes, sizeof(*s))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for LoRA sites");
    for (int i = 0; i < g->n_nodes; i++)
        if (site_of(g, i, &s[k]))
            k++;
    if (k == 0) {
        ss_free(s);
        s = NULL;
    }
    *out = s;
    *n = k;
    return 0;
}

/* regcomp of "^(pattern)$" (re.fullmatch); false when it does not. */
static bool
compile(const char *pattern, regex_t *re)
{
    size_t pn = strlen(pattern);
    char *full;
    int rc;

    if (pn > 4096 || (full = ss_malloc(pn + 8)) == NULL)
        return false;
    snprintf(full, pn + 8, "^(%s)$", pattern);
    rc = regcomp(re, full, REG_EXTENDED | REG_NOSUB);
    ss_free(full);
    return rc == 0;
}

int
ss_sites_pattern_ok(const char *pattern, ss_err_t *err)
{
    regex_t re;

    if (strcmp(pattern, "all-linear") == 0)
        return 0;
    if (!compile(pattern, &re))
        return ss_err_set(err, SS_EINVAL, "target_modules '%s' is not a "
                          "regular expression (POSIX extended)", pattern);
    regfree(&re);
    return 0;
}

static bool
listed(const char *module, const char *const *names, int n)
{
    size_t mn = strlen(module);

    if (mn == 0)
        return false;
    for (int i = 0; i < n; i++) {
        size_t tn = names[i] != NULL ? strlen(names[i]) : 0;

        if (names[i] != NULL
            && (strcmp(names[i], module) == 0
                || (mn > tn && module[mn - tn - 1] == '.'
                    && strcmp(module + mn - tn, names[i]) == 0)))
            return true;
    }
    return false;
}

bool
ss_site_targeted(const ss_site_t *s, const char *pattern,
                 const char *const *names, int n)
{
    regex_t re;
    bool hit;

    if (pattern == NULL)
        return listed(s->module, names, n) || listed(s->alt, names, n);
    if (strcmp(pattern, "all-linear") == 0)
        return true;
    if (!compile(pattern, &re))
        return false;
    hit = regexec(&re, s->module, 0, NULL, 0) == 0
          || (s->alt[0] != '\0' && regexec(&re, s->alt, 0, NULL, 0) == 0);
    regfree(&re);
    return hit;
}
