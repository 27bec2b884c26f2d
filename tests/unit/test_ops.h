/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_UNIT_TEST_OPS_H
#define SS_TESTS_UNIT_TEST_OPS_H

/*
 * Reference cases for the op kernels: inputs, attributes and expected
 * outputs computed by numpy (tests/unit/test_ops_gen.py writes
 * test_ops_data.c; the runner is test_ops_ref.c).
 */

#include "engine/ir/ir.h"

typedef struct tc_tensor {
    ss_dtype_t dt;          /* SS_DTYPE_UNDEFINED: an omitted input */
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    const void *data;
} tc_tensor_t;

typedef struct tc_case {
    const char *name;
    const char *op;
    int opset;
    int n_attrs;
    ss_attr_t *attrs;
    int n_in;
    const tc_tensor_t *in;
    int n_out;
    const tc_tensor_t *out;  /* dt UNDEFINED: an omitted output */
    unsigned dynamic;        /* inputs whose data infer does not see */
    double rtol, atol;
} tc_case_t;

extern const tc_case_t tc_cases[];
extern const int tc_n_cases;

#endif
