#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Builds the libFuzzer targets with clang (ASan + UBSan) straight from the
# sources, replays the saved reproducers in tests/fuzz/crashes/, then fuzzes
# each target for a bounded time from a seed corpus (the committed ONNX and
# numpy fixtures, tests/fuzz/seeds/ and the minimized corpus of the
# recorded campaigns in tests/fuzz/corpus/<target>/).  The main build
# stays gcc-only; this needs clang and libclang-rt-14-dev.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# Environment: FUZZ_WORKDIR (default: a new temporary directory, removed
# unless something crashed), FUZZ_TARGETS (default: every target, "fuzz_npy
# fuzz_onnx fuzz_kserve fuzz_jobs fuzz_cfg fuzz_http fuzz_safetensors"),
# FUZZ_JOBS (parallel compiles, default 2), FUZZ_STRICT=1 (a target that
# does not build is a failure, not a skip), CC (default clang).
#
# Exit status: 0 when nothing crashed, 1 on any crash, leak, timeout or
# out-of-memory (artifacts are kept in the work directory and named in the
# output), 2 on a usage or setup error.  The last line is a summary:
#   fuzz: fuzz_npy runs=N execs/s=R ok; fuzz_onnx ...; crashes=0

set -u

secs=${1:-30}
case $secs in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2;; esac
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cc=${CC:-clang}
targets=${FUZZ_TARGETS:-"fuzz_npy fuzz_onnx fuzz_kserve fuzz_jobs fuzz_cfg fuzz_http fuzz_safetensors"}
jobs=${FUZZ_JOBS:-2}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: SKIP: $cc not found (apt-get install clang libclang-rt-14-dev)"
    [ "${FUZZ_STRICT:-0}" = 1 ] && exit 1
    exit 0
fi

keep=1
if [ -z "${FUZZ_WORKDIR:-}" ]; then
    FUZZ_WORKDIR=$(mktemp -d /tmp/ss-fuzz.XXXXXX) || exit 2
    keep=0
fi
work=$FUZZ_WORKDIR
mkdir -p "$work/obj" "$work/gen/engine/ir" "$work/artifacts" || exit 2
# A reused work directory may hold objects compiled against older headers.
rm -f "$work"/obj/*.o

san="-fsanitize=address,undefined -fno-sanitize-recover=all"
cflags="-std=gnu11 -g -O1 -fno-omit-frame-pointer $san -D_GNU_SOURCE \
    -I$src -I$work/gen $(pkg-config --cflags libprotobuf-c 2>/dev/null) \
    $(pkg-config --cflags libmicrohttpd gnutls libuv 2>/dev/null)"
libs="$(pkg-config --libs libprotobuf-c 2>/dev/null || echo -lprotobuf-c) \
    $(pkg-config --libs jansson 2>/dev/null || echo -ljansson) \
    -ldnnl -lgomp -lpthread -lz -lm"
# What fuzz_jobs links on top (the server folders and compress/).
srv_libs="$(pkg-config --libs libuv lapacke 2>/dev/null || echo -luv -llapacke)"
# And what fuzz_http links on top of that (the HTTP layer).
http_libs="$(pkg-config --libs libmicrohttpd gnutls 2>/dev/null ||
    echo -lmicrohttpd -lgnutls)"

# config.h: the engine needs only the package identity from it.
cat > "$work/gen/config.h" <<EOF
#define PACKAGE "slimserve"
#define PACKAGE_NAME "slimserve"
#define PACKAGE_VERSION "fuzz"
#define VERSION "fuzz"
EOF

# The ONNX protobuf code, as the build generates it.
if [ -f "$src/engine/ir/onnx.proto" ] && command -v protoc-c >/dev/null; then
    protoc-c --proto_path="$src/engine/ir" --c_out="$work/gen/engine/ir" \
        "$src/engine/ir/onnx.proto" 2>"$work/protoc.log" ||
        cat "$work/protoc.log"
fi

# compile SRC OBJ: one object with -fsanitize=fuzzer-no-link.
compile() {
    $cc $cflags -fsanitize=fuzzer-no-link -w -c "$1" -o "$2" \
        2>>"$work/build.log"
}

# Objects for a list of sources, in parallel; prints the objects built,
# returns non-zero if any failed.
build_objs() {
    fail=0
    objs=""
    n=0
    for f in "$@"; do
        o="$work/obj/$(echo "$f" | sed "s|^$src/||; s|^$work/||; s|/|_|g").o"
        # Once per list (two compiles of one object would race) and once
        # per run (the targets share them), unless the source changed
        # since.
        case " $objs " in *" $o "*) continue;; esac
        objs="$objs $o"
        [ -f "$o" ] && [ "$o" -nt "$f" ] && continue
        rm -f "$o"
        compile "$f" "$o" &
        n=$((n + 1))
        if [ "$n" -ge "$jobs" ]; then
            wait
            n=0
        fi
    done
    wait
    for o in $objs; do
        [ -f "$o" ] || fail=1
    done
    echo "$objs"
    return $fail
}

common_srcs=$(ls "$src"/common/*.c)
# The engine's sources exactly as its automake fragments list them (the
# tree may hold half-written files that are not built yet).
engine_srcs=""
for f in $(cat "$src"/engine/*/local.mk 2>/dev/null |
           awk '/\\$/ { sub(/\\$/, ""); printf "%s ", $0; next } { print }' |
           awk '$1 ~ /^engine_(ir_libssir|plan_libssplan|dnnl_libssdnnl|ops_libssops)_a_SOURCES$/ {
                    for (i = 3; i <= NF; i++) if ($i ~ /\.c$/) print $i }'); do
    [ -f "$src/$f" ] && engine_srcs="$engine_srcs $src/$f"
