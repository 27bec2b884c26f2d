#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Serving benchmark (bench/serve.py does the work; see bench/README.md).
# By default the scale part (issue 9): slimserve vs nginx `return 200` and
# a Node + onnxruntime-node peer on MNIST-sized models, batching on/off,
# 1 vs 2 HTTP loops, per-core cost; about 8 minutes.  `--part layer` runs
# the server-layer-vs-engine part instead.  Loopback only.
#
#   bench/serve.sh [BUILDDIR] [DURATION_S] [serve.py options...]
#
# Needs wrk, nginx-light, python3-numpy, python3-onnx (Debian) and, for the
# peer, node with bench/node_modules (ONNXRUNTIME_NODE_INSTALL=skip npm ci).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top}
args=(--build "$build")
if [ $# -ge 2 ]; then
    args+=(--duration "$2")
fi
shift $(( $# < 2 ? $# : 2 ))
exec /usr/bin/python3 "$top/bench/serve.py" "${args[@]}" "$@"
