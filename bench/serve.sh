#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Serving benchmark: slimserve under wrk on the MLP, CNN and transformer
# fixtures vs the engine alone (bench/serve.py does the work; see
# bench/README.md).  Loopback only; about 7 minutes with the defaults.
#
#   bench/serve.sh [BUILDDIR] [DURATION_S] [serve.py options...]
#
# Needs wrk (Debian package wrk) and Debian's python3 with numpy.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top}
dur=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
exec /usr/bin/python3 "$top/bench/serve.py" --build "$build" \
    --duration "$dur" "$@"
