# SPDX-License-Identifier: Apache-2.0
#
# server/jobs: admin compression jobs (the job thread, the request body
# parser, evaluation data, writing and activating variants).
noinst_LIBRARIES += server/jobs/libssjobs.a
server_jobs_libssjobs_a_SOURCES = \
	server/jobs/jobs.c server/jobs/jobs.h server/jobs/internal.h \
	server/jobs/jobs_data.c server/jobs/jobs_store.c \
	server/jobs/jobs_parse.c server/jobs/train_job.c server/jobs/mpi_job.c \
	server/jobs/search_job.c server/jobs/pace.c
server_jobs_libssjobs_a_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(UV_CFLAGS) $(LAPACKE_CFLAGS)

# The training methods as jobs, through the daemon (finetune, distill).
TESTS += tests/integration/test_train.py
EXTRA_DIST += tests/integration/test_train.py
# distill and qat of a mobilenet_v2-like net (tests/fixtures/make_mbv2.py)
TESTS += tests/integration/test_train_mbnet.py
EXTRA_DIST += tests/integration/test_train_mbnet.py \
	tests/fixtures/make_mbv2.py tests/fixtures/mbv2_op13/model.onnx \
	tests/fixtures/res_op13/model.onnx
# width students of resnet-like nets, and torch exports whose equal
# parameters are tied through Identity nodes (tests/fixtures/make_tied.py)
TESTS += tests/integration/test_train_resnet.py
EXTRA_DIST += tests/integration/test_train_resnet.py \
	tests/fixtures/make_tied.py tests/fixtures/res_tied_op13/model.onnx \
	tests/fixtures/dense_tied_op13/model.onnx \
	tests/fixtures/dense_tied_op17/model.onnx

# Variant search (optimize jobs) through the daemon.
TESTS += tests/integration/test_search.py
EXTRA_DIST += tests/integration/test_search.py

# slimserve-train: a job file run on a model folder without the daemon.
bin_PROGRAMS += server/slimserve-train
server_slimserve_train_SOURCES = server/jobs/train_main.c
server_slimserve_train_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS)
server_slimserve_train_LDADD = server/model/libssmodel.a \
	$(SS_TRAIN_MPI_LIBS) $(SS_COMPRESS_LIBS) $(JANSSON_LIBS) $(MPI_LIBS) \
	-lpthread -lm

# The pace hook against a scripted data plane.
check_PROGRAMS += tests/unit/test_pace
TESTS += tests/unit/test_pace
tests_unit_test_pace_SOURCES = tests/unit/test_pace.c
tests_unit_test_pace_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS) \
	$(LAPACKE_CFLAGS)
tests_unit_test_pace_LDADD = server/jobs/libssjobs.a common/libsscommon.a \
	-lpthread
