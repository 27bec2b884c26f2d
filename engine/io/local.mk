# SPDX-License-Identifier: Apache-2.0
#
# engine/io: numpy file I/O (.npy/.npz) as its own small library, so the
# server can parse uploads without linking the whole engine; its tests.

noinst_LIBRARIES += engine/io/libssio.a
engine_io_libssio_a_SOURCES = \
	engine/io/npy.h engine/io/internal.h \
	engine/io/npy.c engine/io/npz.c engine/io/npz_write.c \
	engine/io/safetensors.h engine/io/safetensors.c
engine_io_libssio_a_CFLAGS = $(AM_CFLAGS) $(ZLIB_CFLAGS) $(JANSSON_CFLAGS)

check_PROGRAMS += tests/unit/test_npy
TESTS += tests/unit/test_npy
tests_unit_test_npy_SOURCES = tests/unit/test_npy.c
tests_unit_test_npy_LDADD = engine/io/libssio.a common/libsscommon.a \
	$(ZLIB_LIBS) -lm
# safetensors (engine/io/safetensors.c): files written by Python by hand
# (tests/unit/data/make_safetensors_data.py), valid and hostile.
check_PROGRAMS += tests/unit/test_safetensors
TESTS += tests/unit/test_safetensors
tests_unit_test_safetensors_SOURCES = tests/unit/test_safetensors.c
tests_unit_test_safetensors_LDADD = engine/io/libssio.a \
	common/libsscommon.a $(JANSSON_LIBS) -lm
EXTRA_DIST += tests/unit/data/make_safetensors_data.py \
	tests/unit/data/safetensors
TESTS += tests/unit/test_cli.py
EXTRA_DIST += tests/unit/test_cli.py tests/unit/npy_check.py \
	tests/unit/data/make_npy_data.py \
	$(NPY_TEST_FILES)
NPY_TEST_FILES = \
	tests/unit/data/npy/b1_5.npy \
	tests/unit/data/npy/deflated.npz \
	tests/unit/data/npy/f2_3.npy \
	tests/unit/data/npy/f4_0x3.npy \
	tests/unit/data/npy/f4_2x3.npy \
	tests/unit/data/npy/f4_be_2x3.npy \
	tests/unit/data/npy/f4_fortran_2x3x4.npy \
	tests/unit/data/npy/f4_scalar.npy \
	tests/unit/data/npy/f4_v2_2x3.npy \
	tests/unit/data/npy/f4_v3_2x3.npy \
	tests/unit/data/npy/f8_4.npy \
	tests/unit/data/npy/i1_4.npy \
	tests/unit/data/npy/i2_3.npy \
	tests/unit/data/npy/i4_5.npy \
	tests/unit/data/npy/i8_2x2x2.npy \
	tests/unit/data/npy/i8_be_4.npy \
	tests/unit/data/npy/mixed.npz \
	tests/unit/data/npy/stored.npz \
	tests/unit/data/npy/u1_6.npy \
	tests/unit/data/npy/u2_3.npy \
	tests/unit/data/npy/u4_3.npy \
	tests/unit/data/npy/u8_3.npy

# The fuzz targets of this folder (fuzz_npy, fuzz_onnx): tests/fuzz/local.mk.
