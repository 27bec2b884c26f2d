# SPDX-License-Identifier: Apache-2.0
#
# server/kserve: the KServe V2 wire codec: request decoding (jansson for the envelope, a
# streaming scanner for tensor data) and response encoding.  Needs
# jansson, engine/ir/libssir.a (dtype names and sizes) and
# common/libsscommon.a.

noinst_LIBRARIES += server/kserve/libsskserve.a
server_kserve_libsskserve_a_SOURCES = \
	server/kserve/kserve.h server/kserve/internal.h \
	server/kserve/kserve.c server/kserve/kserve_data.c \
	server/kserve/kserve_enc.c server/kserve/kserve_num.c \
	server/kserve/kserve_fmt.c server/kserve/kserve_scan.c \
	server/kserve/kserve_pow5.h
server_kserve_libsskserve_a_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)

check_PROGRAMS += tests/unit/test_kserve tests/unit/test_kserve_num
TESTS += tests/unit/test_kserve tests/unit/test_kserve_num
tests_unit_test_kserve_SOURCES = tests/unit/test_kserve.c
tests_unit_test_kserve_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_kserve_LDADD = server/kserve/libsskserve.a $(SS_ENGINE_LIBS) \
	$(JANSSON_LIBS)
tests_unit_test_kserve_num_SOURCES = tests/unit/test_kserve_num.c
tests_unit_test_kserve_num_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_kserve_num_LDADD = server/kserve/libsskserve.a $(SS_ENGINE_LIBS) \
	$(JANSSON_LIBS)

# A libFuzzer target, built by tests/fuzz/run.sh (clang), not by make.
EXTRA_DIST += tests/fuzz/fuzz_kserve.c
EXTRA_DIST += tests/fuzz/seeds/kserve/s1 tests/fuzz/seeds/kserve/s2 \
	tests/fuzz/seeds/kserve/s3 tests/fuzz/seeds/kserve/s4

# A measurement, not a test: built by make check, run by hand (see the
# comment on top of the file).
check_PROGRAMS += tests/unit/test_kserve_bench
tests_unit_test_kserve_bench_SOURCES = tests/unit/test_kserve_bench.c
tests_unit_test_kserve_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_kserve_bench_LDADD = server/kserve/libsskserve.a \
	$(SS_ENGINE_LIBS) $(JANSSON_LIBS)

# The power-of-five table's generator (its output is committed).
EXTRA_DIST += server/kserve/gen_pow5.py
