/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TEST_COMPRESS_H
#define SS_TEST_COMPRESS_H

/* Fixture loading shared by the compress tests. */

#include "compress/compress.h"
#include "engine/io/npy.h"

typedef struct tc_data {
    ss_npz_t *z;
    ss_tensor_t input;          /* owned */
    ss_tensor_t labels;         /* owned */
    ss_dataset_t ds;            /* points into the above */
} tc_data_t;

/* Loads tests/fixtures/digits/<model>_<part>.npz (rows: first rows, 0 =
 * all). */
int tc_data_load(tc_data_t *d, const char *model, const char *part,
                 int64_t rows);
void tc_data_free(tc_data_t *d);
/* Loads tests/fixtures/<model>_op13/model.onnx. */
ss_graph_t *tc_model_load(const char *model);
/* A path under the source tree (static buffer). */
const char *tc_path(const char *rel);

#endif
