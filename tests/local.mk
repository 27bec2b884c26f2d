# SPDX-License-Identifier: Apache-2.0
EXTRA_DIST += tests/tap.h tests/lib/tap.py
EXTRA_DIST += tests/lib/daemon.py tests/lib/repo.py tests/lib/paths.py

TESTS += tests/integration/test_http.py tests/integration/test_admin.py
EXTRA_DIST += tests/integration/test_http.py tests/integration/test_admin.py
EXTRA_DIST += scripts/install-deps.sh scripts/run-example.sh .ci/run
EXTRA_DIST += bench/http.sh bench/tls.sh

TESTS += tests/integration/test_serve.py
EXTRA_DIST += tests/integration/test_serve.py tests/lib/kserve.py \
	tests/integration/data/make_v2.py tests/integration/data/mlp_v2.onnx
TESTS += tests/integration/test_compress.py
EXTRA_DIST += tests/integration/test_compress.py
TESTS += tests/integration/test_compress_cnn.py
EXTRA_DIST += tests/integration/test_compress_cnn.py
# ptq, bf16, structured pruning and low-rank of a 3-D conv net: right
# against PyTorch, or refused with the reason (issue 12).
TESTS += tests/integration/test_compress_3d.py
EXTRA_DIST += tests/integration/test_compress_3d.py
# The same with a ConvTranspose (on oneDNN's deconvolution) in the net.
TESTS += tests/integration/test_compress_convt.py
EXTRA_DIST += tests/integration/test_compress_convt.py
# Weights served from the model file's mapping, read again by jobs and
# after hot swaps (issue 12).
TESTS += tests/integration/test_mapped_weights.py
EXTRA_DIST += tests/integration/test_mapped_weights.py
TESTS += tests/integration/test_model_memory.py
EXTRA_DIST += tests/integration/test_model_memory.py
# MoEfication (issue 13): the compress method "moefy".
TESTS += tests/integration/test_moefy.py
EXTRA_DIST += tests/integration/test_moefy.py tests/fixtures/make_moefy.py \
	tests/fixtures/moefy/ffn_mlp.onnx tests/fixtures/moefy/ffn_mlp.json
# Hostile files and names, loop stalls, NaN/Inf inputs (issue 10).
TESTS += tests/integration/test_safety.py
EXTRA_DIST += tests/integration/test_safety.py
# HTTP loops and limits; the suites again with two loops (--http-threads=2
# through SS_TEST_HTTP_THREADS, which tests/lib/daemon.py reads).
LOOPS_TESTS = tests/integration/test_limits.py \
	tests/integration/test_http_loops2.py \
	tests/integration/test_admin_loops2.py \
	tests/integration/test_serve_loops2.py
TESTS += $(LOOPS_TESTS)
EXTRA_DIST += $(LOOPS_TESTS)
# TLS on both listeners, certificate reload on SIGHUP (issue 10).
TESTS += tests/integration/test_tls.py
EXTRA_DIST += tests/integration/test_tls.py
# Loop lag on every HTTP loop while jobs, reloads and activations run.
TESTS += tests/integration/test_looplag.py
EXTRA_DIST += tests/integration/test_looplag.py
TESTS += tests/integration/test_jobprio.py
EXTRA_DIST += tests/integration/test_jobprio.py
TESTS += tests/integration/test_pace.py
EXTRA_DIST += tests/integration/test_pace.py
TESTS += tests/integration/test_control_batch.py
EXTRA_DIST += tests/integration/test_control_batch.py
# Rows that mix (x - x.mean(0), x @ x.T, ...): one request at a time.
TESTS += tests/integration/test_row_isolation.py
EXTRA_DIST += tests/integration/test_row_isolation.py
# 1,100 slow connections while a normal client is served (issue 10).
TESTS += tests/integration/test_slow_clients.py
EXTRA_DIST += tests/integration/test_slow_clients.py
# 1,000 connections sending 1 MB bodies: RSS within the buffered cap.
TESTS += tests/integration/test_body_flood.py
EXTRA_DIST += tests/integration/test_body_flood.py
# Bodies as Python clients send them: gzip/deflate Content-Encoding.
TESTS += tests/integration/test_clients.py
EXTRA_DIST += tests/integration/test_clients.py
# Inputs that decide shapes (a Reshape's shape, a TopK's K) per request.
TESTS += tests/integration/test_shape_inputs.py
EXTRA_DIST += tests/integration/test_shape_inputs.py
# max_response_bytes against PyTorch models whose output size a client
# chooses (Range, Expand, ConstantOfShape, a batched outer product).
TESTS += tests/integration/test_response_limit.py
EXTRA_DIST += tests/integration/test_response_limit.py
# An outlier request's arena and batch buffers are given back (RSS from
# /proc) after usual requests and after 10 s idle (common/workbuf.h).
TESTS += tests/integration/test_outlier.py
EXTRA_DIST += tests/integration/test_outlier.py
# LoRA adapters against PyTorch, JSON and binary, mixed batches, admin
# load/unload under load (issue 14, docs/lora.md).
TESTS += tests/integration/test_lora.py
EXTRA_DIST += tests/integration/test_lora.py
TESTS += tests/integration/test_lora_train.py
EXTRA_DIST += tests/integration/test_lora_train.py
TESTS += tests/integration/test_lora_ops.py
EXTRA_DIST += tests/integration/test_lora_ops.py
TESTS += tests/integration/test_lora_cache.py
EXTRA_DIST += tests/integration/test_lora_cache.py
# Replicas on one repository behind nginx (issue 16).
TESTS += tests/integration/test_replica.py
EXTRA_DIST += tests/integration/test_replica.py
# The Kubernetes manifests in conf/k8s, checked offline (issue 16).
TESTS += tests/integration/test_k8s.py
EXTRA_DIST += tests/integration/test_k8s.py
# The admin page in headless Chromium (issue 17); skipped without it.
TESTS += tests/integration/test_ui.py
EXTRA_DIST += tests/integration/test_ui.py
