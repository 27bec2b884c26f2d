# SPDX-License-Identifier: Apache-2.0
#
# The engine core: ONNX import (protobuf-c code generated at build time
# from engine/onnx.proto into the build tree), the graph IR, the plan
# compiler and executor.

noinst_LIBRARIES += engine/libssengine.a
engine_libssengine_a_SOURCES = \
	engine/engine.h engine/ir.h \
	engine/attr.c engine/dtype.c engine/graph.c \
	engine/onnx_int.h engine/onnx.c engine/onnx_tensor.c \
	engine/plan_int.h engine/plan.c engine/exec.c \
	engine/plan_fuse_int.h engine/plan_fuse.c engine/plan_fuse_ops.c \
	engine/plan_fuse_ln.c
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
SS_ENGINE_LIBS = engine/libssengine.a engine/libssdnnl.a \
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
