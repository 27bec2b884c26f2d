# SPDX-License-Identifier: Apache-2.0
#
# The trainer (compress/train/train.h): a training graph derived from a
# model's forward IR through per-op gradient rules, losses, optimizers.
# compress/train/internal.h is shared by its files and its unit tests.
# Kernels use OpenMP (libgomp, which oneDNN links anyway).

noinst_LIBRARIES += compress/train/libsstrain.a
compress_train_libsstrain_a_SOURCES = \
	compress/train/train.h compress/train/internal.h \
	compress/train/rules.h compress/train/kern.h \
	compress/train/build.c compress/train/build_tv.c \
	compress/train/build_params.c compress/train/build_mem.c \
	compress/train/rules.c compress/train/kern.c \
	compress/train/rules_elt.c compress/train/rules_mat.c \
	compress/train/rules_norm.c compress/train/rules_conv.c \
	compress/train/rules_shape.c compress/train/kern_elt.c \
	compress/train/kern_norm.c \
	compress/train/loss.c compress/train/optim.c compress/train/train.c \
	compress/train/rules_q.c compress/train/update.c compress/train/nn_dnn.c \
	compress/train/act16.c compress/train/fuse.c compress/train/slices.c
# -fvect-cost-model=dynamic: the kernels are elementwise loops of run-time
# length, which GCC's -O2 (very-cheap model) leaves scalar; vectorized
# they take 1.3-4x less time (docs/training.md).  -fno-math-errno lets
# sqrtf be an instruction in a vector loop (nothing here reads errno).
compress_train_libsstrain_a_CFLAGS = $(AM_CFLAGS) -fopenmp \
	-fvect-cost-model=dynamic -fno-math-errno

# What a program that trains links, in order.  The trainer runs its own
# training graph, not ss_plan_t; it links the plan library for the row
# analysis and the crew of its batch slices (slices.c).
SS_TRAIN_LIBS = compress/train/libsstrain.a engine/plan/libssplan.a \
	engine/ir/libssir.a \
	engine/ops/libssops.a engine/dnnl/libssdnnl.a engine/io/libssio.a \
	common/libsscommon.a $(PROTOBUF_C_LIBS) $(SSDNNL_LIBS) $(ZLIB_LIBS) -lm

# Small training graphs built in C, for the trainer's unit tests.
SS_TRAIN_GB = tests/unit/train_gb.h tests/unit/train_gb.c

# Tests: every gradient rule against finite differences.
check_PROGRAMS += tests/unit/test_train_grad
TESTS += tests/unit/test_train_grad
tests_unit_test_train_grad_SOURCES = tests/unit/test_train_grad.c \
	tests/unit/train_grad.h tests/unit/train_grad_check.c \
	tests/unit/train_grad_shape.c tests/unit/train_grad_q.c \
	tests/unit/train_grad_act.c $(SS_TRAIN_GB)
tests_unit_test_train_grad_CFLAGS = $(AM_CFLAGS) -DSS_TAP_EXTERN
tests_unit_test_train_grad_LDADD = $(SS_TRAIN_LIBS)

# 20 steps of the fixture models against PyTorch's curves and weights
# (tests/fixtures/train/make_train_refs.py made them; it needs torch, so
# its outputs are committed).  Links the plan too: it reloads an export.
check_PROGRAMS += tests/unit/test_train_models
TESTS += tests/unit/test_train_models
tests_unit_test_train_models_SOURCES = tests/unit/test_train_models.c
tests_unit_test_train_models_LDADD = compress/train/libsstrain.a \
	$(SS_ENGINE_LIBS)
EXTRA_DIST += tests/fixtures/train/make_train_refs.py \
	tests/fixtures/train/mlp_ref.npz tests/fixtures/train/cnn_ref.npz \
	tests/fixtures/train/transformer_ref.npz
EXTRA_DIST += tests/fixtures/train/make_optim_refs.py \
	tests/fixtures/train/optim_ref.npz
# mobilenet-style nets and the activations' kinks (make_mbnet_refs.py)
EXTRA_DIST += tests/fixtures/train/make_mbnet_refs.py \
	tests/fixtures/train/mbnet_ref.npz tests/fixtures/train/hsnet_ref.npz \
	tests/fixtures/train/act_ref.npz tests/fixtures/mbnet_op13/model.onnx \
	tests/fixtures/hsnet_op17/model.onnx

# The measurement behind bench/train.py (not installed).
noinst_PROGRAMS += compress/train/train-bench
compress_train_train_bench_SOURCES = compress/train/bench_main.c
compress_train_train_bench_LDADD = $(SS_TRAIN_LIBS)

# Parallel batch slices (slices.c): sliced on 2 threads against whole on
# one, and the cases that must run whole.
check_PROGRAMS += tests/unit/test_train_slices
TESTS += tests/unit/test_train_slices
tests_unit_test_train_slices_SOURCES = tests/unit/test_train_slices.c \
	tests/unit/onnx_build.h tests/unit/threads_named.h
tests_unit_test_train_slices_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_train_slices_LDADD = $(SS_TRAIN_LIBS)

# Mixed precision: bf16 curves against PyTorch's f32, gradients against
# the f32 trainer's, f32 master weights, and the refusal without bf16.
check_PROGRAMS += tests/unit/test_train_bf16
TESTS += tests/unit/test_train_bf16
tests_unit_test_train_bf16_SOURCES = tests/unit/test_train_bf16.c
tests_unit_test_train_bf16_LDADD = $(SS_TRAIN_LIBS)

# Blocked-layout convolutions train as NCHW ones do (loss curves, weights,
# determinism), on a CNN with grouped, depthwise, strided and dilated
# convolutions.
check_PROGRAMS += tests/unit/test_train_layout
TESTS += tests/unit/test_train_layout
tests_unit_test_train_layout_SOURCES = tests/unit/test_train_layout.c \
	$(SS_TRAIN_GB)
tests_unit_test_train_layout_LDADD = $(SS_TRAIN_LIBS)

# The fused optimizer update, both paths, against a double reference.
check_PROGRAMS += tests/unit/test_train_update
TESTS += tests/unit/test_train_update
tests_unit_test_train_update_SOURCES = tests/unit/test_train_update.c
tests_unit_test_train_update_CFLAGS = $(AM_CFLAGS) -fopenmp
tests_unit_test_train_update_LDADD = $(SS_TRAIN_LIBS)

# bf16's ceiling on an MLP's products (bench/train.py --ceiling).
noinst_PROGRAMS += compress/train/mm-ceiling
compress_train_mm_ceiling_SOURCES = compress/train/mm_ceiling.c
compress_train_mm_ceiling_LDADD = $(SS_TRAIN_LIBS)
