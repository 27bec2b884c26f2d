/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_TRAIN_GB_H
#define SS_TESTS_TRAIN_GB_H

/*
 * Builds small training graphs in C for the trainer's unit tests
 * (test_train_grad*, test_train_layout): float initializers from a
 * seeded stream, nodes with up to 8 attributes, one output.
 *
 *   gb_t b;
 *   gb_init(&b, 17);
 *   x = gb_param(&b, "x", 2, dims, -1, 1);
 *   attr_i(&b, "transB", 1);          attributes of the next node
 *   y = gb_node(&b, "Gemm", 3, in);
 *   g = gb_done(&b, y);               NULL (and a TAP diagnostic) on error
 *
 * Values come from gb_seed, one stream for the whole program: a test
 * sets it once and its cases draw in order.
 */

#include <stdint.h>

#include "engine/ir/ir.h"

typedef struct gb {
    ss_graph_t *g;
    ss_err_t err;
    int n_attrs;
    ss_attr_t attrs[8];
    int64_t ibuf[8][8];
} gb_t;

extern uint64_t gb_seed;

/* Uniform in [0, 1) from gb_seed. */
double gb_urand(void);

void gb_init(gb_t *b, int opset);
int gb_param(gb_t *b, const char *name, int nd, const int64_t *dims,
             double lo, double hi);
int gb_spread(gb_t *b, const char *name, int nd, const int64_t *dims);
int gb_scalar(gb_t *b, const char *name, float v);
int gb_ints(gb_t *b, const char *name, int nd, const int64_t *dims,
            const int64_t *vals);
void attr_i(gb_t *b, const char *name, int64_t v);
void attr_f(gb_t *b, const char *name, float v);
void attr_ints(gb_t *b, const char *name, int n, const int64_t *v);
int gb_node_named(gb_t *b, const char *name, const char *op, int n_in,
                  const int *in);
int gb_node(gb_t *b, const char *op, int n_in, const int *in);
ss_graph_t *gb_done(gb_t *b, int out);

#endif
