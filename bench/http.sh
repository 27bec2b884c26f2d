#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The raw HTTP ceiling: requests/s of GET /v2/health/live on slimserve and
# of the same small JSON answer from nginx (the peer), under the same wrk
# load in the same run, and their ratio.  Loopback only.
#
#   bench/http.sh [BUILDDIR] [DURATION_S] [CONNECTIONS] [RUNS]
#
# Needs wrk and nginx (Debian packages wrk, nginx-light).  nginx runs with
# 2 workers, slimserve with its single loop thread.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top}
dur=${2:-10}
conns=${3:-64}
runs=${4:-3}
bin=$build/server/slimserve
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }
[ -x "$bin" ] || { echo "$bin is missing: build first"; exit 1; }

tmp=$(mktemp -d)
cleanup() {
    [ -n "${ss_pid:-}" ] && kill "$ss_pid" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" --http-address=127.0.0.1 --http-port=0 --admin-port=-1 \
    --log-level=notice 2>"$tmp/ss.log" &
ss_pid=$!
for _ in $(seq 100); do
    grep -q 'listening http=' "$tmp/ss.log" && break
    sleep 0.05
done
ss_port=$(sed -n 's/.*listening http=[^ ]*:\([0-9]*\) .*/\1/p' "$tmp/ss.log")

nginx_port=
if command -v nginx >/dev/null; then
    nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$tmp/nginx.conf" <<NGX
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$nginx_port;
        location = /v2/health/live {
            default_type application/json;
            return 200 '{"live":true}';
        }
    }
}
NGX
    nginx -c "$tmp/nginx.conf" -p "$tmp" 2>/dev/null || nginx_port=
    sleep 0.3
fi

rps() {
    wrk -t2 -c"$conns" -d"${dur}s" "$1" | awk '/Requests\/sec/ {print $2}'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ss_all=(); ng_all=()
for i in $(seq "$runs"); do
    ss_all+=("$(rps "http://127.0.0.1:$ss_port/v2/health/live")")
    [ -n "$nginx_port" ] && ng_all+=("$(rps "http://127.0.0.1:$nginx_port/v2/health/live")")
done
ss_med=$(printf '%s\n' "${ss_all[@]}" | median)
echo "GET /v2/health/live, wrk -t2 -c$conns -d${dur}s, median of $runs runs"
printf '  slimserve (1 loop thread): %12.0f req/s   runs: %s\n' "$ss_med" "${ss_all[*]}"
if [ -n "$nginx_port" ]; then
    ng_med=$(printf '%s\n' "${ng_all[@]}" | median)
    printf '  nginx (2 workers):         %12.0f req/s   runs: %s\n' "$ng_med" "${ng_all[*]}"
    awk -v a="$ss_med" -v b="$ng_med" 'BEGIN { printf "  ratio slimserve/nginx:     %12.2f\n", a / b }'
else
    echo "  nginx not installed: no peer (apt-get install nginx-light)"
fi
