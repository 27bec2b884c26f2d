# SPDX-License-Identifier: Apache-2.0
#
# server: the daemon.  This folder's library holds the base services every
# server folder uses (configuration, the metrics registry, sd_notify); the
# daemon itself (main.c, server.c) assembles the folders below it:
#   http/    libmicrohttpd under libuv, router, routes, auth
#   kserve/  the KServe V2 codec
#   model/   registry and hot swap, model config, traffic sampler
#   batch/   batcher, executors, plan cache
#   jobs/    admin compression jobs

noinst_LIBRARIES += server/libssdaemon.a
server_libssdaemon_a_SOURCES = \
	server/cfg.c server/cfg.h \
	server/looplag.c server/looplag.h \
	server/metrics.c server/metrics.h server/metrics_int.h \
	server/metrics_render.c \
	server/notify.c server/notify.h
server_libssdaemon_a_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)

# What a program that runs the whole daemon links, in order.
SS_SERVER_LIBS = server/http/libsshttp.a server/jobs/libssjobs.a \
	server/model/libssmodel.a server/batch/libssbatch.a \
	server/kserve/libsskserve.a server/libssdaemon.a \
	$(SS_COMPRESS_LIBS) \
	$(MHD_LIBS) $(GNUTLS_LIBS) $(JANSSON_LIBS) $(UV_LIBS) $(SYSTEMD_LIBS) $(ZLIB_LIBS) \
	$(LAPACKE_LIBS) -lpthread -lm

bin_PROGRAMS += server/slimserve
server_slimserve_SOURCES = server/main.c server/server.c server/server.h
server_slimserve_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) $(GNUTLS_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)
server_slimserve_LDADD = $(SS_SERVER_LIBS)

check_PROGRAMS += tests/unit/test_server
TESTS += tests/unit/test_server
tests_unit_test_server_SOURCES = tests/unit/test_server.c
tests_unit_test_server_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_test_server_LDADD = $(SS_SERVER_LIBS)

check_PROGRAMS += tests/unit/test_metrics tests/unit/test_notify
TESTS += tests/unit/test_metrics tests/unit/test_notify
tests_unit_test_metrics_SOURCES = tests/unit/test_metrics.c
tests_unit_test_metrics_LDADD = server/libssdaemon.a common/libsscommon.a \
	-lpthread -lm
tests_unit_test_notify_SOURCES = tests/unit/test_notify.c
tests_unit_test_notify_LDADD = server/libssdaemon.a common/libsscommon.a \
	$(SYSTEMD_LIBS)
