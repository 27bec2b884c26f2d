/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_TRAIN_GRAD_H
#define SS_TESTS_TRAIN_GRAD_H

/*
 * test_train_grad's check (train_grad_check.c) and its groups of cases
 * (test_train_grad.c, train_grad_shape.c, train_grad_q.c,
 * train_grad_act.c), one program: main runs the groups in one order, so
 * each case draws the same values from gb_seed.
 */

#include "compress/train/train.h"
#include "tests/unit/train_gb.h"

/* Steps of the last trainer check() built that run oneDNN's BatchNorm,
 * Relu or pooling (compress/train/nn_dnn.c). */
extern int nn_dnn_steps;
/* Its values kept nChw16c. */
extern int blocked_values;
/* Of the last check_bf16's trainer: activations kept in bf16, and steps
 * of oneDNN's BatchNorm, Relu, pooling or Add that read one. */
extern int bf16_acts, bf16_nn_steps;
/* Steps of the last check's f32 trainer from a Div or Mul node. */
extern int divmul_steps;

int loss_at(ss_train_t *t, const ss_train_batch_t *bt, double *l);
/* The analytic gradient of a trainer built with gopts (NULL: the same
 * as the finite differences') against central finite differences of
 * the f32 trainer of base, within tol of the largest.  Frees g. */
void check_tol(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
               const ss_train_opts_t *gopts, double tol);
/* check_tol within 2e-2, one precision. */
void check(const char *name, ss_graph_t *g, const ss_train_opts_t *base);
/* The gradient of a trainer in mixed precision, with bf16 activations. */
void check_bf16(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
                double tol);

/* test_train_grad.c */
void binary_cases(void);
void unary_cases(void);
void gemm_cases(void);
void matmul_cases(void);
void norm_cases(void);
void conv_cases(void);
void pool_cases(void);
void nn_dnn_cases(void);
void bf16_cases(void);
void shape_cases(void);
/* train_grad_shape.c */
void index_cases(void);
void structure_cases(void);
void table_covers(void);
void tied_bn_case(void);
/* train_grad_q.c */
void qdq_cases(void);
void qdq_lsq_case(void);
void qdq_lsq_axis_case(void);
void loss_cases(void);
void optim_cases(void);
void table_cases(void);
void sophia_run(void);
/* train_grad_act.c */
void gelu_cases(void);
void vector_cases(void);
void pad_cases(void);
void clip_cases(void);
void act_ref_cases(void);
void attention16_cases(void);
void scaled_matmul_cases(void);
void bias_matmul_cases(void);
/* train_grad_shape.c */
void attention16_shape_cases(void);

#endif
