#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# The systemd unit: "systemd-analyze verify" finds nothing to say about it
# (every directive known to this systemd, the executables exist), and
# "systemd-analyze security --offline=true" rates its exposure 2.0 or
# lower.  The generated unit names the installed binary, so a temporary
# copy points ExecStart at the one just built.

set -u
n=0
failed=0

ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
    fi
}

diag() {
    printf '%s\n' "$*" | sed 's/^/# /'
}

done_tap() {
    echo "1..$n"
    [ "$failed" -eq 0 ]
    exit $?
}

: "${top_builddir:?run me from make check}"
unit="$top_builddir/systemd/slimserve.service"
bin="$top_builddir/server/slimserve"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    ok 1 "systemd-analyze is installed (Debian: systemd)"
    done_tap
fi
diag "$(systemd-analyze --version | head -n 1)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ss-systemd-XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

test -f "$unit" && ! grep -q '@[a-z]*@' "$unit"
ok $? "unit generated with configure's paths"
grep -q '^ExecStart=/.*/slimserve ' "$unit"
ok $? "ExecStart names an absolute slimserve"
test -x "$bin"
ok $? "daemon built at $bin"

sed "s|^ExecStart=[^ ]*|ExecStart=$bin|" "$unit" >"$tmp/slimserve.service"

(cd "$tmp" && systemd-analyze verify ./slimserve.service) >"$tmp/verify" 2>&1
rc=$?
test "$rc" -eq 0 && ! test -s "$tmp/verify"
ok $? "systemd-analyze verify: exit 0, no output"
if [ -s "$tmp/verify" ]; then
    diag "$(cat "$tmp/verify")"
fi

# The check above must be able to fail: a directive this systemd does not
# know, and a missing executable, are both reported.
mkdir "$tmp/bad"
sed -e "s|^ExecStart=[^ ]*|ExecStart=$tmp/no-such-binary|" \
    -e 's|^Type=notify|Type=notify\nNoSuchDirective=yes|' \
    "$unit" >"$tmp/bad/slimserve.service"
(cd "$tmp/bad" && systemd-analyze verify ./slimserve.service) \
    >"$tmp/bad/verify" 2>&1
grep -q NoSuchDirective "$tmp/bad/verify" &&
    grep -q no-such-binary "$tmp/bad/verify"
ok $? "systemd-analyze verify reports a broken copy"

grep -q '^Type=notify$' "$unit" && grep -q '^ExecReload=' "$unit"
ok $? "Type=notify with ExecReload"
! grep -q '^MemoryDenyWriteExecute=yes' "$unit"
ok $? "no MemoryDenyWriteExecute=yes (oneDNN's JIT needs it off)"

(cd "$tmp" && systemd-analyze security --offline=true --no-pager \
    ./slimserve.service) >"$tmp/security" 2>&1
pat='s/.*Overall exposure level for slimserve\.service: \([0-9.]*\).*/\1/p'
score=$(sed -n "$pat" "$tmp/security")
test -n "$score"
ok $? "systemd-analyze security prints an exposure level"
diag "exposure level: ${score:-none}"
awk -v s="${score:-99}" 'BEGIN { exit !(s + 0 <= 2.0) }'
ok $? "exposure ${score:-none} <= 2.0"
if [ -z "$score" ] || [ "$failed" -gt 0 ]; then
    diag "$(cat "$tmp/security")"
fi

done_tap
