/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_graph_check_inputs(): the one check of input tensors against a
 * graph's inputs (names, dtypes, shapes, rows), shared by inference
 * requests, the batcher, compression jobs and the compressor's datasets.
 *
 * DESIGN: shapes are written out only on the error path: a request that
 * is fine costs a few compares per dim.
 *
 * THREADS: [any]; reads the graph, which is immutable.
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/ir/ir.h"

static void
shape_text(char *buf, size_t n, int ndim, const int64_t *dims)
{
    size_t k = 0;
    int i;

    k += (size_t)snprintf(buf + k, n - k, "[");
    for (i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "",
                              (long long)dims[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

static const char *
dtype_text(ss_dtype_t t)
{
    const char *s = ss_dtype_kserve_name(t);

    return s != NULL ? s : "?";
}

/* The caller's tensor for graph input io, or NULL. */
static const ss_tensor_t *
find(const ss_io_info_t *io, int k, int n, const ss_tensor_t *inputs,
     const char *const *names)
{
    int i;

    if (names == NULL)
        return k < n ? &inputs[k] : NULL;
    for (i = 0; i < n; i++)
        if (names[i] != NULL && strcmp(names[i], io->name) == 0)
            return &inputs[i];
    return NULL;
}

/* Checks one tensor against one graph input. */
static int
check_one(const ss_io_info_t *io, const ss_tensor_t *t, unsigned flags,
          ss_err_t *err)
{
    char want[128], got[128];
    int64_t numel;
    size_t es;
    int d;

    if (t->dtype != io->dtype)
        return ss_err_set(err, SS_EINVAL, "input '%s': datatype %s, "
                          "expected %s", io->name, dtype_text(t->dtype),
                          dtype_text(io->dtype));
    if (t->ndim < 0 || t->ndim > SS_MAX_DIMS ||
        (io->ndim >= 0 && t->ndim != io->ndim)) {
        shape_text(want, sizeof(want), io->ndim, io->dims);
        shape_text(got, sizeof(got), t->ndim < 0 ? 0 : t->ndim, t->dims);
        return ss_err_set(err, SS_EINVAL, "input '%s': shape %s has %d "
                          "dims, expected %s", io->name, got, t->ndim,
                          io->ndim >= 0 ? want : "at most 8");
    }
    if ((flags & SS_INPUTS_ROWS) && t->ndim < 1)
        return ss_err_set(err, SS_EINVAL, "input '%s': a scalar has no "
                          "batch dim", io->name);
    for (d = 0; d < t->ndim; d++) {
        int fixed = io->ndim >= 0 && io->dims[d] >= 0 &&
                     !(d == 0 && (flags & SS_INPUTS_ROWS));

        if (t->dims[d] <= 0 || (fixed && t->dims[d] != io->dims[d])) {
            shape_text(want, sizeof(want), io->ndim, io->dims);
            shape_text(got, sizeof(got), t->ndim, t->dims);
            return ss_err_set(err, SS_EINVAL, "input '%s': shape %s, "
                              "expected %s%s", io->name, got, want,
                              t->dims[d] <= 0 ? " (no empty dims)" : "");
        }
    }
    es = ss_dtype_size(t->dtype);
    if ((numel = ss_tensor_numel(t)) < 0 ||
        (es > 0 && (uint64_t)numel > SIZE_MAX / es)) {
        shape_text(got, sizeof(got), t->ndim, t->dims);
        return ss_err_set(err, SS_EINVAL, "input '%s': shape %s is too "
                          "large", io->name, got);
    }
    if (t->data == NULL)
        return ss_err_set(err, SS_EINVAL, "input '%s': no data", io->name);
    return 0;
}

int
ss_graph_check_inputs(const ss_graph_t *g, int n, const ss_tensor_t *inputs,
                      const char *const *names, unsigned flags,
                      ss_tensor_t *ordered, int64_t *rows, ss_err_t *err)
{
    int64_t r = -1;
    int i, k, rc;

    if (rows != NULL)
        *rows = (flags & SS_INPUTS_ROWS) ? 0 : 1;
    if (n < 0 || (n > 0 && inputs == NULL))
        return ss_err_set(err, SS_EINVAL, "no input tensors given");
    if (names == NULL && n != g->n_inputs)
        return ss_err_set(err, SS_EINVAL, "expected %d inputs, got %d",
                          g->n_inputs, n);
    if (names != NULL && !(flags & SS_INPUTS_EXTRA_OK)) {
        for (i = 0; i < n; i++) {
            for (k = 0; k < g->n_inputs; k++)
                if (names[i] != NULL &&
                    strcmp(g->input_info[k].name, names[i]) == 0)
                    break;
            if (k == g->n_inputs)
                return ss_err_set(err, SS_EINVAL, "unknown input '%s'",
                                  names[i] ? names[i] : "(null)");
        }
    }
    for (k = 0; k < g->n_inputs; k++) {
        const ss_io_info_t *io = &g->input_info[k];
        const ss_tensor_t *t = find(io, k, n, inputs, names);

        if (t == NULL)
            return ss_err_set(err, SS_EINVAL, "missing input '%s'",
                              io->name);
        if ((rc = check_one(io, t, flags, err)) < 0)
            return rc;
        if (flags & SS_INPUTS_ROWS) {
            if (r >= 0 && t->dims[0] != r)
                return ss_err_set(err, SS_EINVAL, "input '%s': batch %lld "
                                  "differs from the other inputs' %lld",
                                  io->name, (long long)t->dims[0],
                                  (long long)r);
            r = t->dims[0];
        }
        if (ordered != NULL)
            ordered[k] = *t;
    }
    if (rows != NULL && (flags & SS_INPUTS_ROWS))
        *rows = r > 0 ? r : 0;
    return 0;
}
