/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which ONNX nodes and opsets the engine accepts, checked before anything
 * is built from a file (onnx.c's import), with one message naming every
 * unsupported op so a user fixes them in one go.
 *
 * THREADS: [any]; pure functions of their arguments.
 */

#include <stdio.h>
#include <string.h>

#include "engine/ir/internal.h"

static const char *
nz(const char *s)
{
    return s != NULL ? s : "";
}

void
ss__onnx_node_label(const Onnx__NodeProto *np, size_t idx, char *buf, size_t len)
{
    if (np->name != NULL && np->name[0] != '\0')
        snprintf(buf, len, "'%s'", np->name);
    else
        snprintf(buf, len, "#%zu", idx);
}

int
ss__onnx_default_domain(const char *d)
{
    return d == NULL || d[0] == '\0' || strcmp(d, "ai.onnx") == 0;
}

static int
constant_supported(const Onnx__NodeProto *np)
{
    static const char *const ok_attrs[] = {
        "value", "value_float", "value_floats", "value_int", "value_ints"
    };

    if (np->n_attribute != 1 || np->n_output != 1)
        return 0;
    for (size_t i = 0; i < sizeof(ok_attrs) / sizeof(ok_attrs[0]); i++)
        if (strcmp(nz(np->attribute[0]->name), ok_attrs[i]) == 0)
            return 1;
    return 0;
}

/* Ops of another domain that the engine has a kernel for are registered,
 * and kept in the graph, as "<domain>.<op_type>" (com.microsoft.MoE), so
 * that a name never means two ops; the node's domain is kept too, for
 * the exporter. */
const char *
ss__onnx_qualified(const Onnx__NodeProto *np, char *buf, size_t len)
{
    if (ss__onnx_default_domain(np->domain))
        return nz(np->op_type);
    snprintf(buf, len, "%s.%s", nz(np->domain), nz(np->op_type));
    return buf;
}

static int
op_supported(const Onnx__NodeProto *np)
{
    const char *op = nz(np->op_type);
    char q[160];

    if (!ss__onnx_default_domain(np->domain))
        return ss__op_find(ss__onnx_qualified(np, q, sizeof(q))) != NULL;
    if (strcmp(op, "Constant") == 0)
        return constant_supported(np);
    /* the plan handles these itself */
    if (strcmp(op, "Identity") == 0 || strcmp(op, "Dropout") == 0
        || strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0
        || strcmp(op, "If") == 0 || strcmp(op, "Loop") == 0
        || strcmp(op, "Scan") == 0)
        return 1;
    return ss__op_find(op) != NULL;
}

/* One message for every unsupported op, so a user fixes them in one go. */
int
ss__onnx_check_ops(const Onnx__GraphProto *gp, const ss_graph_t *g,
                   const char *source, ss_err_t *err)
{
    char msg[SS_ERR_MSG_MAX], label[96];
    size_t off = 0, n_bad = 0, n_listed = 0;
    int n;

    msg[0] = '\0';
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];

        if (op_supported(np))
            continue;
        n_bad++;
        ss__onnx_node_label(np, i, label, sizeof(label));
        n = snprintf(msg + off, sizeof(msg) - off, "%s%s%s%s (node %s)",
                     n_listed ? ", " : "",
                     ss__onnx_default_domain(np->domain) ? "" : nz(np->domain),
                     ss__onnx_default_domain(np->domain) ? "" : "::",
                     nz(np->op_type), label);
        if (n > 0 && (size_t)n < sizeof(msg) - off - 48) {
            off += (size_t)n;
            n_listed++;
        } else {
            msg[off] = '\0';
        }
    }
    if (n_bad == 0)
        return 0;
    if (n_listed < n_bad)
        snprintf(msg + off, sizeof(msg) - off, " and %zu more",
                 n_bad - n_listed);
    return ss_err_set(err, SS_EUNSUPP, "%s (opset %d): unsupported op%s: %s",
                      source, g->opset, n_bad > 1 ? "s" : "", msg);
}

int
ss__onnx_check_opset(const Onnx__ModelProto *m, ss_graph_t *g,
                     const char *source, ss_err_t *err)
{
    int64_t v = -1;

    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];

        if (ss__onnx_default_domain(o->domain))
            v = o->has_version ? o->version : -1;
    }
    if (v < 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: imports no version of the "
                          "default ONNX opset", source);
    /* Below 7, only nodes whose version opset 7 has too run: opset.c */
    if (v < 1 || v > 17)
        return ss_err_set(err, SS_EUNSUPP, "%s: opset %lld of the default "
                          "ONNX domain is not supported (7 to 17 are, and "
                          "older models whose ops opset 7 still has)",
                          source, (long long)v);
    g->opset = (int)v;
    return 0;
}