done
[ -f "$work/gen/engine/ir/onnx.pb-c.c" ] &&
    engine_srcs="$engine_srcs $work/gen/engine/ir/onnx.pb-c.c"

# lib_srcs DIR VAR: the .c files of automake variable VAR in DIR/local.mk.
lib_srcs() {
    awk '/\\$/ { sub(/\\$/, ""); printf "%s ", $0; next } { print }' \
        "$src/$1/local.mk" 2>/dev/null |
    awk -v var="$2" '$1 == var {
            for (i = 3; i <= NF; i++) if ($i ~ /\.c$/) print $i }' |
    while read -r f; do [ -f "$src/$f" ] && echo "$src/$f"; done
}
# engine/io as its fragment lists it (npy, npz, safetensors, ...).
io_srcs=$(lib_srcs engine/io engine_io_libssio_a_SOURCES)
# The parser of compress requests links the job runner (jobs.c), hence the
# registry, batching, compress/ and the engine: built into an archive so
# only what the parser reaches is linked.
jobs_srcs="$(lib_srcs server/jobs server_jobs_libssjobs_a_SOURCES)
    $(lib_srcs server/model server_model_libssmodel_a_SOURCES)
    $(lib_srcs server/batch server_batch_libssbatch_a_SOURCES)
    $(lib_srcs server/kserve server_kserve_libsskserve_a_SOURCES)
    $(lib_srcs server server_libssdaemon_a_SOURCES)
    $(lib_srcs compress compress_libsscompress_a_SOURCES)
    $(lib_srcs compress/train compress_train_libsstrain_a_SOURCES)"

summary=""
crashes=0
failed_build=0

build_target() {
    t=$1
    case $t in
        fuzz_npy) srcs="$common_srcs $io_srcs";;
        fuzz_safetensors) srcs="$common_srcs $src/engine/io/safetensors.c";;
        fuzz_onnx) srcs="$common_srcs $io_srcs $engine_srcs";;
        fuzz_kserve) srcs="$common_srcs $src/engine/ir/dtype.c \
            $src/server/kserve/kserve.c $src/server/kserve/kserve_data.c \
            $src/server/kserve/kserve_enc.c $src/server/kserve/kserve_num.c \
            $src/server/kserve/kserve_fmt.c $src/server/kserve/kserve_scan.c";;
        fuzz_jobs) srcs="$common_srcs $io_srcs $engine_srcs $jobs_srcs";;
        fuzz_cfg) srcs="$common_srcs $src/server/cfg.c";;
        # http.c is compiled into the harness itself (it reaches the MHD
        # daemon of a listener's loop), so it stays out of the archive.
        fuzz_http) srcs="$common_srcs $io_srcs $engine_srcs $jobs_srcs
            $(lib_srcs server/http server_http_libsshttp_a_SOURCES |
              grep -v '/server/http/http\.c$')";;
        *) echo "fuzz: unknown target $t" >&2; return 1;;
    esac
    # shellcheck disable=SC2086
    objs=$(build_objs $srcs) || {
        echo "fuzz: $t: some sources do not compile with $cc:" >&2
        tail -n 20 "$work/build.log" >&2
        return 1
    }
    extra=""
    if [ "$t" = fuzz_jobs ] || [ "$t" = fuzz_http ]; then
        rm -f "$work/$t.a"
        # shellcheck disable=SC2086
        ar rcs "$work/$t.a" $objs || return 1
        objs="$work/$t.a"
        extra="-DSS_FUZZ_SRCDIR=\"$src\" $srv_libs"
        [ "$t" = fuzz_http ] && extra="$extra $http_libs"
    fi
    # shellcheck disable=SC2086
    $cc $cflags -fsanitize=fuzzer -w "$here/$t.c" $objs $extra $libs \
        -o "$work/$t" 2>>"$work/build.log" || {
        echo "fuzz: $t: link failed:" >&2
        tail -n 20 "$work/build.log" >&2
        return 1
    }
}

