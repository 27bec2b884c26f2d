# SPDX-License-Identifier: Apache-2.0
#
# The systemd unit and its check (systemd-analyze verify and security).

TESTS += tests/integration/test_systemd.sh
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
