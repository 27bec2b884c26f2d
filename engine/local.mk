# SPDX-License-Identifier: Apache-2.0
#
# The engine core: ONNX import (protobuf-c code generated at build time
# from engine/onnx.proto into the build tree), the graph IR, the plan
# compiler and executor.

noinst_LIBRARIES += engine/libssengine.a
engine_libssengine_a_SOURCES = \
	engine/engine.h engine/ir.h \
	engine/dtype_size.h engine/dtype.c engine/graph.c \
	engine/onnx_int.h engine/onnx.c engine/onnx_tensor.c \
	engine/plan_int.h engine/plan.c engine/exec.c \
	engine/plan_fuse_int.h engine/plan_fuse.c engine/plan_fuse_ops.c \
	engine/plan_fuse_ln.c engine/plan_layout.h engine/plan_layout.c \
	engine/edit.h engine/edit.c engine/export.c engine/plan_lowp.h \
	engine/plan_lowp.c engine/plan_qdq.c engine/plan_bf16.c
nodist_engine_libssengine_a_SOURCES = engine/onnx.pb-c.c engine/onnx.pb-c.h
engine_libssengine_a_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)

EXTRA_DIST += engine/onnx.proto
BUILT_SOURCES += engine/onnx.pb-c.c engine/onnx.pb-c.h
CLEANFILES += engine/onnx.pb-c.c engine/onnx.pb-c.h

engine/onnx.pb-c.c: engine/onnx.proto
	$(AM_V_GEN)$(MKDIR_P) engine && \
	$(PROTOC_C) --proto_path=$(srcdir)/engine --c_out=engine \
		$(srcdir)/engine/onnx.proto
engine/onnx.pb-c.h: engine/onnx.pb-c.c
	@test -f $@ || { rm -f engine/onnx.pb-c.c; \
		$(MAKE) $(AM_MAKEFLAGS) engine/onnx.pb-c.c; }

# What a program that runs models links, in order.
SS_ENGINE_LIBS = engine/libssengine.a engine/libssio.a engine/libssdnnl.a \
	engine/ops/libssops.a common/libsscommon.a \
	$(PROTOBUF_C_LIBS) $(SSDNNL_LIBS) $(ZLIB_LIBS) -lm

check_PROGRAMS += tests/unit/test_onnx
TESTS += tests/unit/test_onnx
tests_unit_test_onnx_SOURCES = tests/unit/test_onnx.c tests/unit/onnx_build.h
tests_unit_test_onnx_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_onnx_LDADD = $(SS_ENGINE_LIBS)

check_PROGRAMS += tests/unit/test_plan
TESTS += tests/unit/test_plan
tests_unit_test_plan_SOURCES = tests/unit/test_plan.c tests/unit/onnx_build.h
tests_unit_test_plan_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_plan_LDADD = $(SS_ENGINE_LIBS)

# The saved fuzz reproducers, replayed through the fuzz target itself
# (tests/fuzz/run.sh replays them under libFuzzer too).
check_PROGRAMS += tests/fuzz/test_replay
TESTS += tests/fuzz/test_replay
tests_fuzz_test_replay_SOURCES = tests/fuzz/test_replay.c \
	tests/fuzz/fuzz_onnx.c
tests_fuzz_test_replay_LDADD = $(SS_ENGINE_LIBS)
EXTRA_DIST += $(FUZZ_CRASHES)
FUZZ_CRASHES = \
	tests/fuzz/crashes/fuzz_onnx-asan-fuse-ln-stack-overflow \
	tests/fuzz/crashes/fuzz_onnx-oom-constant-fold \
	tests/fuzz/crashes/fuzz_onnx-ub-binary-null-input \
	tests/fuzz/crashes/fuzz_onnx-ub-empty-string-attr \
	tests/fuzz/crashes/fuzz_onnx-ub-unary-null-input

# Graph editing and ONNX export (engine/edit.h); QDQ/int8 and bf16 plans.
check_PROGRAMS += tests/unit/test_edit tests/unit/test_qdq
TESTS += tests/unit/test_edit tests/unit/test_qdq
tests_unit_test_edit_SOURCES = tests/unit/test_edit.c tests/unit/run_util.h
tests_unit_test_edit_LDADD = $(SS_ENGINE_LIBS)
tests_unit_test_qdq_SOURCES = tests/unit/test_qdq.c tests/unit/run_util.h
tests_unit_test_qdq_LDADD = $(SS_ENGINE_LIBS)

check_PROGRAMS += tests/unit/test_layout
TESTS += tests/unit/test_layout
tests_unit_test_layout_SOURCES = tests/unit/test_layout.c tests/unit/onnx_build.h
tests_unit_test_layout_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_layout_LDADD = $(SS_ENGINE_LIBS)
