/* SPDX-License-Identifier: Apache-2.0 */
/* Fixture loading for the compress tests (see test_compress.h). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test_compress.h"

const char *
tc_path(const char *rel)
{
    static char buf[4096];
    const char *top = getenv("top_srcdir");

    snprintf(buf, sizeof(buf), "%s/%s", top != NULL ? top : ".", rel);
    return buf;
}

int
tc_data_load(tc_data_t *d, const char *model, const char *part, int64_t rows)
{
    char rel[256];
    ss_err_t err = { 0 };
    int i, rc;

    memset(d, 0, sizeof(*d));
    snprintf(rel, sizeof(rel), "tests/fixtures/digits/%s_%s.npz", model,
             part);
    if ((rc = ss_npz_read(tc_path(rel), SS_NPY_DEFAULT_MAX_BYTES, &d->z,
                          &err)) < 0) {
        fprintf(stderr, "# %s\n", err.msg);
        return rc;
    }
    for (i = 0; i < ss_npz_count(d->z); i++) {
        if (strcmp(ss_npz_name(d->z, i), "labels") == 0)
            rc = ss_npz_take(d->z, i, &d->labels);
        else
            rc = ss_npz_take(d->z, i, &d->input);
        if (rc < 0)
            return rc;
    }
    d->ds.n_inputs = 1;
    d->ds.inputs = &d->input;
    d->ds.rows = d->input.dims[0];
    if (rows > 0 && rows < d->ds.rows) {
        d->ds.rows = rows;
        d->input.dims[0] = rows;
        d->labels.dims[0] = rows;
    }
    d->ds.labels = &d->labels;
    return 0;
}

void
tc_data_free(tc_data_t *d)
{
    ss_tensor_free_data(&d->input);
    ss_tensor_free_data(&d->labels);
    ss_npz_free(d->z);
    memset(d, 0, sizeof(*d));
}

ss_graph_t *
tc_model_load(const char *model)
{
    char rel[256];
    ss_err_t err = { 0 };
    ss_graph_t *g = NULL;

    snprintf(rel, sizeof(rel), "tests/fixtures/%s_op13/model.onnx", model);
    if (ss_graph_load_onnx(tc_path(rel), &g, &err) < 0)
        fprintf(stderr, "# %s\n", err.msg);
    return g;
}
