# SPDX-License-Identifier: Apache-2.0
#
# engine/ir: the graph IR (ir.h), dtypes, ONNX import (protobuf-c code
# generated at build time from engine/ir/onnx.proto into the build tree),
# graph editing and ONNX export (edit.h).

noinst_LIBRARIES += engine/ir/libssir.a
engine_ir_libssir_a_SOURCES = \
	engine/engine.h engine/ir/ir.h engine/ir/internal.h \
	engine/ir/dtype_size.h engine/ir/dtype.c engine/ir/graph.c \
	engine/ir/onnx.c engine/ir/onnx_ops.c engine/ir/onnx_file.c \
	engine/ir/toposort.c \
	engine/ir/onnx_tensor.c engine/ir/onnx_strip.c \
	engine/ir/inputs.c \
	engine/ir/valcheck.c engine/ir/opset.c engine/ir/bind.c \
	engine/ir/shapein.c \
	engine/ir/edit.h engine/ir/edit.c engine/ir/edit_finalize.c \
	engine/ir/export.c engine/ir/rank.c \
	engine/ir/sites.h engine/ir/sites.c \
	engine/ir/gelu_pat.h engine/ir/gelu_pat.c
nodist_engine_ir_libssir_a_SOURCES = engine/ir/onnx.pb-c.c \
	engine/ir/onnx.pb-c.h
engine_ir_libssir_a_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)

EXTRA_DIST += engine/ir/onnx.proto
BUILT_SOURCES += engine/ir/onnx.pb-c.c engine/ir/onnx.pb-c.h
CLEANFILES += engine/ir/onnx.pb-c.c engine/ir/onnx.pb-c.h

engine/ir/onnx.pb-c.c: engine/ir/onnx.proto
	$(AM_V_GEN)$(MKDIR_P) engine/ir && \
	$(PROTOC_C) --proto_path=$(srcdir)/engine/ir --c_out=engine/ir \
		$(srcdir)/engine/ir/onnx.proto
engine/ir/onnx.pb-c.h: engine/ir/onnx.pb-c.c
	@test -f $@ || { rm -f engine/ir/onnx.pb-c.c; \
		$(MAKE) $(AM_MAKEFLAGS) engine/ir/onnx.pb-c.c; }

check_PROGRAMS += tests/unit/test_onnx
TESTS += tests/unit/test_onnx
tests_unit_test_onnx_SOURCES = tests/unit/test_onnx.c tests/unit/onnx_build.h
tests_unit_test_onnx_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_onnx_LDADD = $(SS_ENGINE_LIBS)

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

# Graph editing and ONNX export.
check_PROGRAMS += tests/unit/test_edit
TESTS += tests/unit/test_edit
tests_unit_test_edit_SOURCES = tests/unit/test_edit.c tests/unit/run_util.h
tests_unit_test_edit_LDADD = $(SS_ENGINE_LIBS)

# LoRA sites and PEFT's target_modules (engine/ir/sites.h).
check_PROGRAMS += tests/unit/test_sites
TESTS += tests/unit/test_sites
tests_unit_test_sites_SOURCES = tests/unit/test_sites.c
tests_unit_test_sites_LDADD = $(SS_ENGINE_LIBS)
