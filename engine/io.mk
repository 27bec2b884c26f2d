# SPDX-License-Identifier: Apache-2.0
#
# numpy file I/O (.npy/.npz) as its own small library, so the server can
# parse uploads without linking the whole engine; the offline CLI; tests.

noinst_LIBRARIES += engine/libssio.a
engine_libssio_a_SOURCES = \
	engine/npy.h engine/npy_internal.h \
	engine/npy.c engine/npz.c engine/npz_write.c engine/atomicfile.c
engine_libssio_a_CFLAGS = $(AM_CFLAGS) $(ZLIB_CFLAGS)

check_PROGRAMS += tests/unit/test_npy
TESTS += tests/unit/test_npy
tests_unit_test_npy_SOURCES = tests/unit/test_npy.c
tests_unit_test_npy_LDADD = engine/libssio.a common/libsscommon.a \
	$(ZLIB_LIBS) -lm
EXTRA_DIST += tests/unit/npy_check.py tests/unit/data/make_npy_data.py \
	$(NPY_TEST_DATA)
