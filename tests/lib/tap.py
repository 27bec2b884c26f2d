# SPDX-License-Identifier: Apache-2.0
"""A tiny TAP producer for Python tests run by automake's tap-driver.sh."""

import sys
import traceback

_n = 0
_failed = 0


def ok(cond, desc, diag=None):
    global _n, _failed
    _n += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (_n, desc))
    if not cond:
        _failed += 1
        frame = traceback.extract_stack()[-2]
        print("#   failed at %s:%d" % (frame.filename, frame.lineno))
        if diag is not None:
            for line in str(diag).splitlines():
                print("#   " + line)
    sys.stdout.flush()
    return bool(cond)


def eq(got, want, desc):
    return ok(got == want, desc, "got %r, want %r" % (got, want))


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line)
    sys.stdout.flush()


def skip(reason, count=1):
    """count checks that cannot run here, reported as TAP skips."""
    global _n
    for _ in range(count):
        _n += 1
        print("ok %d # SKIP %s" % (_n, reason))
    sys.stdout.flush()


def skip_all(reason):
    print("1..0 # SKIP " + reason)
    sys.exit(0)


def done():
    print("1..%d" % _n)
    sys.stdout.flush()
    return 1 if _failed else 0