seed() {
    t=$1
    d="$work/corpus-$t"
    mkdir -p "$d" "$work/seeds-$t"
    case $t in
        fuzz_npy)
            cp "$src"/tests/unit/data/npy/* "$work/seeds-$t/" 2>/dev/null
            for f in "$src"/tests/fixtures/*/batch1.npz \
                     "$src"/tests/fixtures/*/expected1.npz; do
                [ -f "$f" ] && cp "$f" \
                    "$work/seeds-$t/$(echo "$f" | sed "s|$src/||; s|/|_|g")"
            done
            cp "$here"/seeds/npy/* "$work/seeds-$t/" 2>/dev/null;;
        fuzz_onnx)
            for f in "$src"/tests/fixtures/*/model.onnx \
                     "$src"/tests/fixtures/*/*/model.onnx \
                     "$here"/seeds/onnx/*; do
                [ -f "$f" ] && cp "$f" \
                    "$work/seeds-$t/$(echo "$f" | sed "s|$src/||; s|/|_|g")"
            done;;
        fuzz_kserve|fuzz_jobs|fuzz_cfg|fuzz_http|fuzz_safetensors)
            cp "$here/seeds/${t#fuzz_}"/* "$work/seeds-$t/" 2>/dev/null;;
    esac
    # The minimized corpus of the recorded campaigns (README).
    cp "$here/corpus/$t"/* "$work/seeds-$t/" 2>/dev/null
    echo "$d"
}

for t in $targets; do
    if ! build_target "$t"; then
        failed_build=$((failed_build + 1))
        summary="$summary $t build-failed;"
        continue
    fi
    opts="-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=20 \
        -artifact_prefix=$work/artifacts/$t- -print_final_stats=1"
    # fuzz_http's server keeps state across inputs (metrics series, the
    # registry's threads): libFuzzer's leak check after every input that
    # allocated more than it freed would cost ~40 ms each; LeakSanitizer
    # still checks at exit.
    [ "$t" = fuzz_http ] && opts="$opts -detect_leaks=0"
    # Saved reproducers first: each must now run clean.
    repro=""
    for f in "$here"/crashes/"$t"-* "$here"/crashes/"$t"/*; do
        [ -f "$f" ] && repro="$repro $f"
    done
    if [ -n "$repro" ]; then
        # shellcheck disable=SC2086
        if ! "$work/$t" $opts $repro >"$work/$t-repro.log" 2>&1; then
            echo "fuzz: $t: a saved reproducer still fails:" >&2
            grep -E "ERROR|SUMMARY|Running" "$work/$t-repro.log" | head -20 >&2
            crashes=$((crashes + 1))
            keep=1
            summary="$summary $t repro-FAILED;"
        fi
    fi
    corpus=$(seed "$t")
    # shellcheck disable=SC2086
    "$work/$t" $opts -max_total_time="$secs" -max_len=1048576 \
        "$corpus" "$work/seeds-$t" >"$work/$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" |
           tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" |
           tail -n 1)
    if [ "$rc" -ne 0 ]; then
        crashes=$((crashes + 1))
        keep=1
        echo "fuzz: $t: exit $rc; artifacts in $work/artifacts:" >&2
        grep -E "ERROR:|SUMMARY:|Test unit written|==[0-9]+==ERROR" \
            "$work/$t.log" | head -20 >&2
        summary="$summary $t runs=${runs:-?} execs/s=${rate:-?} CRASH;"
    else
        summary="$summary $t runs=${runs:-?} execs/s=${rate:-?} ok;"
    fi
done

[ "$keep" = 0 ] && rm -rf "$work"
[ "$keep" = 1 ] && echo "fuzz: work directory kept: $work" >&2
echo "fuzz:$summary crashes=$crashes"
[ "$crashes" -gt 0 ] && exit 1
[ "$failed_build" -gt 0 ] && [ "${FUZZ_STRICT:-0}" = 1 ] && exit 1
exit 0
