# SPDX-License-Identifier: Apache-2.0
#
# server/ctl: slimserve-ctl, the admin API from a terminal (issue 17).
# Talks HTTP(S) to the admin listener; links nothing of the daemon.
bin_PROGRAMS += server/slimserve-ctl
server_slimserve_ctl_SOURCES = server/ctl/ctl_main.c server/ctl/ctl_jobs.c \
	server/ctl/client.c server/ctl/client.h server/ctl/ctl.h \
	server/ctl/optimize.c
server_slimserve_ctl_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(GNUTLS_CFLAGS)
server_slimserve_ctl_LDADD = common/libsscommon.a $(JANSSON_LIBS) \
	$(GNUTLS_LIBS) -lm

TESTS += tests/integration/test_ctl.py
EXTRA_DIST += tests/integration/test_ctl.py
