# SPDX-License-Identifier: Apache-2.0
slimserveconfdir = $(sysconfdir)/slimserve
dist_slimserveconf_DATA = conf/slimserve.json
