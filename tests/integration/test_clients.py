#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Request bodies as real Python clients send them, on the real daemon on
127.0.0.1.

Content-Encoding: tritonclient's request_compression_algorithm "gzip"
sends gzip.compress of the whole body, "deflate" zlib.compress, with
Inference-Header-Content-Length counting the uncompressed JSON header.
They are served like the plain body (the same logits, bit for bit, and
PyTorch's within 1e-4), with a fixed length or chunked (requests with a
generator), and concatenated gzip members too.  A coding the server
cannot decode is 415 with Accept-Encoding; a broken or truncated stream
is 400; a body that decodes past max_body_bytes, or to more than 64 times
its size past its first MiB (a "zip bomb": the loop would parse it), is
413 at once, and its bytes are given back to the buffered-bytes budget.

Inference-Header-Content-Length: a value that is not a length (empty,
signed, past 2^63, junk after the digits) is a 400 that quotes it, like
one that does not fit the body.

Answers: with Accept-Encoding gzip or deflate (tritonclient's
response_compression_algorithm), q-values and "*" honoured, an answer of
1 KiB or more comes coded (Content-Encoding, Vary), and decodes to the
plain answer byte for byte; binary outputs too.

Triton's extensions that would change what the answer means if ignored
(classification, shared memory) are refused with a 400 naming them.

Framing: a Transfer-Encoding other than chunked alone is answered at once
(501 when chunked is last, 400 when it is not), and so are the headers a
proxy in front could read differently (two Transfer-Encoding headers,
Content-Length beside Transfer-Encoding, two different Content-Lengths):
400 and the connection closed, so that the bytes after the body are never
served as a request of their own.

