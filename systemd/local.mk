# SPDX-License-Identifier: Apache-2.0
#
# Server infrastructure that stands apart from the HTTP code: the metrics
# registry and the systemd notifications (server/libssinfra.a, linked into
# the daemon with $(SYSTEMD_LIBS)), and the systemd unit.

noinst_LIBRARIES += server/libssinfra.a
server_libssinfra_a_SOURCES = \
	server/metrics.c server/metrics.h \
	server/notify.c server/notify.h
server_libssinfra_a_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS)

check_PROGRAMS += tests/unit/test_metrics tests/unit/test_notify
TESTS += tests/unit/test_metrics tests/unit/test_notify \
	tests/integration/test_systemd.sh
tests_unit_test_metrics_SOURCES = tests/unit/test_metrics.c
tests_unit_test_metrics_LDADD = server/libssinfra.a common/libsscommon.a \
	-lpthread -lm
tests_unit_test_notify_SOURCES = tests/unit/test_notify.c
tests_unit_test_notify_LDADD = server/libssinfra.a common/libsscommon.a \
	$(SYSTEMD_LIBS)
EXTRA_DIST += tests/integration/test_systemd.sh

# The unit names the installed binary, so it is generated with the paths
# configure chose.  systemd looks for units under <prefix>/lib/systemd/system
# too when prefix is /usr or /usr/local; a distribution packager passes
# systemdunitdir=/lib/systemd/system (or pkg-config's) to make install.
systemdunitdir = $(prefix)/lib/systemd/system
systemdunit_DATA = systemd/slimserve.service
EXTRA_DIST += systemd/slimserve.service.in
CLEANFILES += systemd/slimserve.service

systemd/slimserve.service: $(top_srcdir)/systemd/slimserve.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) systemd && \
	sed -e 's|@bindir[@]|$(bindir)|g' \
	    -e 's|@sysconfdir[@]|$(sysconfdir)|g' \
	    $(top_srcdir)/systemd/slimserve.service.in > $@.tmp && \
	mv $@.tmp $@
