# SPDX-License-Identifier: Apache-2.0
#
# The oneDNN primitive layer (engine/dnnl/dnnl.h).  A program that links
# engine/dnnl/libssdnnl.a adds $(SSDNNL_LIBS) after it: oneDNN itself, and
# libgomp, whose omp_set_num_threads() the streams call (oneDNN is built
# with the OpenMP runtime, so that is where its thread count lives).
noinst_LIBRARIES += engine/dnnl/libssdnnl.a
engine_dnnl_libssdnnl_a_SOURCES = \
	engine/dnnl/dnnl.c engine/dnnl/dnnl_postops.c engine/dnnl/dnnl.h \
	engine/dnnl/internal.h \
	engine/dnnl/dnnl_build.c engine/dnnl/dnnl_ops.c engine/dnnl/dnnl_q.h \
	engine/dnnl/dnnl_q.c engine/dnnl/dnnl_train.c \
	engine/dnnl/dnnl_wino.c engine/dnnl/dnnl_train_nn.c \
	engine/dnnl/dnnl_pool8.c engine/dnnl/dnnl_concat.c \
	engine/dnnl/dnnl_run.c

SSDNNL_LIBS = $(DNNL_LIBS) -lgomp -lpthread

check_PROGRAMS += tests/unit/test_dnnl
TESTS += tests/unit/test_dnnl
tests_unit_test_dnnl_SOURCES = tests/unit/test_dnnl.c tests/unit/test_dnnl.h
tests_unit_test_dnnl_LDADD = engine/dnnl/libssdnnl.a common/libsscommon.a \
	$(SSDNNL_LIBS) -lm

check_PROGRAMS += tests/unit/test_dnnl_ops
TESTS += tests/unit/test_dnnl_ops
tests_unit_test_dnnl_ops_SOURCES = tests/unit/test_dnnl_ops.c \
	tests/unit/test_dnnl.h
tests_unit_test_dnnl_ops_LDADD = engine/dnnl/libssdnnl.a common/libsscommon.a \
	$(SSDNNL_LIBS) -lm
