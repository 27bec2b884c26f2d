# SPDX-License-Identifier: Apache-2.0
#
# engine/plan: compiles a graph into a plan for one input shape (shape
# specialization, constant folding, fusion, layouts, low precision, memory
# planning) and executes it.  internal.h is this folder's header.

noinst_LIBRARIES += engine/plan/libssplan.a
engine_plan_libssplan_a_SOURCES = \
	engine/plan/internal.h engine/plan/plan.c engine/plan/plan_node.c \
	engine/plan/plan_finish.c \
	engine/plan/exec.c \
	engine/plan/plan_qdq.c engine/plan/plan_qdq.h \
	engine/plan/plan_qdq_pool.c engine/plan/plan_bf16.c \
	engine/plan/plan_fuse.c engine/plan/plan_fuse_ops.c \
	engine/plan/plan_fuse_conv.c engine/plan/plan_fuse_cat.c \
	engine/plan/plan_fuse_mm.c engine/plan/plan_fuse_scale.c \
	engine/plan/plan_fuse_dw.c \
	engine/plan/plan_fuse_move.c \
	engine/plan/plan_chunkbuf.c \
	engine/plan/plan_fuse_ln.c engine/plan/plan_layout.c \
	engine/plan/plan_chain.c engine/plan/plan_layout_rules.c \
	engine/plan/plan_edit.c engine/plan/plan_slice.c \
	engine/plan/plan_deadrows.c \
	engine/plan/plan_indep.c engine/plan/plan_indep.h \
	engine/plan/plan_indep_ops.c engine/plan/plan_indep_shape.c \
	engine/plan/plan_threads.c engine/plan/crew.c engine/plan/crew.h \
	engine/plan/pass_moe.c engine/plan/pass_moe_int.h \
	engine/plan/pass_moe_match.c engine/plan/moe_step.c \
	engine/plan/plan_ctrl.c engine/plan/plan_ctrl.h \
	engine/plan/plan_ctrl_loop.c engine/plan/plan_ctrl_scan.c
engine_plan_libssplan_a_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)

# What a program that runs models links, in order.
SS_ENGINE_LIBS = engine/plan/libssplan.a engine/ir/libssir.a \
	engine/ops/libssops.a engine/dnnl/libssdnnl.a engine/io/libssio.a \
	common/libsscommon.a $(PROTOBUF_C_LIBS) $(SSDNNL_LIBS) $(ZLIB_LIBS) -lm

check_PROGRAMS += tests/unit/test_plan
TESTS += tests/unit/test_plan
tests_unit_test_plan_SOURCES = tests/unit/test_plan.c tests/unit/onnx_build.h
tests_unit_test_plan_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_plan_LDADD = $(SS_ENGINE_LIBS)

# Taps: a hook changing a Gemm's output, the activation after it offered
# to the hook, whole and in row chunks.
check_PROGRAMS += tests/unit/test_taps
TESTS += tests/unit/test_taps
tests_unit_test_taps_SOURCES = tests/unit/test_taps.c tests/unit/onnx_build.h
tests_unit_test_taps_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_taps_LDADD = $(SS_ENGINE_LIBS)

# QDQ/int8 and bf16 plans; layouts.
check_PROGRAMS += tests/unit/test_qdq tests/unit/test_layout
TESTS += tests/unit/test_qdq tests/unit/test_layout
tests_unit_test_qdq_SOURCES = tests/unit/test_qdq.c tests/unit/run_util.h
tests_unit_test_qdq_LDADD = $(SS_ENGINE_LIBS)
tests_unit_test_layout_SOURCES = tests/unit/test_layout.c \
	tests/unit/onnx_build.h tests/unit/plan_runs.h
tests_unit_test_layout_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_layout_LDADD = $(SS_ENGINE_LIBS)
check_PROGRAMS += tests/unit/test_dw_fusion
TESTS += tests/unit/test_dw_fusion
tests_unit_test_dw_fusion_SOURCES = tests/unit/test_dw_fusion.c \
	tests/unit/onnx_build.h tests/unit/plan_runs.h
tests_unit_test_dw_fusion_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_dw_fusion_LDADD = $(SS_ENGINE_LIBS)
check_PROGRAMS += tests/unit/test_qdq_pool
TESTS += tests/unit/test_qdq_pool
tests_unit_test_qdq_pool_SOURCES = tests/unit/test_qdq_pool.c \
	tests/unit/onnx_build.h
tests_unit_test_qdq_pool_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_qdq_pool_LDADD = $(SS_ENGINE_LIBS)

# Batch slices and small plans on one thread.
check_PROGRAMS += tests/unit/test_slice
TESTS += tests/unit/test_slice
tests_unit_test_slice_SOURCES = tests/unit/test_slice.c \
	tests/unit/onnx_build.h tests/unit/plan_runs.h
tests_unit_test_slice_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_slice_LDADD = $(SS_ENGINE_LIBS)

# Dead rows: only what a Gather or Slice reads (plan_deadrows.c).
check_PROGRAMS += tests/unit/test_deadrows
TESTS += tests/unit/test_deadrows
tests_unit_test_deadrows_SOURCES = tests/unit/test_deadrows.c \
	tests/unit/onnx_build.h tests/unit/plan_runs.h
tests_unit_test_deadrows_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_deadrows_LDADD = $(SS_ENGINE_LIBS)

# Row independence (plan_indep*.c): the verdict on small graphs; those
# independent run batched against each row alone.
check_PROGRAMS += tests/unit/test_indep
TESTS += tests/unit/test_indep
tests_unit_test_indep_SOURCES = tests/unit/test_indep.c tests/unit/onnx_build.h
tests_unit_test_indep_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_indep_LDADD = $(SS_ENGINE_LIBS)

# Attention in groups of batch entries (plan_fuse_mm.c).
check_PROGRAMS += tests/unit/test_attn
TESTS += tests/unit/test_attn
tests_unit_test_attn_SOURCES = tests/unit/test_attn.c \
	tests/unit/onnx_build.h tests/unit/plan_runs.h
tests_unit_test_attn_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_attn_LDADD = $(SS_ENGINE_LIBS)

# Execution contexts give an outlier's arena back (common/workbuf.h).
check_PROGRAMS += tests/unit/test_workbuf
TESTS += tests/unit/test_workbuf
tests_unit_test_workbuf_SOURCES = tests/unit/test_workbuf.c \
	tests/unit/onnx_build.h
tests_unit_test_workbuf_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_workbuf_LDADD = $(SS_ENGINE_LIBS)
