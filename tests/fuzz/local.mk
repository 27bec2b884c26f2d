# SPDX-License-Identifier: Apache-2.0
#
# Fuzzing (tests/fuzz/README).  The libFuzzer targets are not part of
# make: tests/fuzz/run.sh builds them with clang and runs them for a
# bounded time (CI calls it), from seeds/ and the minimized corpus of the
# recorded campaigns (corpus/<target>/).  make check replays the saved
# reproducers of fuzz_cfg here, and those of fuzz_onnx in test_replay
# (engine/ir/local.mk).
EXTRA_DIST += tests/fuzz/README tests/fuzz/run.sh \
	tests/fuzz/fuzz_npy.c tests/fuzz/fuzz_onnx.c tests/fuzz/fuzz_jobs.c \
	tests/fuzz/fuzz_http.c tests/fuzz/fuzz_safetensors.c \
	tests/fuzz/lsan_tid_reuse.c \
	tests/fuzz/crashes tests/fuzz/seeds tests/fuzz/corpus

check_PROGRAMS += tests/fuzz/test_replay_cfg
TESTS += tests/fuzz/test_replay_cfg
tests_fuzz_test_replay_cfg_SOURCES = tests/fuzz/test_replay_cfg.c \
	tests/fuzz/fuzz_cfg.c
tests_fuzz_test_replay_cfg_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_test_replay_cfg_LDADD = server/libssdaemon.a common/libsscommon.a \
	$(JANSSON_LIBS) -lm
