#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""1,100 slow connections while a normal client is served (issue 10's
target: served, p99 <= 50 ms).

1,100 connections from 127.0.0.1 each send a request line and then one
header byte every 0.5 s, held open for 8 s (the header deadline is 10 s),
over two HTTP loops.  A normal client from 127.0.0.2 (127.0.0.1 when that
cannot be bound) opens a new connection for each GET /v2/health/live
every 50 ms meanwhile.  Asserted: all 1,100 are held (the connections
gauge), the normal client gets 200 every time with p99 <= 50 ms (or
twice its p99 measured alone just before, when the machine is so loaded
that this is over 25 ms), and the slow connections are cut at the
header deadline and counted.
"""

import os
import sys
import threading
import time

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "integration"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
from test_limits import (SRC2, connect, get_from,  # noqa: E402
                         raise_nofile)

N_SLOW = 1100
HOLD_S = 8.0
DEADLINE_S = 10


def main():
    raise_nofile(N_SLOW + 300)
    with Daemon(["--admin-insecure", "--http-threads=2",
                 "--header-timeout-s=%d" % DEADLINE_S,
                 "--max-connections=%d" % (N_SLOW + 100),
                 "--max-connections-per-ip=%d" % (N_SLOW + 50)]) as d:
        # The same client alone first: what this machine's load costs it.
        base = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            t = time.monotonic()
            get_from(d, "/v2/health/live", SRC2, timeout=5)
            base.append(time.monotonic() - t)
            time.sleep(0.05)
        base.sort()
        base99 = base[max(0, int(len(base) * 0.99) - 1)]
        slow = []
        for _ in range(N_SLOW):
            s = connect(d)
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            s.setblocking(False)
            slow.append(s)
        t0 = time.monotonic()
        stop = threading.Event()
        lat, codes = [], []

        def normal():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    st, _, _ = get_from(d, "/v2/health/live", SRC2,
                                        timeout=5)
                except OSError as e:
                    st = repr(e)
                lat.append(time.monotonic() - t)
                codes.append(st)
                time.sleep(0.05)

        th = threading.Thread(target=normal)
        th.start()
        held = 0
        while time.monotonic() - t0 < HOLD_S:
            for s in slow:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            if held == 0 and time.monotonic() - t0 > HOLD_S / 2:
                held = d.metric("slimserve_http_connections",
                                listener="http")
            time.sleep(0.5)
        stop.set()
        th.join()
        tap.ok(held >= N_SLOW, "%d connections held at once (gauge %d)"
               % (N_SLOW, held))
        lat.sort()
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)] if lat else None
        tap.diag("normal client: %d requests, p50 %.1f ms, p99 %.1f ms, "
                 "max %.1f ms (alone before: p99 %.1f ms); load average %s"
                 % (len(lat), lat[len(lat) // 2] * 1e3 if lat else 0,
                    (p99 or 0) * 1e3, lat[-1] * 1e3 if lat else 0,
                    base99 * 1e3, open("/proc/loadavg").read().split()[0]))
        tap.ok(len(codes) > 50 and all(c == 200 for c in codes),
               "the normal client was served (%d requests, all 200)"
               % len(codes), [c for c in codes if c != 200][:5])
        # The target is 50 ms; when the machine alone already costs the
        # client over 25 ms (make check -j2 beside other work), twice
        # its p99 alone is the bound instead.
        bound = max(0.05, 2 * base99)
        tap.ok(p99 is not None and p99 <= bound,
               "its p99 <= %.0f ms (%.1f ms)" % (bound * 1e3,
                                                  (p99 or 0) * 1e3))
        # Stop trickling: the header deadline cuts them all.
        cut = 0
        deadline = t0 + DEADLINE_S + 5
        while time.monotonic() < deadline and cut < N_SLOW:
            time.sleep(0.5)
            cut = d.metric("slimserve_http_slow_clients_total",
                           listener="http", phase="header")
        tap.ok(cut >= N_SLOW, "all cut at the %d s header deadline and "
               "counted (%d)" % (DEADLINE_S, cut))
        for s in slow:
            s.close()
        tap.eq(d.stop(), 0, "clean exit")
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
