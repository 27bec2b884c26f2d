# SPDX-License-Identifier: Apache-2.0
#
# Benchmarks are run by hand (bench/README.md), not by `make check`: they
# need PyTorch and onnxruntime-node, and their numbers need a quiet machine.

EXTRA_DIST += \
	bench/README.md \
	bench/http.sh \
	bench/engine.py \
	bench/engine_torch.py \
	bench/engine_ort.js \
	bench/package.json \
	bench/package-lock.json

EXTRA_DIST += \
	bench/serve.sh \
	bench/serve.py \
	bench/serve_scale.py \
	bench/serve_models.py \
	bench/serve_peer.js \
	bench/serve/post.lua \
	bench/serve/get.lua \
	bench/p99.py

EXTRA_DIST += \
	bench/compress.py \
	bench/compress_torch.py \
	bench/qat.py \
	bench/search.py \
	bench/search_models.py \
	bench/compress_cnn.py \
	bench/lowrank_cost.py

# Mixed load, hot swaps and jobs for 30 minutes; leak and error verdict.
EXTRA_DIST += bench/soak.py

# LoRA adapters: compute per batch with and without (docs/lora.md).
EXTRA_DIST += bench/lora.py
# LoRA training against a full fine-tune (docs/lora.md).
EXTRA_DIST += bench/lora_train.py
# bench/lora_bench: LoRA in process, plan runs with and without adapters.
noinst_PROGRAMS += bench/lora_bench
bench_lora_bench_SOURCES = bench/lora_bench.c
bench_lora_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS)
bench_lora_bench_LDADD = $(SS_SERVER_LIBS)
