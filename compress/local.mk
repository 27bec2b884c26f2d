# SPDX-License-Identifier: Apache-2.0
#
# Compression: evaluation, PTQ int8 (QDQ), bf16, pruning, low-rank, and
# the variant search over them (compress/search.h).
# compress/compress.h is the public header; compress/internal.h is shared
# by the files of this folder and their unit tests.

noinst_LIBRARIES += compress/libsscompress.a
compress_libsscompress_a_SOURCES = \
	compress/compress.h compress/internal.h \
	compress/compress.c compress/eval.c compress/layers.c \
	compress/quant.c compress/quant_calib.c compress/quant_int.h \
	compress/calib_mse.c compress/prune_int.h compress/prune.c \
	compress/prune_cut.c compress/prune_heads.c compress/lowrank.c \
	compress/lowrank_conv.c compress/prune_flat.c \
	compress/params.c compress/params_json.c compress/finetune.c \
	compress/distill.c compress/distill_layers.c compress/qat.c \
	compress/search.h compress/search_int.h compress/search.c \
	compress/search_phase.c compress/search_cfg.c compress/search_mask.c \
	compress/moefy.c \
	compress/moefy_int.h compress/moefy_router.c \
	compress/moefy_graph.c \
	compress/lora.c
compress_libsscompress_a_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS) $(ZLIB_CFLAGS)

# What a program that compresses links, in order.
SS_COMPRESS_LIBS = compress/libsscompress.a compress/train/libsstrain.a \
	$(SS_ENGINE_LIBS) \
	$(LAPACKE_LIBS) $(JANSSON_LIBS)

check_PROGRAMS += tests/unit/test_compress
TESTS += tests/unit/test_compress
tests_unit_test_compress_SOURCES = tests/unit/test_compress.c \
	tests/unit/test_compress.h tests/unit/test_compress_util.h \
	tests/unit/test_compress_data.c
tests_unit_test_compress_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS)
tests_unit_test_compress_LDADD = $(SS_COMPRESS_LIBS)

# Search configurations: per-layer bf16 in the built variant (issue 15).
check_PROGRAMS += tests/unit/test_search_cfg
TESTS += tests/unit/test_search_cfg
tests_unit_test_search_cfg_SOURCES = tests/unit/test_search_cfg.c \
	tests/unit/run_util.h
tests_unit_test_search_cfg_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS)
tests_unit_test_search_cfg_LDADD = $(SS_COMPRESS_LIBS)

check_PROGRAMS += tests/unit/test_compress_models
TESTS += tests/unit/test_compress_models
tests_unit_test_compress_models_SOURCES = tests/unit/test_compress_models.c \
	tests/unit/test_compress.h tests/unit/test_compress_util.h \
	tests/unit/onnx_build.h \
	tests/unit/test_compress_data.c
tests_unit_test_compress_models_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_compress_models_LDADD = $(SS_COMPRESS_LIBS)

# Convolution architectures (issue 12): mobilenet/grouped/resnet pruning,
# conv low-rank, methods that change nothing.
check_PROGRAMS += tests/unit/test_compress_cnn
TESTS += tests/unit/test_compress_cnn
tests_unit_test_compress_cnn_SOURCES = tests/unit/test_compress_cnn.c \
	tests/unit/test_compress.h tests/unit/test_compress_util.h \
	tests/unit/onnx_build.h tests/unit/test_compress_data.c
tests_unit_test_compress_cnn_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_unit_test_compress_cnn_LDADD = $(SS_COMPRESS_LIBS)

# The training methods (finetune, distill) on the digits MLP.
check_PROGRAMS += tests/unit/test_compress_train
TESTS += tests/unit/test_compress_train
tests_unit_test_compress_train_SOURCES = tests/unit/test_compress_train.c \
	tests/unit/test_compress.h tests/unit/test_compress_util.h \
	tests/unit/test_compress_data.c
tests_unit_test_compress_train_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(LAPACKE_CFLAGS)
tests_unit_test_compress_train_LDADD = $(SS_COMPRESS_LIBS)
EXTRA_DIST += tests/fixtures/make_train_data.py \
	tests/fixtures/digits/mlp_train.npz

# The measurements behind bench/compress (not installed).
noinst_PROGRAMS += compress/compress-table
compress_compress_table_SOURCES = compress/table_main.c
compress_compress_table_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
compress_compress_table_LDADD = $(SS_COMPRESS_LIBS)
