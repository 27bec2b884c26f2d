# SPDX-License-Identifier: Apache-2.0
"""TLS on both listeners (issue 10): HTTPS inference and admin calls with
one and two HTTP loops, plain HTTP to a TLS port, the minimum version,
certificate reload on SIGHUP (new connections get the new certificate,
open ones keep theirs, a request in flight finishes; a broken key keeps
the old certificate), start failures that name the file, and the admin
listener refusing a non-loopback address without TLS.

Certificates are made here with openssl: a test CA and two server
certificates (serials 0x1001 and 0x2002) for IP 127.0.0.1."""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import BINARY, Daemon, DaemonError  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

FIX = os.path.join(TOP_SRC, "tests", "fixtures", "mlp_op13")
MLP = os.path.join(FIX, "model.onnx")
SERIAL_A, SERIAL_B = "1001", "2002"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)


def make_certs(d):
    """ca.pem, and {a,b}.pem/.key signed by it, for IP:127.0.0.1."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
            "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=slimserve test CA", "-set_serial", "1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\n")
    for name, serial in (("a", SERIAL_A), ("b", SERIAL_B)):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                name + ".key", "-out", name + ".csr", "-subj",
                "/CN=slimserve test " + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-set_serial", "0x" + serial, "-days",
                "2", "-extfile", "ext.cnf", "-out", name + ".pem", cwd=d)
    return d


def install(src_dir, name, dst_dir):
    """Copies name.pem/.key to cert.pem/key.pem by rename, as a
    certificate renewal tool would."""
    for ext, dst in ((".pem", "cert.pem"), (".key", "key.pem")):
        tmp = os.path.join(dst_dir, dst + ".tmp")
        shutil.copy(os.path.join(src_dir, name + ext), tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, os.path.join(dst_dir, dst))


def client_ctx(ca, maximum=None, minimum=None):
    """Verifies the chain and the IP 127.0.0.1 in subjectAltName."""
    ctx = ssl.create_default_context(cafile=ca)
    if maximum is not None or minimum is not None:
        warnings.simplefilter("ignore", DeprecationWarning)
        # Let OpenSSL offer old versions at all: the server must refuse.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    return ctx


def https(port, ctx, timeout=10):
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                       context=ctx)


def serial_of(conn):
    return conn.sock.getpeercert()["serialNumber"].lstrip("0").lower()


def new_serial(port, ctx):
    """The serial a new connection sees, after a request on it."""
    c = https(port, ctx)
    try:
        c.request("GET", "/v2/health/live")
        r = c.getresponse()
        r.read()
        # Any HTTP answer will do (the admin listener has no health route).
        return serial_of(c)
    finally:
        c.close()


def repo_with_mlp(tmp):
    return repo.with_model(os.path.join(tempfile.mkdtemp(dir=tmp), "models"))


def infer_body():
    with np.load(os.path.join(FIX, "batch7.npz")) as z:
        x = z[z.files[0]]
    with open(os.path.join(FIX, "meta.json")) as f:
        labels = json.load(f)["batches"]["7"]["labels"]
    return kserve.json_request({"input": x}), labels


def tls_args(cdir, admin=True):
    a = ["--http-tls-cert-file=" + os.path.join(cdir, "cert.pem"),
         "--http-tls-key-file=" + os.path.join(cdir, "key.pem")]
    if admin:
        a += ["--admin-tls-cert-file=" + os.path.join(cdir, "cert.pem"),
              "--admin-tls-key-file=" + os.path.join(cdir, "key.pem")]
    return a


def handshake_error(port, ctx):
    """None when a TLS handshake and a request succeed, else the error."""
    try:
        st = new_serial(port, ctx)
        return None if st in (SERIAL_A, SERIAL_B) else st
    except (ssl.SSLError, OSError) as e:
        return e


def test_serve(certs, tmp, loops):
    cdir = tempfile.mkdtemp(dir=tmp)
    install(certs, "a", cdir)
    ca = os.path.join(certs, "ca.pem")
    body, labels = infer_body()
    with Daemon(["--admin-insecure", "--http-threads=%d" % loops] +
                tls_args(cdir), repository=repo_with_mlp(tmp)) as d:
        d.ssl_context = client_ctx(ca)
        st, hd, data = d.post("/v2/models/mlp/infer", body,
                              headers={"Content-Type": "application/json"})
        tap.eq(st, 200, "%d loop(s): HTTPS inference answers 200" % loops)
        if st == 200:
            _, outs = kserve.parse_response(data, hd)
            got = np.argmax(outs["logits"], axis=1).tolist()
            tap.eq(got, labels, "%d loop(s): the logits over HTTPS are "
                   "the model's" % loops)
        st, _, data = d.post("/v2/repository/index", admin=True)
        names = [m.get("name") for m in json.loads(data or b"[]")]
        tap.ok(st == 200 and "mlp" in names,
               "%d loop(s): the admin listener answers over HTTPS" % loops,
               (st, data[:200]))
        serials = {new_serial(d.http_port, d.ssl_context) for _ in range(8)}
        tap.eq(serials, {SERIAL_A}, "%d loop(s): every connection (every "
               "loop) presents the certificate" % loops)
        tap.eq(new_serial(d.admin_port, d.ssl_context), SERIAL_A,
               "%d loop(s): so does the admin listener" % loops)

        # Plain HTTP to the TLS port: no HTTP answer, the daemon serves on.
        for admin in (False, True):
            try:
                raw = d.raw(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n"
                            b"\r\n", admin=admin, timeout=5)
            except ConnectionResetError:
                raw = b"(reset)"
            tap.ok(b"HTTP/1.1 200" not in raw and b'"live"' not in raw,
                   "%d loop(s): plain HTTP to the %s TLS port gets no HTTP "
                   "answer" % (loops, "admin" if admin else "data"), raw)
        tap.eq(d.get("/v2/health/live")[0], 200,
               "%d loop(s): HTTPS still served after plain clients" % loops)

        # Without the CA the certificate is not trusted (the client
        # really verifies).
        e = handshake_error(d.http_port, ssl.create_default_context())
        tap.ok(isinstance(e, ssl.SSLCertVerificationError),
               "%d loop(s): a client without the test CA refuses the "
               "certificate" % loops, e)

        # Minimum version 1.2: a TLS 1.1 client is refused by the server
        # (a protocol alert or a close, not a client-side refusal), and
        # the same client allowed 1.2 gets through.
        e = handshake_error(d.http_port, client_ctx(
            ca, maximum=ssl.TLSVersion.TLSv1_1,
            minimum=ssl.TLSVersion.TLSv1))
        tap.diag("TLS 1.1 client: %r" % (e,))
        tap.ok(e is not None and "NO_PROTOCOLS_AVAILABLE" not in str(e),
               "%d loop(s): a TLS 1.1 client is refused by the server"
               % loops, e)
        e = handshake_error(d.http_port, client_ctx(
            ca, maximum=ssl.TLSVersion.TLSv1_2,
            minimum=ssl.TLSVersion.TLSv1))
        tap.eq(e, None, "%d loop(s): a TLS 1.2 client is served" % loops)
        c = https(d.http_port, d.ssl_context)
        c.request("GET", "/v2/health/live")
        c.getresponse().read()
        tap.eq(c.sock.version(), "TLSv1.3",
               "%d loop(s): a modern client gets TLS 1.3" % loops)
        c.close()
        tap.eq(d.stop(), 0, "%d loop(s): clean exit" % loops)


def test_min_13(certs, tmp):
    cdir = tempfile.mkdtemp(dir=tmp)
    install(certs, "a", cdir)
    ca = os.path.join(certs, "ca.pem")
    with Daemon(["--admin-insecure", "--tls-min-version=1.3"] +
                tls_args(cdir)) as d:
        e = handshake_error(d.http_port, client_ctx(
            ca, maximum=ssl.TLSVersion.TLSv1_2))
        tap.ok(e is not None, "min 1.3: a TLS 1.2 client is refused", e)
        tap.eq(handshake_error(d.http_port, client_ctx(ca)), None,
               "min 1.3: a TLS 1.3 client is served")
        tap.eq(handshake_error(d.admin_port, client_ctx(
            ca, maximum=ssl.TLSVersion.TLSv1_2)) is not None, True,
            "min 1.3: the admin listener refuses TLS 1.2 too")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_stalled_handshake(certs, tmp):
    """A client that sends its ClientHello and then nothing must not make
    a loop spin (libmicrohttpd 0.9.75 asks to be run again at once while
    a handshake waits for its client; http.c backs off)."""
    cdir = tempfile.mkdtemp(dir=tmp)
    install(certs, "a", cdir)
    ctx = client_ctx(os.path.join(certs, "ca.pem"))
    with Daemon(["--admin-insecure", "--http-threads=2"] + tls_args(cdir),
                wait_models=False) as d:
        pid = d.proc.pid
        time.sleep(0.5)
        c0 = cpu_seconds(pid)
        time.sleep(2)
        idle = cpu_seconds(pid) - c0
        socks = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", d.http_port),
                                         timeout=5)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            s.sendall(out.read())
            s.recv(65536)       # the server's flight; never answered
            socks.append(s)
        c0 = cpu_seconds(pid)
        time.sleep(2)
        stalled = cpu_seconds(pid) - c0
        tap.ok(stalled < idle + 0.15, "4 handshakes stalled by their "
               "clients cost no loop spinning (%.2f s CPU in 2 s, idle "
               "%.2f s)" % (stalled, idle))
        for s in socks:
            s.close()
        tap.eq(new_serial(d.http_port, ctx), SERIAL_A,
               "and new clients are served")


def send_partial(port, ctx, path, body, keep):
    """A TLS socket that sent the headers and body[:keep]."""
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port),
                                                 timeout=10),
                        server_hostname="127.0.0.1")
    s.sendall(("POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: "
               "application/json\r\nContent-Length: %d\r\n\r\n"
               % (path, len(body))).encode() + body[:keep])
    return s


def read_status(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def reload_and_wait(d, n, what):
    """SIGHUP; waits until n reload results (ok or failed) are logged."""
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    rx = "TLS certificate .* reloaded|TLS reload failed"
    import re
    while time.monotonic() < deadline:
        if len(re.findall(rx, d.logs())) >= n:
            return True
        time.sleep(0.02)
    tap.diag("reload %s: only %d of %d results logged"
             % (what, len(re.findall(rx, d.logs())), n))
    return False


def test_reload(certs, tmp, loops):
    cdir = tempfile.mkdtemp(dir=tmp)
    install(certs, "a", cdir)
    ca = os.path.join(certs, "ca.pem")
    body, _ = infer_body()
    tag = "%d loop(s)" % loops
    with Daemon(["--admin-insecure", "--http-threads=%d" % loops] +
                tls_args(cdir), repository=repo_with_mlp(tmp)) as d:
        ctx = client_ctx(ca)
        d.ssl_context = ctx
        # Opened before the reload: a kept-alive connection, and one with
        # a request half sent.
        keep = https(d.http_port, ctx)
        keep.request("GET", "/v2/health/live")
        tap.eq(keep.getresponse().read(), b'{"live":true}',
               tag + ": kept-alive connection served")
        sock_before = keep.sock
        half = send_partial(d.http_port, ctx, "/v2/models/mlp/infer", body,
                            len(body) // 2)

        install(certs, "b", cdir)
        tap.ok(reload_and_wait(d, 2, "to b"), tag + ": SIGHUP reloads both "
               "listeners' certificates")
        serials = {new_serial(d.http_port, ctx) for _ in range(8)}
        tap.eq(serials, {SERIAL_B}, tag + ": new connections get the new "
               "certificate")
        tap.eq(new_serial(d.admin_port, ctx), SERIAL_B,
               tag + ": the admin listener too")
        keep.request("GET", "/v2/health/live")
        r = keep.getresponse()
        tap.ok(r.status == 200 and keep.sock is sock_before and
               serial_of(keep) == SERIAL_A,
               tag + ": the connection opened before keeps working, with "
               "the old certificate", (r.status, serial_of(keep)))
        r.read()
        keep.close()
        half.sendall(body[len(body) // 2:])
        tap.eq(read_status(half), b"HTTP/1.1 200 OK",
               tag + ": a request in flight across the reload completes")
        half.close()
        tap.eq(d.metric("slimserve_tls_reloads_total", listener="http",
                        result="ok"), 1.0, tag + ": reload counted")

        # A broken key: the old certificate stays, the error is logged
        # and shown in the metrics.
        with open(os.path.join(cdir, "key.pem"), "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
                    "-----END PRIVATE KEY-----\n")
        tap.ok(reload_and_wait(d, 4, "broken key"),
               tag + ": the broken reload finishes")
        tap.ok(d.wait_log(r"http listener: TLS reload failed, still serving "
                          r"the certificate with serial 2002: key file "
                          + r".*key\.pem", 5),
               tag + ": the failure is logged, naming the key file")
        serials = {new_serial(d.http_port, ctx) for _ in range(4)}
        tap.eq(serials, {SERIAL_B}, tag + ": the previous certificate is "
               "still served")
        tap.eq(d.metric("slimserve_tls_reloads_total", listener="http",
                        result="error"), 1.0, tag + ": failure counted")
        tap.eq(d.metric("slimserve_tls_last_reload_ok", listener="admin"),
               0.0, tag + ": last_reload_ok is 0")

        # A key of another certificate is refused as well.
        shutil.copy(os.path.join(certs, "a.key"),
                    os.path.join(cdir, "key.pem"))
        reload_and_wait(d, 6, "mismatched key")
        tap.ok(d.wait_log(r"does not belong to the certificate", 5),
               tag + ": a key that does not match is refused")
        tap.eq(new_serial(d.http_port, ctx), SERIAL_B,
               tag + ": and the previous certificate stays")

        # Fixed again: served again, and the metric recovers.
        install(certs, "a", cdir)
        reload_and_wait(d, 8, "back to a")
        tap.eq(new_serial(d.http_port, ctx), SERIAL_A,
               tag + ": a good pair after bad ones is served")
        tap.eq(d.metric("slimserve_tls_last_reload_ok", listener="http"),
               1.0, tag + ": last_reload_ok back to 1")
        tap.eq(d.stop(), 0, tag + ": clean exit after reloads")


def run(args, timeout=30):
    p = subprocess.run([BINARY, "--http-address=127.0.0.1", "--http-port=0",
                        "--admin-port=0", "--model-repository=/nonexistent"]
                       + args, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def test_start_failures(certs, tmp):
    cdir = tempfile.mkdtemp(dir=tmp)
    install(certs, "a", cdir)
    missing = os.path.join(cdir, "missing.key")
    rc, err = run(["--admin-insecure",
                   "--http-tls-cert-file=" + os.path.join(cdir, "cert.pem"),
                   "--http-tls-key-file=" + missing])
    tap.ok(rc != 0 and missing in err and "No such file" in err,
           "a missing key file fails the start, naming the file", (rc, err))
    bad = os.path.join(cdir, "bad.pem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    rc, err = run(["--admin-insecure",
                   "--admin-tls-cert-file=" + bad,
                   "--admin-tls-key-file=" + os.path.join(cdir, "key.pem")])
    tap.ok(rc != 0 and bad in err and "admin listener" in err,
           "a bad admin certificate fails the start, naming the file",
           (rc, err))
    rc, err = run(["--admin-insecure", "--check-config",
                   "--http-tls-cert-file=" + os.path.join(cdir, "cert.pem"),
                   "--http-tls-key-file=" + os.path.join(certs, "b.key")])
    tap.ok(rc == 2 and "does not belong" in err,
           "--check-config finds a key of another certificate", (rc, err))
    rc, err = run(["--admin-insecure",
                   "--http-tls-cert-file=" + os.path.join(cdir, "cert.pem")])
    tap.ok(rc == 2 and "http_tls_key_file" in err,
           "a certificate without a key is a configuration error", (rc, err))
    rc, err = run(["--admin-insecure", "--tls-min-version=1.1"])
    tap.ok(rc == 2 and "tls_min_version" in err,
           "tls_min_version 1.1 is refused", (rc, err))

    # The admin listener beyond loopback.
    rc, err = run(["--admin-insecure", "--admin-address=0.0.0.0"])
    tap.ok(rc == 2 and "admin_allow_plaintext" in err,
           "admin on 0.0.0.0 without TLS is refused at start", (rc, err))
    rc, err = run(["--admin-insecure", "--admin-address=::"])
    tap.ok(rc == 2 and "admin_allow_plaintext" in err,
           "admin on :: without TLS is refused too", (rc, err))
    with Daemon(["--admin-insecure", "--admin-address=127.0.0.2"],
                wait_models=False) as d:
        tap.eq(d.get("/v2/health/live")[0], 200,
               "admin on another loopback address needs no TLS")
    with Daemon(["--admin-insecure", "--admin-address=0.0.0.0",
                 "--admin-allow-plaintext"], wait_models=False) as d:
        tap.ok(d.wait_log("serves plain HTTP \\(admin_allow_plaintext\\)",
                          5), "admin_allow_plaintext: starts, with a warning")
        tap.eq(d.post("/v2/repository/index", admin=True)[0], 200,
               "admin_allow_plaintext: plain admin answers")
    with Daemon(["--admin-insecure", "--admin-address=0.0.0.0"] +
                ["--admin-tls-cert-file=" + os.path.join(cdir, "cert.pem"),
                 "--admin-tls-key-file=" + os.path.join(cdir, "key.pem")],
                wait_models=False) as d:
        d.ssl_context = client_ctx(os.path.join(certs, "ca.pem"))
        tap.eq(d.post("/v2/repository/index", admin=True)[0], 200,
               "admin on 0.0.0.0 with TLS starts and answers over HTTPS")


def main():
    if shutil.which("openssl") is None:
        tap.skip_all("openssl not installed")
    tmp = tempfile.mkdtemp(prefix="ss-tls-")
    try:
        certs = make_certs(tempfile.mkdtemp(dir=tmp))
        for loops in (1, 2):
            test_serve(certs, tmp, loops)
        test_min_13(certs, tmp)
        test_stalled_handshake(certs, tmp)
        for loops in (1, 2):
            test_reload(certs, tmp, loops)
        test_start_failures(certs, tmp)
    except DaemonError as e:
        tap.ok(False, "daemon error", e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
