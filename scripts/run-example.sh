#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs what slimserve needs, builds it, and serves the example model
# repository in conf/ on 127.0.0.1:8000 (admin API on 127.0.0.1:8001, with
# a token generated into ./admin.token).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
make -j"$(nproc)"
if [ ! -s admin.token ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > admin.token)
    echo "admin token written to $(pwd)/admin.token"
fi
exec ./server/slimserve --config=conf/slimserve.json \
    --admin-token-file=admin.token "$@"
