# SPDX-License-Identifier: Apache-2.0
"""Several HTTP loops, and the limits an internet-facing server needs:
slow clients cut at the header and body deadlines, connections per client
address and in total, kept-alive idle time, the buffered-bytes cap, and
Retry-After on every 503.  The real daemon on 127.0.0.1; clients that must
not count as "the same address" connect from 127.0.0.2."""

import http.client
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import (Daemon, DaemonError, json_body,  # noqa: E402
                    parse_metrics, status_of)
import kserve  # noqa: E402

ADMIN = ["--admin-insecure"]
MLP = os.path.join(TOP_SRC, "tests", "fixtures", "mlp_op13", "model.onnx")


def other_source():
    """A loopback source address other than 127.0.0.1, when usable."""
    try:
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.close()
        return "127.0.0.2"
    except OSError:
        return None


SRC2 = other_source()


def raise_nofile(want):
    """Lets this process hold want descriptors, or skips the whole test
    when the hard limit is below that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            tap.skip_all("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connect(d, source=None, timeout=10):
    return socket.create_connection(
        ("127.0.0.1", d.http_port), timeout=timeout,
        source_address=(source, 0) if source else None)


def get_from(d, path, source=None, timeout=10):
    """One GET on a new connection from source: (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=timeout,
                                   source_address=(source, 0) if source
                                   else None)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def closed_by_server(s, wait):
    """True when the server closes s (EOF or reset) within wait seconds,
    reading and dropping whatever it sent first."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.1)
        if not r:
            continue
        try:
            if s.recv(65536) == b"":
                return True
        except OSError:
            return True
    return False


def accepted(d, source=None):
    """A kept-alive connection the server has surely accepted: it answered
    a request on it.  Each loop has its own SO_REUSEPORT listener, so
    connections are not accepted in the order they were made; a test that
    counts connections must know which ones the server holds."""
    s = connect(d, source)
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n")
    head = read_response(s)
    if head == b"":
        s.close()
        raise ConnectionResetError("closed by the server")
    if status_of(head) != 200:
        raise AssertionError("a held connection was not served: %r" % head)
    return s


def until(pred, wait=5.0):
    """pred() once it is true, polling for up to wait seconds: a close the
    client made is seen by the server a little later, later under load."""
    deadline = time.monotonic() + wait
    while True:
        try:
            v = pred()
        except (OSError, http.client.HTTPException, DaemonError):
            v = False        # refused while the server holds the slot
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def read_response(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_two_loops():
    # Both loops accept and serve; every connection stays on one loop.
    with Daemon(ADMIN + ["--http-threads=2"]) as d:
        tap.ok("2 HTTP loop thread(s)" in d.logs(), "the log names 2 loops")
        conns = [http.client.HTTPConnection("127.0.0.1", d.http_port,
                                            timeout=10) for _ in range(40)]
        codes = []
        for _ in range(3):
            for c in conns:
                c.request("GET", "/v2/health/live")
                r = c.getresponse()
                r.read()
                codes.append(r.status)
        for c in conns:
            c.close()
        tap.eq(codes, [200] * 120, "120 requests on 40 kept-alive "
               "connections")
        per = {}
        for (name, labels), v in d.metrics().items():
            lv = dict(labels)
            if (name == "slimserve_http_loop_requests_total" and
                    lv.get("listener") == "http"):
                per[lv["loop"]] = v
        tap.diag("requests per loop: %r" % per)
        tap.eq(sorted(per), ["0", "1"], "two loops report")
        tap.ok(per.get("0", 0) > 0 and per.get("1", 0) > 0,
               "both loops served requests", per)
        tap.eq(sum(per.values()), 121.0, "every request was counted once "
               "(120 + this /metrics read)")
        tap.eq(d.stop(), 0, "clean exit with 2 loops")


def test_slow_headers():
    # 200 connections trickle a header byte every 0.5 s: cut at the 2 s
    # header deadline, while a normal client keeps being served quickly.
    n_slow = 200
    with Daemon(ADMIN + ["--http-threads=2", "--header-timeout-s=2",
                         "--max-connections=1100",
                         "--max-connections-per-ip=1000"]) as d:
        slow = []
        for _ in range(n_slow):
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
                st, _, _ = get_from(d, "/v2/health/live", SRC2, timeout=5)
                lat.append(time.monotonic() - t)
                codes.append(st)
                time.sleep(0.05)

        th = threading.Thread(target=normal)
        th.start()
        open_ = set(range(n_slow))
        closed_at = {}
        while open_ and time.monotonic() - t0 < 8:
            for i in list(open_):
                s = slow[i]
                try:
                    s.send(b"a")
                    if s.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    open_.discard(i)
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.5)
        stop.set()
        th.join()
        for s in slow:
            s.close()
        times = sorted(closed_at.values())
        tap.eq(len(open_), 0, "all %d trickling connections were cut"
               % n_slow)
        tap.ok(times and times[0] >= 1.5 and times[-1] < 5,
               "cut after the 2 s header deadline (%.1f..%.1f s)"
               % (times[0] if times else -1, times[-1] if times else -1))
        lat.sort()
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else None
        tap.diag("normal client: %d requests, p99 %.1f ms"
                 % (len(lat), (p99 or 0) * 1000))
        tap.ok(len(codes) > 10 and all(c == 200 for c in codes),
               "a normal client is served meanwhile (%d requests)"
               % len(codes))
        tap.ok(p99 is not None and p99 < 0.25,
               "its p99 stays low (%.1f ms)" % ((p99 or 0) * 1000))
        slow_n = d.metric("slimserve_http_slow_clients_total",
                          listener="http", phase="header")
        tap.ok(slow_n >= n_slow, "slow clients are counted (%d)" % slow_n)
        tap.eq(d.stop(), 0, "clean exit")


def test_body_deadline():
    with Daemon(ADMIN + ["--http-threads=2", "--body-timeout-s=1"]) as d:
        s = connect(d)
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        t0 = time.monotonic()
        cut = False
        for _ in range(40):          # a byte every 0.1 s: never idle
            time.sleep(0.1)
            try:
                s.sendall(b" ")
            except OSError:
                cut = True
                break
            r, _, _ = select.select([s], [], [], 0)
            if r:
                try:
                    cut = s.recv(4096) == b""
                except OSError:
                    cut = True
                if cut:
                    break
        took = time.monotonic() - t0
        s.close()
        tap.ok(cut and 0.8 < took < 3, "a trickled body is cut at the 1 s "
               "body deadline (%.1f s)" % took)
        tap.ok(d.metric("slimserve_http_slow_clients_total", listener="http",
                        phase="body") >= 1, "and counted as a slow client")
        st, _, _ = d.get("/v2/health/live")
        tap.eq(st, 200, "serving goes on")
        tap.eq(d.stop(), 0, "clean exit")


def test_connection_limits():
    # One loop holds every connection, so MHD's own per-listener limit
    # would be reached with the total: the total limit must still refuse
    # (not leave the connection in the backlog).  Two loops: the count
    # is shared across them.
    for loops in (1, 2):
        tap.diag("%d HTTP loop(s)" % loops)
        connection_limits(loops)


def connection_limits(loops):
    with Daemon(ADMIN + ["--http-threads=%d" % loops,
                         "--max-connections-per-ip=4",
                         "--max-connections=6"]) as d:
        held = [accepted(d) for _ in range(4)]
        extra = connect(d)
        tap.ok(closed_by_server(extra, 3), "a 5th connection from the same "
               "address is closed at once")
        extra.close()
        if SRC2:
            st, _, _ = get_from(d, "/v2/health/live", SRC2)
            tap.eq(st, 200, "another address is served")
        else:
            tap.ok(True, "# SKIP no second loopback address")
        held.pop().close()
        # Every connection the test makes counts until the server has seen
        # its close, which comes a little later (later under load): so each
        # step below waits for the state it needs instead of sleeping.
        tap.ok(until(lambda: d.metric("slimserve_http_rejected_total",
                                      listener="http",
                                      reason="per_ip_limit") >= 1),
               "the refusal is counted (per_ip_limit), on a slot freed by "
               "a close")
        s = until(lambda: accepted(d))
        tap.ok(s, "the freed slot serves a new connection")
        if s:
            held.append(s)
        if SRC2:
            # A kept-alive /metrics connection from 127.0.0.2 reads the
            # open-connections gauge without opening more.
            probe = http.client.HTTPConnection(
                "127.0.0.1", d.http_port, timeout=10,
                source_address=(SRC2, 0))

            def open_now():
                probe.request("GET", "/metrics")
                m = parse_metrics(probe.getresponse().read().decode())
                return m.get(("slimserve_http_connections",
                              (("listener", "http"),)))
            # 4 from 127.0.0.1, the probe and one more fill the 6 slots.
            until(lambda: open_now() == 5)
            more = accepted(d, SRC2)
            n = until(lambda: open_now() == 6) and 6
            seventh = connect(d, SRC2)
            tap.ok(n == 6 and closed_by_server(seventh, 3),
                   "the connection over the total limit is closed")
            seventh.close()
            more.close()
            for c in held:
                c.close()
            n = until(lambda: open_now() == 1) and 1
            tap.eq(n, 1, "open connections go back down (only the probe)")
            tap.ok(d.metric("slimserve_http_rejected_total",
                            listener="http", reason="connection_limit") >= 1,
                   "the total-limit refusal is counted (connection_limit)")
            probe.close()
        else:
            for c in held:
                c.close()
            tap.ok(True, "# SKIP no second loopback address")
            tap.ok(True, "# SKIP no second loopback address")
            tap.ok(True, "# SKIP no second loopback address")
        tap.eq(d.stop(), 0, "clean exit")


def test_keepalive_timeout():
    with Daemon(ADMIN + ["--keepalive-timeout-s=1"]) as d:
        idle = http.client.HTTPConnection("127.0.0.1", d.http_port,
                                          timeout=5)
        idle.request("GET", "/v2/health/live")
        idle.getresponse().read()
        busy = http.client.HTTPConnection("127.0.0.1", d.http_port,
                                          timeout=5)
        codes = []
        for _ in range(6):           # 3 s of requests 0.5 s apart
            busy.request("GET", "/v2/health/live")
            r = busy.getresponse()
            r.read()
            codes.append(r.status)
            time.sleep(0.5)
        tap.eq(codes, [200] * 6, "a connection used every 0.5 s stays open")
        tap.ok(closed_by_server(idle.sock, 1), "an idle kept-alive "
               "connection was closed after 1 s")
        idle.close()
        busy.close()
        tap.eq(d.stop(), 0, "clean exit")


def test_buffered_cap():
    # Bodies of 1 MB against a 4 MiB cap: 4 fit, the rest get 503 at once.
    cap, size = 4 << 20, 1000000
    with Daemon(ADMIN + ["--http-threads=2", "--max-body-bytes=2000000",
                         "--max-buffered-bytes=%d" % cap]) as d:
        head = (b"POST /v2/models/x/infer HTTP/1.1\r\nHost: a\r\n"
                b"Content-Length: %d\r\n\r\n" % size)
        held, refused = [], []
        for i in range(8):
            s = connect(d)
            s.sendall(head + b"x" * (size // 2))
            time.sleep(0.1)
            r, _, _ = select.select([s], [], [], 0.3)
            if r:
                refused.append((s, read_response(s)))
            else:
                held.append(s)
        used = d.metric("slimserve_http_buffered_bytes")
        tap.eq(len(held), 4, "4 bodies of 1 MB fit in 4 MiB")
        tap.ok(0 < used <= cap, "buffered bytes stay under the cap "
               "(%d <= %d)" % (used, cap))
        tap.eq([status_of(r) for _, r in refused], [503] * 4,
               "the other 4 get 503 before sending their bodies")
        tap.ok(all(b"retry-after: 1" in r.lower() for _, r in refused),
               "with Retry-After", refused[0][1][:300] if refused else None)
        tap.ok(d.metric("slimserve_http_rejected_total", listener="http",
                        reason="buffered_bytes") >= 4,
               "and counted (buffered_bytes)")
        # A chunked body grows into the full budget: refused as well.
        c = connect(d)
        c.sendall(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: a\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" +
                  b"".join(b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
                           for _ in range(8)) + b"0\r\n\r\n")
        tap.eq(status_of(read_response(c)), 503,
               "a chunked body beyond the budget gets 503")
        c.close()
        for s, _ in refused:
            s.close()
        for s in held:
            s.sendall(b"x" * (size - size // 2))
        tap.eq([status_of(read_response(s)) for s in held], [404] * 4,
               "the bodies that fit are served (404: no model x)")
        for s in held:
            s.close()
        time.sleep(0.3)
        tap.eq(d.metric("slimserve_http_buffered_bytes"), 0.0,
               "the budget is given back")
        tap.eq(d.stop(), 0, "clean exit")


def test_retry_after():
    # Every 503 says when to come back: a full batch queue, and draining.
    tmp = tempfile.mkdtemp()
    repo = os.path.join(tmp, "m")
    os.makedirs(os.path.join(repo, "slow", "1"))
    shutil.copy(MLP, os.path.join(repo, "slow", "1", "model.onnx"))
    with open(os.path.join(repo, "slow", "config.json"), "w") as f:
        f.write('{"max_batch_size": 32, "max_queue_delay_us": 1500000, '
                '"queue": {"max_size": 1}}')
    with np.load(os.path.join(TOP_SRC, "tests", "fixtures", "mlp_op13",
                              "batch64.npz")) as z:
        x = kserve.json_request({z.files[0]: z[z.files[0]][:1]})
    with Daemon(ADMIN + ["--http-threads=2", "--retry-after-s=7"],
                repository=repo) as d:
        res = {}

        def first():
            res["first"] = d.post("/v2/models/slow/infer", x)[0]

        t = threading.Thread(target=first)
        t.start()
        time.sleep(0.3)
        st, hd, body = d.post("/v2/models/slow/infer", x)
        tap.eq(st, 503, "a full queue answers 503")
        tap.eq(hd.get("Retry-After"), "7", "with Retry-After from the config")
        t.join()
        tap.eq(res.get("first"), 200, "the queued request succeeds")

        c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=5)
        c.request("GET", "/v2/health/live")
        c.getresponse().read()
        s = connect(d)
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: 4\r\n\r\n12")
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        tap.ok(d.wait_log("shutting down"), "draining")
        time.sleep(0.3)
        c.request("GET", "/v2/health/live")
        r = c.getresponse()
        r.read()
        tap.eq((r.status, r.getheader("Retry-After"),
                (r.getheader("Connection") or "").lower()),
               (503, "7", "close"), "a kept-alive request while draining: "
               "503, Retry-After, Connection: close")
        c.close()
        s.sendall(b"34")
        tap.eq(status_of(read_response(s)), 404,
               "the request in flight is still answered")
        s.close()
        tap.eq(d.wait(15), 0, "exit 0 after draining 2 loops")
    shutil.rmtree(tmp)


def main():
    for t in (test_two_loops, test_slow_headers, test_body_deadline,
              test_connection_limits, test_keepalive_timeout,
              test_buffered_cap, test_retry_after):
        tap.diag(t.__name__)
        t0 = time.monotonic()
        try:
            t()
        except Exception as e:  # a crash of the test is a failure
            import traceback
            tap.ok(False, "%s raised %r" % (t.__name__, e),
                   traceback.format_exc())
        tap.diag("%s took %.1f s" % (t.__name__, time.monotonic() - t0))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
