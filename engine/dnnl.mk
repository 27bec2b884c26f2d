# SPDX-License-Identifier: Apache-2.0
#
# The oneDNN primitive layer (engine/dnnl.h).  A program that links
# engine/libssdnnl.a adds $(SSDNNL_LIBS) after it: oneDNN itself, and
# libgomp, whose omp_set_num_threads() the streams call (oneDNN is built
# with the OpenMP runtime, so that is where its thread count lives).
noinst_LIBRARIES += engine/libssdnnl.a
engine_libssdnnl_a_SOURCES = \
	engine/dnnl.c engine/dnnl.h engine/dnnl_int.h \
	engine/dnnl_build.c engine/dnnl_ops.c engine/dnnl_q.h engine/dnnl_q.c

SSDNNL_LIBS = $(DNNL_LIBS) -lgomp -lpthread

check_PROGRAMS += tests/unit/test_dnnl
TESTS += tests/unit/test_dnnl
tests_unit_test_dnnl_SOURCES = tests/unit/test_dnnl.c tests/unit/test_dnnl.h
tests_unit_test_dnnl_LDADD = engine/libssdnnl.a common/libsscommon.a \
	$(SSDNNL_LIBS) -lm

check_PROGRAMS += tests/unit/test_dnnl_ops
TESTS += tests/unit/test_dnnl_ops
tests_unit_test_dnnl_ops_SOURCES = tests/unit/test_dnnl_ops.c \
	tests/unit/test_dnnl.h
tests_unit_test_dnnl_ops_LDADD = engine/libssdnnl.a common/libsscommon.a \
	$(SSDNNL_LIBS) -lm
