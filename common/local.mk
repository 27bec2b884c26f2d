# SPDX-License-Identifier: Apache-2.0
#
# common: error codes and details, logging, SS_ASSERT, allocation with a
# fault hook, reference counts, read-only file mappings, memory accounts,
# CPU sets, atomic files, the hand-off queue, work buffers that shrink.
# Used by every folder.
noinst_LIBRARIES += common/libsscommon.a
common_libsscommon_a_SOURCES = \
	common/alloc.c common/alloc.h \
	common/assert.c common/assert.h \
	common/atomicfile.c common/atomicfile.h \
	common/clock.h \
	common/cpus.c common/cpus.h \
	common/err.c common/err.h \
	common/filemap.c common/filemap.h \
	common/log.c common/log.h \
	common/memacct.c common/memacct.h \
	common/pace.c common/pace.h \
	common/queue.c common/queue.h \
	common/refcount.h \
	common/utf8.c common/utf8.h \
	common/workbuf.c common/workbuf.h

check_PROGRAMS += tests/unit/test_assert
TESTS += tests/unit/test_assert
tests_unit_test_assert_SOURCES = tests/unit/test_assert.c
tests_unit_test_assert_LDADD = common/libsscommon.a

check_PROGRAMS += tests/unit/test_queue
TESTS += tests/unit/test_queue
tests_unit_test_queue_SOURCES = tests/unit/test_queue.c
tests_unit_test_queue_LDADD = common/libsscommon.a

check_PROGRAMS += tests/unit/test_atomicfile
TESTS += tests/unit/test_atomicfile
tests_unit_test_atomicfile_SOURCES = tests/unit/test_atomicfile.c
tests_unit_test_atomicfile_LDADD = common/libsscommon.a

check_PROGRAMS += tests/unit/test_utf8
TESTS += tests/unit/test_utf8
tests_unit_test_utf8_SOURCES = tests/unit/test_utf8.c
tests_unit_test_utf8_LDADD = common/libsscommon.a

check_PROGRAMS += tests/unit/test_filemap
TESTS += tests/unit/test_filemap
tests_unit_test_filemap_SOURCES = tests/unit/test_filemap.c
tests_unit_test_filemap_LDADD = common/libsscommon.a
