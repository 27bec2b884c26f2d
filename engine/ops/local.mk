# SPDX-License-Identifier: Apache-2.0
#
# Reference op kernels (plain C): shape inference and execution for every
# ONNX op the engine supports.  The plan links this library.
noinst_LIBRARIES += engine/ops/libssops.a
engine_ops_libssops_a_SOURCES = \
	engine/ops/ops.h \
	engine/ops/binary.c \
	engine/ops/conv.c \
	engine/ops/elementwise.c \
	engine/ops/matmul.c \
	engine/ops/norm.c \
	engine/ops/pool.c \
	engine/ops/reduce.c \
	engine/ops/registry.c \
	engine/ops/shape.c \
	engine/ops/tensor.c \
	engine/ops/util.c \
	engine/ops/window.c
