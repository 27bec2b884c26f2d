# SPDX-License-Identifier: Apache-2.0
bin_PROGRAMS += server/slimserve
server_slimserve_SOURCES = server/main.c
server_slimserve_LDADD = common/libsscommon.a
