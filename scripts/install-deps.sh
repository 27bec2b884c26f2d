#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian 12 package slimserve needs to build, run and test.
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    build-essential autoconf automake pkg-config \
    libmicrohttpd-dev libgnutls28-dev libjansson-dev libuv1-dev libdnnl-dev \
    protobuf-c-compiler libprotobuf-c-dev liblapacke-dev libopenblas-dev \
    zlib1g-dev libsystemd-dev \
    python3 python3-numpy python3-onnx prometheus systemd curl ca-certificates openssl \
    nginx-light haproxy python3-yaml yamllint chromium tmux \
    libopenmpi-dev openmpi-bin \
    clang libclang-rt-14-dev
