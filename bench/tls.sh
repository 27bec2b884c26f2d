#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# What TLS costs: the MLP fixture served over plain HTTP and over HTTPS by
# the same build, each measured with wrk in the same run:
#   keep-alive   POST /v2/models/mlp/infer (batch 1, JSON) on kept-alive
#                connections: the per-request cost of the record layer;
#   new conn     the same request with "Connection: close": every request
#                pays a TCP connect and, over HTTPS, a full TLS handshake
#                (RSA-2048 certificate, TLS 1.3).
# Prints the median of RUNS runs of each and the ratio HTTPS/HTTP.
# Loopback only.
#
#   bench/tls.sh [BUILDDIR] [DURATION_S] [CONNECTIONS] [RUNS]
#
# Needs wrk, openssl and python3-numpy.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top}
dur=${2:-10}
conns=${3:-16}
runs=${4:-3}
bin=$build/server/slimserve
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }
[ -x "$bin" ] || { echo "$bin is missing: build first"; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# A self-signed certificate for IP 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 1 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
mkdir -p "$tmp/models/mlp/1"
cp "$top/tests/fixtures/mlp_op13/model.onnx" "$tmp/models/mlp/1/"
/usr/bin/python3 - "$top" "$tmp" <<'PY'
import json, sys
import numpy as np
top, tmp = sys.argv[1], sys.argv[2]
with np.load(top + "/tests/fixtures/mlp_op13/batch1.npz") as z:
    x = z[z.files[0]]
body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                               "datatype": "FP32",
                               "data": x.flatten().tolist()}]})
for name, close in (("ka", False), ("close", True)):
    with open("%s/%s.lua" % (tmp, name), "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        if close:
            f.write('wrk.headers["Connection"] = "close"\n')
        f.write("wrk.body = %s\n" % json.dumps(body))
PY

# Not in $(...): the daemon would hold the substitution's pipe open.
start() {
    local log=$1; shift
    "$bin" --http-address=127.0.0.1 --http-port=0 --admin-port=-1 \
        --model-repository="$tmp/models" --log-level=notice \
        --max-connections-per-ip=0 "$@" >/dev/null 2>"$log" &
    pids+=($!)
    for _ in $(seq 600); do
        grep -q 'model(s) loaded' "$log" && break
        sleep 0.05
    done
    port=$(sed -n 's/.*listening http=[^ ]*:\([0-9]*\) .*/\1/p' "$log")
    [ -n "$port" ] || { echo "slimserve did not start:"; cat "$log"; exit 1; }
}
start "$tmp/plain.log"
plain_port=$port
start "$tmp/tls.log" --http-tls-cert-file="$tmp/cert.pem" \
    --http-tls-key-file="$tmp/key.pem"
tls_port=$port

rps() {
    wrk -t2 -c"$conns" -d"${dur}s" -s "$tmp/$2.lua" "$1" |
        awk '/Requests\/sec/ {print $2}'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

url_plain="http://127.0.0.1:$plain_port/v2/models/mlp/infer"
url_tls="https://127.0.0.1:$tls_port/v2/models/mlp/infer"
# The CPU model and ISA: only ratios from one run compare across machines.
/usr/bin/python3 -c "import sys; sys.path.insert(0, '$top/bench'); \
from pool import cpu_line; print('CPU: ' + cpu_line())"
echo "MLP batch 1 JSON, wrk -t2 -c$conns -d${dur}s, median of $runs runs;" \
    "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in ka close; do
    p_all=(); t_all=()
    for _ in $(seq "$runs"); do
        p_all+=("$(rps "$url_plain" $mode)")
        t_all+=("$(rps "$url_tls" $mode)")
    done
    p=$(printf '%s\n' "${p_all[@]}" | median)
    t=$(printf '%s\n' "${t_all[@]}" | median)
    label=$([ $mode = ka ] && echo "keep-alive" || echo "new conn  ")
    printf '  %s  http %9.0f req/s  https %9.0f req/s  ratio %.2f' \
        "$label" "$p" "$t" "$(awk -v a="$t" -v b="$p" 'BEGIN {print a / b}')"
    [ $mode = close ] && awk -v a="$t" -v b="$p" 'BEGIN {
        printf "  (1/rps grows by %.0f us: handshake, client and server sharing the cores)", (1e6 / a - 1e6 / b) }'
    echo "   runs http: ${p_all[*]}  https: ${t_all[*]}"
done
