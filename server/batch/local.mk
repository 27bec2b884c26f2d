# SPDX-License-Identifier: Apache-2.0
#
# server/batch: the dynamic batcher, the shared executor pool and the
# plan cache (server/batch/batch.h), on top of the engine and the metrics
# registry.

noinst_LIBRARIES += server/batch/libssbatch.a
server_batch_libssbatch_a_SOURCES = \
	server/batch/batch.h server/batch/internal.h server/batch/batch.c \
	server/batch/batch_run.c server/batch/pool.c \
	server/batch/plancache.h server/batch/plancache.c

# What a program that batches links, in order.
SS_BATCH_LIBS = server/batch/libssbatch.a server/libssdaemon.a \
	$(SS_ENGINE_LIBS) $(SYSTEMD_LIBS) -lpthread -lm

check_PROGRAMS += tests/unit/test_batch
TESTS += tests/unit/test_batch
tests_unit_test_batch_SOURCES = tests/unit/test_batch.c tests/unit/test_batch.h
tests_unit_test_batch_LDADD = $(SS_BATCH_LIBS) $(ZLIB_LIBS)

check_PROGRAMS += tests/unit/test_batch_shapes
TESTS += tests/unit/test_batch_shapes
tests_unit_test_batch_shapes_SOURCES = tests/unit/test_batch_shapes.c \
	tests/unit/test_batch.h tests/unit/onnx_build.h
tests_unit_test_batch_shapes_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_batch_shapes_LDADD = $(SS_BATCH_LIBS)

check_PROGRAMS += tests/unit/test_batch_pool
TESTS += tests/unit/test_batch_pool
tests_unit_test_batch_pool_SOURCES = tests/unit/test_batch_pool.c \
	tests/unit/threads_named.h \
	tests/unit/test_batch.h tests/unit/onnx_build.h
tests_unit_test_batch_pool_CPPFLAGS = $(AM_CPPFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_batch_pool_LDADD = $(SS_BATCH_LIBS)

# The pool and request isolation through the daemon.
TESTS += tests/integration/test_pool.py
EXTRA_DIST += tests/integration/test_pool.py

# A measurement, not a test: built by make check, run by hand (see the
# comment on top of the file).
check_PROGRAMS += tests/unit/test_batch_bench
tests_unit_test_batch_bench_SOURCES = tests/unit/test_batch_bench.c \
	tests/unit/test_batch.h
tests_unit_test_batch_bench_LDADD = $(SS_BATCH_LIBS) \
	$(ZLIB_LIBS)
