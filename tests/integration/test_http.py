# SPDX-License-Identifier: Apache-2.0
"""Black-box tests of the data plane: the real daemon on 127.0.0.1."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("top_srcdir", "."), "tests",
                                "lib"))
import tap  # noqa: E402
from daemon import BINARY, Daemon, json_body, status_of  # noqa: E402

INSECURE = ["--admin-insecure"]


def test_endpoints():
    with Daemon(INSECURE) as d:
        st, hd, body = d.get("/v2/health/live")
        tap.eq(st, 200, "live is 200")
        tap.eq(json_body(body), {"live": True}, "live body")
        tap.ok(hd.get("Content-Type", "").startswith("application/json"),
               "live is JSON", hd)
        st, _, body = d.get("/v2/health/ready")
        tap.eq(st, 200, "ready is 200")
        tap.eq(json_body(body), {"ready": True}, "ready body")
        st, _, body = d.get("/v2")
        meta = json_body(body) or {}
        tap.eq(st, 200, "server metadata is 200")
        tap.eq(meta.get("name"), "slimserve", "metadata name")
        tap.ok(isinstance(meta.get("version"), str) and meta["version"],
               "metadata version")
        tap.ok(isinstance(meta.get("extensions"), list),
               "metadata extensions is a list")
        st, hd, body = d.request("HEAD", "/v2/health/live")
        tap.eq((st, body), (200, b""), "HEAD is served by GET routes")
        # Several requests on one kept-alive connection.
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=5)
        codes = []
        for _ in range(5):
            c.request("GET", "/v2/health/live")
            r = c.getresponse()
            r.read()
            codes.append(r.status)
        c.close()
        tap.eq(codes, [200] * 5, "keep-alive connection serves 5 requests")
        tap.eq(d.stop(), 0, "clean exit after SIGTERM")


def test_errors():
    with Daemon(INSECURE + ["--max-body-bytes=1024"]) as d:
        st, _, body = d.get("/nope")
        tap.eq(st, 404, "unknown path is 404")
        tap.ok("error" in (json_body(body) or {}), "404 body has error",
               body)
        st, _, body = d.get("/v2/models/nosuch")
        tap.eq(st, 404, "unknown model is 404")
        tap.ok("nosuch" in (json_body(body) or {}).get("error", ""),
               "404 names the model", body)
        st, hd, body = d.post("/v2/health/live", b"{}")
        tap.eq(st, 405, "POST on live is 405")
        tap.ok("GET" in hd.get("Allow", ""), "405 has an Allow header", hd)
        tap.ok("error" in (json_body(body) or {}), "405 body has error")
        st, _, body = d.request("DELETE", "/v2")
        tap.eq(st, 405, "DELETE on /v2 is 405")
        st, _, body = d.get("/v2/models/x/infer")
        tap.eq(st, 405, "GET on infer is 405")

        # Oversized body: declared, and chunked without a length.
        st, _, body = d.post("/v2/models/x/infer", b"x" * 2048)
        tap.eq(st, 413, "declared body over the limit is 413")
        tap.ok("limit" in (json_body(body) or {}).get("error", ""),
               "413 says why", body)
        chunks = b"".join(b"%x\r\n%s\r\n" % (300, b"y" * 300)
                          for _ in range(5)) + b"0\r\n\r\n"
        raw = d.raw(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: a\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        tap.eq(status_of(raw), 413, "chunked body over the limit is 413")
        st, _, _ = d.post("/v2/models/x/infer", b"x" * 1000)
        tap.eq(st, 404, "a body under the limit reaches the router")

        # Malformed requests get 400 or a closed connection, never a crash.
        raw = d.raw(b"GARBAGE\r\n\r\n")
        tap.ok(raw == b"" or status_of(raw) == 400, "garbage request line",
               raw[:80])
        raw = d.raw(b"GET /v2 HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        tap.ok(raw == b"" or status_of(raw) in (400, 200),
               "malformed header line", raw[:80])
        raw = d.raw(b"GET /v2 HTTP/1.1\r\nHost: a\r\nX-Big: " +
                    b"a" * 100000 + b"\r\n\r\n")
        tap.ok(raw == b"" or status_of(raw) in (400, 413, 431),
               "huge header is refused", raw[:80])
        raw = d.raw(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: a\r\n"
                    b"Content-Length: -5\r\n\r\n")
        tap.ok(raw == b"" or status_of(raw) in (400, 413),
               "negative Content-Length is refused", raw[:80])
        st, _, _ = d.get("/v2/health/live")
        tap.eq(st, 200, "still live after malformed requests")
        tap.eq(d.stop(), 0, "clean exit after malformed requests")


def test_connection_timeout():
    with Daemon(INSECURE + ["--connection-timeout-s=1"]) as d:
        s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        s.sendall(b"GET /v2 HTTP/1.1\r\nHost: a\r\n")  # never finished
        t0 = time.monotonic()
        try:
            data = s.recv(100)
        except socket.timeout:
            data = None
        waited = time.monotonic() - t0
        s.close()
        tap.ok(data is not None and data in (b"",) or
               (data and status_of(data) in (408, 400)),
               "an idle half-request is closed", data)
        tap.ok(waited < 8, "closed by the timeout (%.1fs)" % waited)
        tap.eq(d.stop(), 0, "clean exit")


def test_metrics_promtool():
    promtool = shutil.which("promtool")
    with Daemon(INSECURE) as d:
        for p in ("/v2/health/live", "/nope", "/v2"):
            d.get(p)
        # A request is counted when its connection's loop finishes it,
        # just after the answer is sent: with two loops the scrape may be
        # served by the other loop first, so wait (bounded) for the count.
        want = ('slimserve_http_requests_total{listener="http",'
                'endpoint="other",code="404"} 1')
        deadline = time.monotonic() + 3
        while True:
            st, hd, body = d.get("/metrics")
            text = body.decode()
            if want in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        tap.eq(st, 200, "metrics is 200")
        tap.ok(hd.get("Content-Type", "").startswith("text/plain"),
               "metrics content type", hd)
        for name in ("slimserve_build_info", "slimserve_uptime_seconds",
                     "slimserve_http_requests_total",
                     "slimserve_http_requests_in_flight",
                     "slimserve_http_request_duration_seconds_bucket"):
            tap.ok(name in text, "metrics has " + name)
        tap.ok('slimserve_http_requests_total{listener="http",'
               'endpoint="other",code="404"} 1' in text,
               "the 404 is counted by endpoint and code")
        tap.ok('endpoint="health",code="200"} 1' in text,
               "the live probe is counted")
        if promtool is None:
            tap.ok(False, "promtool is installed (Debian package prometheus)")
        else:
            p = subprocess.run([promtool, "check", "metrics"], input=body,
                               capture_output=True, timeout=30)
            tap.ok(p.returncode == 0, "promtool check metrics passes",
                   p.stdout.decode() + p.stderr.decode())
        d.stop()


def test_graceful_shutdown():
    # A request whose body is half sent when SIGTERM arrives is still
    # answered; new connections are refused; the exit code is 0.
    with Daemon(INSECURE) as d:
        s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: 10\r\n\r\n12345")
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        tap.ok(d.wait_log("shutting down: 1 request"),
               "shutdown sees the request in flight")
        time.sleep(0.2)
        tap.ok(d.proc.poll() is None, "daemon waits for the request")
        refused = False
        try:
            c = socket.create_connection(("127.0.0.1", d.http_port),
                                         timeout=2)
            c.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: a\r\n\r\n")
            r = c.recv(1000)
            refused = r == b"" or status_of(r) == 503
            c.close()
        except OSError:
            refused = True
        tap.ok(refused, "new connections are refused while draining")
        s.sendall(b"67890")
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = s.recv(4096)
            if not chunk:
                break
            resp += chunk
        s.close()
        tap.eq(status_of(resp), 404, "the in-flight request is answered")
        tap.eq(d.wait(15), 0, "exit 0 after draining")
        tap.ok("drained" in d.logs(), "log says drained")

    with Daemon(INSECURE + ["--shutdown-grace-s=0.5"]) as d:
        s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: 10\r\n\r\n12345")
        time.sleep(0.2)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(15)
        took = time.monotonic() - t0
        s.close()
        tap.eq(rc, 0, "a stalled request does not hold the exit (rc)")
        tap.ok(0.3 < took < 5, "exit after the grace period (%.2fs)" % took)
        tap.ok("grace period" in d.logs(), "log says the grace ran out")


def test_sighup():
    with Daemon(INSECURE) as d:
        os.makedirs(os.path.join(d.repository, "m", "1"))
        with open(os.path.join(d.repository, "m", "1", "model.onnx"),
                  "wb") as f:
            f.write(b"")
        os.makedirs(os.path.join(d.repository, "notamodel", "x"))
        d.signal(signal.SIGHUP)
        tap.ok(d.wait_log(r"SIGHUP: rescanning") and
               d.wait_log(r"model=m failed to load"),
               "SIGHUP rescans the repository (and finds the new model)",
               d.logs())
        st, _, body = d.get("/metrics")
        tap.ok(b"slimserve_reloads_total 1" in body, "reload is counted")
        st, _, body = d.get("/admin/status", admin=True)
        st, _, body = d.post("/v2/repository/index", b"", admin=True)
        tap.eq([e.get("name") for e in json_body(body) or []], ["m"],
               "the index shows the model folder found by the rescan")
        st, _, _ = d.get("/v2/health/live")
        tap.eq(st, 200, "serves after SIGHUP")
        tap.eq(d.stop(), 0, "clean exit")


def test_ipv6_and_port_in_use():
    with Daemon(INSECURE) as d:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([BINARY,
                            "--http-address=127.0.0.1",
                            "--http-port=%d" % port, "--admin-port=-1"],
                           capture_output=True, timeout=20)
        s.close()
        tap.eq(p.returncode, 1, "a port in use: exit 1")
        tap.ok(b"cannot listen" in p.stderr, "and says why", p.stderr)
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
        has_v6 = True
    except OSError:
        has_v6 = False
    if has_v6:
        d = Daemon(INSECURE)
        d.args = INSECURE + ["--http-address=::1"]
        with d:
            import http.client
            c = http.client.HTTPConnection("::1", d.http_port, timeout=5)
            c.request("GET", "/v2/health/live")
            tap.eq(c.getresponse().status, 200, "serves on IPv6 ::1")
            c.close()
    else:
        tap.ok(True, "# SKIP no IPv6 loopback here")


def test_bad_requests_flood():
    # A few thousand bad requests of several kinds; the daemon keeps
    # serving and exits cleanly (under ASan this also checks for leaks).
    import random
    rnd = random.Random(1234)
    kinds = [
        lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))),
        lambda: b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                b"Content-Length: %d\r\n\r\n" % rnd.randint(10**6, 10**9),
        lambda: b"GET /" + b"a/" * rnd.randint(1, 3000) + b" HTTP/1.1\r\n\r\n",
        lambda: b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\n"
                b"Content-Length: 20\r\n\r\n{\"inputs\": [",
        lambda: b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        lambda: b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
    ]
    with Daemon(INSECURE + ["--max-body-bytes=65536",
                            "--connection-timeout-s=2"]) as d:
        import threading
        t0 = time.monotonic()
        counts = []
        payloads = [rnd.choice(kinds)() for _ in range(2000)]

        def worker(items):
            n = 0
            for data in items:
                if time.monotonic() - t0 > 60:
                    break
                try:
                    s = socket.create_connection(("127.0.0.1", d.http_port),
                                                 timeout=2)
                    s.settimeout(0.05)
                    s.sendall(data)
                    try:
                        s.recv(256)
                    except OSError:
                        pass
                    s.close()
                except OSError:
                    pass
                n += 1
            counts.append(n)

        threads = [threading.Thread(target=worker, args=(payloads[i::8],))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(counts)
        tap.diag("sent %d bad requests in %.1fs" % (sent,
                                                     time.monotonic() - t0))
        st, _, _ = d.get("/v2/health/live")
        tap.eq(st, 200, "alive after %d bad requests" % sent)
        tap.eq(d.stop(), 0, "clean exit after the flood")


def main():
    for t in (test_endpoints, test_errors, test_connection_timeout,
              test_metrics_promtool, test_graceful_shutdown, test_sighup,
              test_ipv6_and_port_in_use, test_bad_requests_flood):
        tap.diag(t.__name__)
        try:
            t()
        except Exception as e:  # a crash of the test is a failure
            import traceback
            tap.ok(False, "%s raised %r" % (t.__name__, e),
                   traceback.format_exc())
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
