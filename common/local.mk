# SPDX-License-Identifier: Apache-2.0
#
# common: error codes and details, logging, allocation with a fault hook,
# reference counts, CPU sets, atomic files.  Used by every folder.
noinst_LIBRARIES += common/libsscommon.a
common_libsscommon_a_SOURCES = \
	common/alloc.c common/alloc.h \
	common/atomicfile.c common/atomicfile.h \
	common/cpus.c common/cpus.h \
	common/err.c common/err.h \
	common/log.c common/log.h \
	common/refcount.h
