# SPDX-License-Identifier: Apache-2.0
noinst_LIBRARIES += server/libssserver.a
server_libssserver_a_SOURCES = \
	server/admin.c \
	server/infer.c server/infer.h \
	server/jobs.c server/jobs.h server/jobs_int.h server/jobs_parse.c \
	server/modelcfg.c server/modelcfg.h \
	server/registry.c server/registry.h server/registry_int.h \
	server/registry_json.c server/registry_ops.c \
	server/sampler.c server/sampler.h \
	server/auth.c server/auth.h \
	server/cfg.c server/cfg.h \
	server/http.c server/http.h \
	server/router.c server/router.h \
	server/routes.c \
	server/server.c server/server.h
server_libssserver_a_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) $(JANSSON_CFLAGS) \
	$(UV_CFLAGS)

SERVER_LIBS = server/libssserver.a compress/libsscompress.a \
	server/libsskserve.a server/libssbatch.a \
	engine/libssio.a $(SS_ENGINE_LIBS) server/libssinfra.a \
	common/libsscommon.a \
	$(MHD_LIBS) $(JANSSON_LIBS) $(UV_LIBS) $(SYSTEMD_LIBS) $(ZLIB_LIBS) \
	$(LAPACKE_LIBS) -lpthread -lm

bin_PROGRAMS += server/slimserve
server_slimserve_SOURCES = server/main.c
server_slimserve_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS)
server_slimserve_LDADD = $(SERVER_LIBS)

check_PROGRAMS += tests/unit/test_server
TESTS += tests/unit/test_server
tests_unit_test_server_SOURCES = tests/unit/test_server.c
tests_unit_test_server_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_test_server_LDADD = $(SERVER_LIBS) -lm
