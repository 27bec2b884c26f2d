# SPDX-License-Identifier: Apache-2.0
#
# server/http: libmicrohttpd under libuv (http.c; a request: http_req.c), gzip/deflate request
# bodies (coding.c), the router, the data plane and admin routes, the
# inference glue between the codec and the batcher (infer.c), bearer-token
# auth, TLS certificates (tls.c).
noinst_LIBRARIES += server/http/libsshttp.a
server_http_libsshttp_a_SOURCES = \
	server/http/http.c server/http/http_conn.c server/http/http_metrics.c \
	server/http/http.h server/http/http_int.h \
	server/http/http_req.c \
	server/http/coding.c server/http/coding.h \
	server/http/router.c server/http/router.h \
	server/http/routes.c server/http/admin.c \
	server/http/infer.c server/http/infer.h \
	server/http/auth.c server/http/auth.h \
	server/http/tls.c server/http/tls.h \
	server/http/ui.c server/http/ui.h
server_http_libsshttp_a_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) \
	$(GNUTLS_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS) $(ZLIB_CFLAGS)
