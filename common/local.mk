# SPDX-License-Identifier: Apache-2.0
noinst_LIBRARIES += common/libsscommon.a
common_libsscommon_a_SOURCES = \
	common/alloc.c common/alloc.h \
	common/cpus.c common/cpus.h \
	common/err.c common/err.h \
	common/log.c common/log.h \
	common/refcount.h
