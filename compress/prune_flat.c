/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unstructured pruning: zeros in place (prune.c has the structured kind).
 *
 * DESIGN: magnitude pruning zeroes the smallest |w| of every layer
 * weight, with one threshold over all layers (global) or one per layer.
 * The engine has no sparse kernels (oneDNN 2.6 has none), so the variant
 * runs at the same speed; it is only smaller once compressed (zeros
 * deflate), and the details say so.  A sparsity that zeroes no weight
 * that was not zero already is "changed": false (the job is rejected).
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/alloc.h"
#include "compress/prune_int.h"

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return x < y ? -1 : x > y;
}

/* Bytes of the layer weights once deflated (what a zip or a compressed
 * file system makes of them), or 0 when zlib fails. */
static size_t
deflated_bytes(const ss_graph_t *g, const ss__layer_t *l, int n)
{
    size_t total = 0;
    int i;

    for (i = 0; i < n; i++) {
        const ss_tensor_t *w = g->values[l[i].w].constant;
        uLong len = (uLong)ss_tensor_numel(w) * sizeof(float);
        uLongf cap = compressBound(len);
        Bytef *buf = ss_malloc(cap);

        if (buf == NULL || compress2(buf, &cap, w->data, len, 6) != Z_OK) {
            ss_free(buf);
            return 0;
        }
        total += cap;
        ss_free(buf);
    }
    return total;
}

/* Zeroes exactly k entries of w: those below thr, then ties at thr. */
static int64_t
zero_below(float *w, int64_t n, float thr, int64_t k)
{
    int64_t i, z = 0;

    for (i = 0; i < n && z < k; i++)
        if (fabsf(w[i]) < thr) {
            w[i] = 0.0f;
            z++;
        }
    for (i = 0; i < n && z < k; i++)
        if (fabsf(w[i]) == thr && w[i] != 0.0f) {
            w[i] = 0.0f;
            z++;
        }
    return z;
}

int
ss__prune_unstructured(ss__cx_t *cx, const ss_method_t *m, ss_graph_t *g,
                       json_t *note, ss_err_t *err)
{
    ss__layer_t *l = NULL;
    float *mag = NULL;
    json_t *arr = json_array();
    int64_t total = 0, off, zeros = 0, zeros_before = 0, zeros_after = 0;
    size_t z_before, dense = 0;
    int n = 0, i, rc;

    if (arr == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    if ((rc = ss__find_layers(g, &l, &n, err)) < 0)
        goto done;
    for (i = 0; i < n; i++)
        total += ss_tensor_numel(g->values[l[i].w].constant);
    z_before = deflated_bytes(g, l, n);
    if ((mag = ss_malloc(sizeof(float) * (size_t)(total + 1))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to prune");
        goto done;
    }
    for (off = 0, i = 0; i < n; i++) {
        const ss_tensor_t *w = g->values[l[i].w].constant;
        int64_t k, e = ss_tensor_numel(w);

        for (k = 0; k < e; k++) {
            mag[off + k] = fabsf(((const float *)w->data)[k]);
            zeros_before += mag[off + k] == 0.0f;
        }
        off += e;
    }
    if (m->u.prune.global && total > 0) {
        /* One threshold; ties at it are split in layer order. */
        int64_t k = (int64_t)llround(m->u.prune.sparsity * (double)total);
        float thr;

        qsort(mag, (size_t)total, sizeof(float), cmp_float);
        thr = k > 0 ? mag[k - 1] : -1.0f;
        for (i = 0; i < n && k > 0; i++) {
            ss_tensor_t *w = g->values[l[i].w].constant;
            int64_t e = ss_tensor_numel(w), below = 0, j;

            for (j = 0; j < e; j++)
                below += fabsf(((float *)w->data)[j]) <= thr;
            below = zero_below(w->data, e, thr, below < k ? below : k);
            zeros += below;
            k -= below;
        }
    } else {
        for (off = 0, i = 0; i < n; i++) {
            ss_tensor_t *w = g->values[l[i].w].constant;
            int64_t e = ss_tensor_numel(w);
            int64_t k = (int64_t)llround(m->u.prune.sparsity * (double)e);

            qsort(mag + off, (size_t)e, sizeof(float), cmp_float);
            if (k > 0)
                zeros += zero_below(w->data, e, mag[off + k - 1], k);
            off += e;
        }
    }
    for (i = 0; i < n; i++) {
        const ss_tensor_t *w = g->values[l[i].w].constant;
        int64_t e = ss_tensor_numel(w), z = 0, j;

        for (j = 0; j < e; j++)
            z += ((const float *)w->data)[j] == 0.0f;
        zeros_after += z;
        json_array_append_new(arr, json_pack(
            "{s:s, s:I, s:f}", "layer", ss__node_label(g, l[i].node),
            "weights", (json_int_t)e, "sparsity", e ? (double)z / e : 0.0));
    }
    json_object_set_new(note, "kind", json_string("unstructured"));
    json_object_set_new(note, "changed", json_boolean(zeros_after
                                                      > zeros_before));
    if (zeros_after <= zeros_before)
        json_object_set_new(note, "reason", json_string(n == 0
            ? "no layer with a constant weight"
            : "the sparsity zeroes no weight that was not zero already"));
    json_object_set_new(note, "layers", arr);
    arr = NULL;
    json_object_set_new(note, "zeroed", json_integer(zeros));
    for (i = 0; i < n; i++)
        dense += (size_t)ss_tensor_numel(g->values[l[i].w].constant)
                 * sizeof(float);
    json_object_set_new(note, "layer_bytes", json_integer((json_int_t)dense));
    json_object_set_new(note, "deflated_bytes_before",
                        json_integer((json_int_t)z_before));
    json_object_set_new(note, "deflated_bytes_after",
                        json_integer((json_int_t)deflated_bytes(g, l, n)));
    json_object_set_new(note, "sparsity", json_real(
        total ? (double)zeros / (double)total : 0.0));
    json_object_set_new(note, "note", json_string(
        "zeros in place: same speed (no sparse kernels), smaller only when "
        "the file is compressed"));
    (void)cx;
done:
    json_decref(arr);
    ss_free(mag);
    ss_free(l);
    return rc;
}