Together: for 4 s two clients cycle through these bodies (gzip bombs,
broken streams, bad framing, connections reset mid-body) while a normal
client, from 127.0.0.2 when it can be bound, sends a JSON infer every
20 ms: each of its requests is answered 200, within 2 s."""

import gzip
import http.client
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
from paths import FIX  # noqa: E402
import repo  # noqa: E402

MAX_BODY = 4000000
TOL = 1e-4


def post(d, body, headers=None, chunked=False):
    """(status, headers, body) of one infer on a new connection; chunked
    sends the body in 50-byte chunks as requests does for a generator."""
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    try:
        hd = dict(headers or {})
        if chunked:
            hd["Transfer-Encoding"] = "chunked"
            c.request("POST", "/v2/models/mlp/infer",
                      (body[i:i + 50] for i in range(0, len(body), 50)),
                      hd, encode_chunked=True)
        else:
            c.request("POST", "/v2/models/mlp/infer", body, hd)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_content_encoding(d):
    with np.load(os.path.join(FIX, "mlp_op13", "batch7.npz")) as z:
        x = z["input"]
    with np.load(os.path.join(FIX, "mlp_op13", "expected7.npz")) as z:
        want = z["logits"]
    plain = {"json": (kserve.json_request({"input": x}), {})}
    plain["binary"] = kserve.binary_request({"input": x})
    ref = {}
    for kind, (body, hd) in plain.items():
        st, h, data = post(d, body, hd)
        tap.eq(st, 200, "plain %s body served" % kind)
        ref[kind] = kserve.parse_response(data, h)[1]["logits"]
        tap.ok(np.allclose(ref[kind], want, atol=TOL),
               "plain %s: PyTorch's logits within %g" % (kind, TOL))
    codings = [("gzip", "gzip", gzip.compress),
               ("x-gzip", "X-Gzip", gzip.compress),
               ("deflate", "deflate", zlib.compress),
               ("two gzip members", "gzip",
                lambda b: gzip.compress(b[:100]) + gzip.compress(b[100:]))]
    for name, enc, comp in codings:
        for kind, (body, hd) in plain.items():
            for chunked in (False, True):
                st, h, data = post(d, comp(body),
                                   dict(hd, **{"Content-Encoding": enc}),
                                   chunked)
                got = (kserve.parse_response(data, h)[1]["logits"]
                       if st == 200 else None)
                tap.ok(st == 200 and np.array_equal(got, ref[kind]),
                       "%s %s body%s: the plain body's logits"
                       % (name, kind, ", chunked" if chunked else ""),
                       data[:200])

    body = plain["json"][0]
    for enc in ("br", "gzip, gzip", "compress"):
        st, h, data = post(d, gzip.compress(body),
                           {"Content-Encoding": enc})
        err = (json_body(data) or {}).get("error", "")
        tap.ok(st == 415 and enc in err,
               "Content-Encoding %r: 415 naming it: %s" % (enc, err), data)
        tap.eq(h.get("Accept-Encoding"), "gzip, deflate",
               "the 415 says which codings are accepted")
    bad = [("truncated", gzip.compress(body)[:-12], "ends inside"),
           ("trailing junk", gzip.compress(body) + b"xx", "not valid"),
           ("plain bytes", body, "not valid"),
           ("raw deflate without the zlib header",
            zlib.compress(body)[2:-4], "not valid")]
    for name, data, needle in bad:
        st, _, resp = post(d, data, {"Content-Encoding": "gzip"})
        err = (json_body(resp) or {}).get("error", "")
        tap.ok(st == 400 and needle in err, "%s: 400: %s" % (name, err),
               resp)
    for n in (3 << 20, 100 * MAX_BODY):
        bomb = gzip.compress(b" " * n)
        t0 = time.monotonic()
        st, _, resp = post(d, bomb, {"Content-Encoding": "gzip"})
        err = (json_body(resp) or {}).get("error", "")
        tap.ok(st == 413 and "more than 64 times" in err,
               "%d-byte gzip body of %d bytes: 413 in %.0f ms: %s"
               % (len(bomb), n, (time.monotonic() - t0) * 1e3, err), resp)
    # Random digits compress ~2x: within the ratio, past the limit.
    digits = np.random.default_rng(0).integers(0, 10, MAX_BODY + 100000)
    big = gzip.compress((digits + ord("0")).astype(np.uint8).tobytes())
    st, _, resp = post(d, big, {"Content-Encoding": "gzip"})
    err = (json_body(resp) or {}).get("error", "")
    tap.ok(st == 413 and "once decoded" in err,
           "%d-byte gzip body of %d bytes: 413: %s"
           % (len(big), MAX_BODY + 100000, err), resp)
    deadline = time.monotonic() + 5
    while (d.metric("slimserve_http_buffered_bytes") != 0 and
           time.monotonic() < deadline):
        time.sleep(0.05)
    tap.eq(d.metric("slimserve_http_buffered_bytes"), 0.0,
           "the decoded bytes are given back to the budget")
    st, _, _ = post(d, *plain["json"])
    tap.eq(st, 200, "served after the bad bodies")


def test_header_length(d):
    with np.load(os.path.join(FIX, "mlp_op13", "batch1.npz")) as z:
        body, hd = kserve.binary_request({"input": z["input"]})
    n = int(hd["Inference-Header-Content-Length"])
    st, _, _ = post(d, body, hd)
    tap.eq(st, 200, "the binary extension as tritonclient sends it")
    # HTTP's optional whitespace around a value (RFC 9110 5.5): blanks
    # after the digits were refused before.
    for good in ("%d " % n, "%d\t" % n, " %d \t " % n, "\t%d" % n):
        st, _, _ = post(d, body, dict(
            hd, **{"Inference-Header-Content-Length": good}))
        tap.eq(st, 200, "Inference-Header-Content-Length %r: blanks around "
               "the digits are allowed" % good)
    for bad in ("", "+%d" % n, "-1", " ", "%d %d" % (n // 10, n % 10),
                "%d x" % n, "%d\x0b" % n,
                "18446744073709551616", "%dx" % n, "99999"):
        st, _, resp = post(d, body, dict(
            hd, **{"Inference-Header-Content-Length": bad}))
        err = (json_body(resp) or {}).get("error", "")
        tap.ok(st == 400 and "Inference-Header-Content-Length" in err and
               bad in err,
               "Inference-Header-Content-Length %r: 400 quoting it: %s"
               % (bad, err), resp)


def test_extensions(d):
    with np.load(os.path.join(FIX, "mlp_op13", "batch1.npz")) as z:
        x = z["input"]
    base = json.loads(kserve.json_request({"input": x}))
    cases = [
        ("classification", "classification",
         {"outputs": [{"name": "logits",
                       "parameters": {"classification": 3}}]}),
        ("an output in shared memory", "shared_memory_region",
         {"outputs": [{"name": "logits", "parameters": {
             "shared_memory_region": "out", "shared_memory_byte_size": 40}}]}),
    ]
    shm_in = json.loads(json.dumps(base))
    shm_in["inputs"][0]["parameters"] = {"shared_memory_region": "in",
                                         "shared_memory_byte_size": 256}
    for name, needle, extra in cases:
        body = dict(base, **extra)
        st, _, resp = post(d, json.dumps(body).encode())
        err = (json_body(resp) or {}).get("error", "")
        tap.ok(st == 400 and needle in err, "%s: 400 naming it: %s"
               % (name, err), resp[:200])
    for name, body in (("an input in shared memory, with data", shm_in),
                       ("an input in shared memory", dict(shm_in, inputs=[
                           {k: v for k, v in shm_in["inputs"][0].items()
                            if k != "data"}]))):
        st, _, resp = post(d, json.dumps(body).encode())
        err = (json_body(resp) or {}).get("error", "")
        tap.ok(st == 400 and "shared_memory_region" in err,
               "%s: 400 naming it: %s" % (name, err), resp[:200])


def raw_exchange(d, data, wait=5.0):
    """Sends data on a new connection; (the statuses answered, whether the
    server closed the connection) within wait seconds."""
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=wait)
    got, closed = b"", False
    deadline = time.monotonic() + wait
    try:
        s.sendall(data)
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)], closed


def test_framing(d):
    post_ = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: a\r\n"
    chunks = b"2\r\n{}\r\n0\r\n\r\n"
    # A second request after the body: it must never be answered.
    then = b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n"
    cases = [
        ("Transfer-Encoding: gzip, chunked", 501,
         b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunks),
        ("Transfer-Encoding: identity", 400,
         b"Transfer-Encoding: identity\r\n\r\n{}"),
        ("Transfer-Encoding: chunked, gzip", 400,
         b"Transfer-Encoding: chunked, gzip\r\n\r\n" + chunks),
        ("two Transfer-Encoding headers", 400,
         b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
         + chunks),
        ("Content-Length beside chunked", 400,
         b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
         chunks),
        ("two different Content-Lengths", 400,
         b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}" +
         b"x" * 28),
    ]
    for name, want, rest in cases:
        t0 = time.monotonic()
        codes, closed = raw_exchange(d, post_ + rest + then)
        tap.ok(codes == [want] and closed,
               "%s: %d at once (%.1f s), connection closed, the request "
               "after it not served" % (name, want, time.monotonic() - t0),
               (codes, closed))
    codes, closed = raw_exchange(
        d, post_ + b"Transfer-Encoding: Chunked\r\n\r\n" + chunks + then,
        wait=2.0)
    tap.eq(codes, [400, 200], "chunked alone (any case) frames the body "
           "and keeps the connection (400: {} has no inputs)")


def test_flood(d):
    with np.load(os.path.join(FIX, "mlp_op13", "batch1.npz")) as z:
        good = kserve.json_request({"input": z["input"]})
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: a\r\n"
    bomb = gzip.compress(b" " * (8 << 20))
    hostile = [
        head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        % len(bomb) + bomb,
        head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        % (len(good) // 2) + gzip.compress(good)[:len(good) // 2],
        head + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nab",
        head + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + head + b"Content-Length: 2\r\n\r\n{}",
        head + b"Content-Length: 100000\r\n\r\n" + good,   # then reset
    ]
    stop = threading.Event()
    sent = [0, 0]

    def attacker(k):
        i = k
        while not stop.is_set():
            data = hostile[i % len(hostile)]
            i += 1
            try:
                s = socket.create_connection(("127.0.0.1", d.http_port),
                                             timeout=2)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sendall(data)
                s.settimeout(0.2)
                try:
                    s.recv(4096)
                except OSError:
                    pass
                s.close()       # SO_LINGER 0: a reset
                sent[k] += 1
            except OSError:
                pass

    src = "127.0.0.2"
    try:
        socket.socket().bind((src, 0))
    except OSError:
        src = "127.0.0.1"
    threads = [threading.Thread(target=attacker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    codes, lat = [], []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 4.0:
            t = time.monotonic()
            c = http.client.HTTPConnection("127.0.0.1", d.http_port,
                                           timeout=10,
                                           source_address=(src, 0))
            try:
                c.request("POST", "/v2/models/mlp/infer", good)
                r = c.getresponse()
                r.read()
                codes.append(r.status)
            except (OSError, http.client.HTTPException) as e:
                codes.append(repr(e))
            finally:
                c.close()
            lat.append(time.monotonic() - t)
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    lat.sort()
    tap.diag("flood: %d hostile requests; the normal client's p50 %.1f ms, "
             "max %.1f ms" % (sum(sent), lat[len(lat) // 2] * 1e3,
                              lat[-1] * 1e3))
    tap.ok(sum(sent) > 20, "the hostile clients ran (%d requests)"
           % sum(sent))
    tap.ok(codes and all(c == 200 for c in codes),
           "the normal client got 200 for each of its %d requests"
           % len(codes), [c for c in codes if c != 200][:5])
    tap.ok(lat[-1] < 2.0, "each within 2 s (max %.0f ms)" % (lat[-1] * 1e3))


def decode(h, data):
    """The body as tritonclient reads it: gzip.decompress or
    zlib.decompress by Content-Encoding."""
    enc = h.get("Content-Encoding")
    if enc == "gzip":
        return gzip.decompress(data)
    if enc == "deflate":
        return zlib.decompress(data)
    return data


def test_response_coding(d):
    with np.load(os.path.join(FIX, "mlp_op13", "batch7.npz")) as z:
        x = np.concatenate([z["input"]] * 4)[:24]
    body = kserve.json_request({"input": x})
    st, h, plain = post(d, body)
    ref = kserve.parse_response(plain, h)[1]["logits"]
    tap.ok(st == 200 and "Content-Encoding" not in h and len(plain) > 1024,
           "no Accept-Encoding: a %d-byte answer as it is" % len(plain))
    # (Accept-Encoding, the coding of the answer)
    cases = [("gzip", "gzip"), ("deflate", "deflate"), ("GZIP", "gzip"),
             ("x-gzip", "gzip"), ("gzip, deflate", "gzip"),
             ("deflate;q=0.9, gzip;q=0.8", "deflate"),
             ("deflate ; q=0.5 , gzip ; Q=0.8", "gzip"),
             ("gzip;q=0, deflate", "deflate"), ("gzip;q=0", None),
             ("gzip;q=0.000", None), ("*", "gzip"), ("*;q=0", None),
             ("deflate;q=0.2, *;q=0.5", "gzip"), ("identity", None),
             ("br", None), ("gzip;q=abc", None), ("gzip;q=2", None),
             ("gzipx", None), ("", None)]
    for accept, want in cases:
        st, h, data = post(d, body, {"Accept-Encoding": accept})
        got = decode(h, data)
        tap.ok(st == 200 and h.get("Content-Encoding") == want
               and got == plain
               and int(h.get("Content-Length", -1)) == len(data)
               and (want is None or len(data) < len(plain) // 2),
               "Accept-Encoding %r: answered %s (%d bytes), decoding to the "
               "plain answer" % (accept, want or "as it is", len(data)),
               "%s %s" % (st, h))
    # tritonclient with response_compression_algorithm and binary outputs:
    # Inference-Header-Content-Length counts the decoded JSON header.
    bbody, bhd = kserve.binary_request({"input": x})
    for enc in ("gzip", "deflate"):
        st, h, data = post(d, bbody, dict(bhd, **{"Accept-Encoding": enc}))
        got = (kserve.parse_response(decode(h, data), h)[1]["logits"]
               if st == 200 else None)
        tap.ok(st == 200 and h.get("Content-Encoding") == enc and
               h.get("Vary") == "Accept-Encoding" and
               np.array_equal(got, ref),
               "binary outputs, Accept-Encoding %s: the same logits" % enc,
               "%s %s" % (st, h))
    # gzip-coded request, gzip-coded answer (both of tritonclient's
    # options at once)
    st, h, data = post(d, gzip.compress(body), {"Content-Encoding": "gzip",
                                               "Accept-Encoding": "gzip"})
    tap.ok(st == 200 and decode(h, data) == plain,
           "a gzip request with a gzip answer", "%s %s" % (st, h))
    with np.load(os.path.join(FIX, "mlp_op13", "batch1.npz")) as z:
        small = kserve.json_request({"input": z["input"]})
    st, h, data = post(d, small, {"Accept-Encoding": "gzip"})
    tap.ok(st == 200 and "Content-Encoding" not in h and len(data) < 1024,
           "a %d-byte answer goes as it is" % len(data), h)
    # requests decodes by itself (urllib3).
    import requests
    r = requests.post("http://127.0.0.1:%d/v2/models/mlp/infer"
                      % d.http_port, data=body,
                      headers={"Accept-Encoding": "gzip, deflate"})
    tap.ok(r.status_code == 200 and
           r.headers.get("Content-Encoding") == "gzip" and
           r.content == plain, "requests reads the gzip answer")
    # The loop's own answers: /metrics as text, decoded.
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    c.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    resp = c.getresponse()
    h, data = dict(resp.getheaders()), resp.read()
    c.close()
    text = decode(h, data)
    tap.ok(resp.status == 200 and b"slimserve_model_requests_total" in text,
           "/metrics with Accept-Encoding gzip (%s, %d -> %d bytes)"
           % (h.get("Content-Encoding", "as it is"), len(text), len(data)))


def test_coding_cap(root):
    """--max-coded-response-bytes: an executor codes an answer only up to
    it; a larger one goes as it is, without Content-Encoding or Vary."""
    with np.load(os.path.join(FIX, "mlp_op13", "batch7.npz")) as z:
        x = np.concatenate([z["input"]] * 4)[:24]
    big, small = (kserve.json_request({"input": x[:n]}) for n in (24, 12))
    with Daemon(["--admin-insecure"], repository=root) as d:
        st, h, plain = post(d, big)
        cap = len(plain) - 1
        tap.eq(d.stop(), 0, "clean exit")
    with Daemon(["--admin-insecure", "--max-coded-response-bytes=%d" % cap],
                repository=root) as d:
        for enc in ("gzip", "deflate"):
            st, h, data = post(d, big, {"Accept-Encoding": enc})
            tap.ok(st == 200 and "Content-Encoding" not in h
                   and "Vary" not in h and data == plain,
                   "cap %d, Accept-Encoding %s: the %d-byte answer goes as "
                   "it is" % (cap, enc, len(plain)), "%s %s" % (st, h))
            st, h, data = post(d, small, {"Accept-Encoding": enc})
            tap.ok(st == 200 and h.get("Content-Encoding") == enc
                   and len(decode(h, data)) > 1024,
                   "the 12-row answer (%d bytes) under it is coded %s"
                   % (len(decode(h, data)), enc), "%s %s" % (st, h))
        tap.eq(d.stop(), 0, "clean exit")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = repo.with_model(tmp)
        # The body deadline is far past the framing cases' 5 s wait.
        with Daemon(["--admin-insecure", "--max-body-bytes=%d" % MAX_BODY,
                     "--body-timeout-s=60"], repository=root) as d:
            try:
                test_content_encoding(d)
                test_framing(d)
                test_header_length(d)
                test_extensions(d)
                test_response_coding(d)
                test_flood(d)
            finally:
                tap.eq(d.stop(), 0, "clean exit")
        test_coding_cap(root)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
