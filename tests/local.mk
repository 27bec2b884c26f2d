# SPDX-License-Identifier: Apache-2.0
EXTRA_DIST += tests/tap.h tests/lib/tap.py
EXTRA_DIST += tests/lib/daemon.py

TESTS += tests/integration/test_http.py tests/integration/test_admin.py
EXTRA_DIST += tests/integration/test_http.py tests/integration/test_admin.py
EXTRA_DIST += scripts/install-deps.sh scripts/run-example.sh .ci/run
EXTRA_DIST += bench/http.sh

TESTS += tests/integration/test_serve.py
EXTRA_DIST += tests/integration/test_serve.py tests/lib/kserve.py \
	tests/integration/data/make_v2.py tests/integration/data/mlp_v2.onnx
TESTS += tests/integration/test_compress.py
EXTRA_DIST += tests/integration/test_compress.py
