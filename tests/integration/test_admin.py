# SPDX-License-Identifier: Apache-2.0
"""The admin listener, its token, the config and flags, sd_notify."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("top_srcdir", "."), "tests",
                                "lib"))
import tap  # noqa: E402
from daemon import BINARY, Daemon, DaemonError, json_body  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


def token_file(tmp, mode=0o600, text=TOKEN + "\n"):
    path = os.path.join(tmp, "token")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def run(args, timeout=20):
    return subprocess.run([BINARY] + args, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_auth():
    with tempfile.TemporaryDirectory() as tmp:
        tf = token_file(tmp)
        with Daemon(["--admin-token-file=" + tf]) as d:
            st, hd, body = d.get("/admin/status", admin=True)
            tap.eq(st, 401, "no token: 401")
            tap.ok(hd.get("WWW-Authenticate", "").startswith("Bearer"),
                   "401 carries a Bearer challenge", hd)
            tap.ok("error" in (json_body(body) or {}), "401 body has error")
            st, _, _ = d.get("/admin/status", admin=True,
                             headers={"Authorization": "Bearer wrong"})
            tap.eq(st, 401, "wrong token: 401")
            st, _, _ = d.get("/admin/status", admin=True,
                             headers={"Authorization": "Bearer " + TOKEN +
                                      "x"})
            tap.eq(st, 401, "token with a suffix: 401")
            st, _, _ = d.get("/admin/status", admin=True,
                             headers={"Authorization": "Bearer " + TOKEN[:-1]})
            tap.eq(st, 401, "token prefix: 401")
            st, _, _ = d.get("/admin/status", admin=True,
                             headers={"Authorization": "Basic " + TOKEN})
            tap.eq(st, 401, "another scheme: 401")
            st, _, body = d.get("/admin/status", admin=True,
                                headers={"Authorization": "Bearer " + TOKEN})
            tap.eq(st, 200, "right token: 200")
            js = json_body(body) or {}
            tap.eq(js.get("ready"), True, "status says ready")
            tap.eq(js.get("ports", {}).get("http"), d.http_port,
                   "status gives the http port")
            tap.eq(js.get("auth"), True, "status says auth is on")
            st, _, _ = d.get("/admin/nope", admin=True,
                             headers={"Authorization": "Bearer " + TOKEN})
            tap.eq(st, 404, "unknown admin path with a token: 404")
            st, _, _ = d.get("/admin/nope", admin=True)
            tap.eq(st, 401, "unknown admin path without a token: 401")
            st, _, _ = d.get("/admin/status")
            tap.eq(st, 404, "admin routes are not on the data plane")
            tap.eq(d.stop(), 0, "clean exit")

        # Permissions and presence of the token.
        bad = token_file(tmp, 0o644)
        p = run(["--http-port=0", "--admin-port=0",
                 "--admin-token-file=" + bad])
        tap.eq(p.returncode, 1, "world-readable token file: refuse to start")
        tap.ok(b"accessible by others" in p.stderr, "and say why", p.stderr)
        p = run(["--http-port=0", "--admin-port=0",
                 "--admin-token-file=" + os.path.join(tmp, "missing")])
        tap.eq(p.returncode, 1, "missing token file: refuse to start")
        empty = token_file(tmp, 0o600, "\n")
        p = run(["--http-port=0", "--admin-port=0",
                 "--admin-token-file=" + empty])
        tap.eq(p.returncode, 1, "empty token: refuse to start")
        p = run(["--http-port=0", "--admin-port=0"])
        tap.eq(p.returncode, 1, "no token and no --admin-insecure: refuse")
        tap.ok(b"--admin-insecure" in p.stderr, "and name the way out",
               p.stderr)
        with Daemon(["--admin-insecure"]) as d:
            st, _, _ = d.get("/admin/status", admin=True)
            tap.eq(st, 200, "--admin-insecure serves without a token")
        with Daemon(["--admin-port=-1"]) as d:
            tap.eq(d.admin_port, -1, "--admin-port=-1 disables the listener")
            st, _, _ = d.get("/v2/health/live")
            tap.eq(st, 200, "data plane serves without the admin listener")


def test_config():
    with tempfile.TemporaryDirectory() as tmp:
        def conf(obj):
            path = os.path.join(tmp, "c.json")
            with open(path, "w") as f:
                f.write(obj if isinstance(obj, str) else json.dumps(obj))
            return path

        p = run(["--help"])
        tap.ok(p.returncode == 0 and b"--http-port" in p.stdout,
               "--help lists the flags")
        p = run(["--version"])
        tap.ok(p.returncode == 0 and p.stdout.startswith(b"slimserve "),
               "--version", p.stdout)
        good = conf({"http_port": 0, "admin_port": -1, "log_level": "debug",
                     "max_body_bytes": 1000, "shutdown_grace_s": 1.5})
        p = run(["--config=" + good, "--check-config"])
        tap.ok(p.returncode == 0 and b"configuration OK" in p.stdout,
               "--check-config accepts a good file", p.stderr)
        cases = [
            ({"http_prot": 1}, b"http_prot", "unknown key"),
            ({"http_port": "80"}, b"http_port", "string for an integer"),
            ({"http_port": 70000}, b"http_port", "port out of range"),
            ({"log_level": "loud"}, b"log_level", "bad log level"),
            ({"admin_insecure": 1}, b"admin_insecure", "int for a bool"),
            ({"max_body_bytes": 0}, b"max_body_bytes", "zero body limit"),
            ("{\"http_port\": 1,", b"c.json", "malformed JSON"),
            ("[1, 2]", b"object", "not an object"),
            ({"http_port": 1, "http_port ": 2}, b"http_port ", "odd key"),
        ]
        for obj, needle, what in cases:
            p = run(["--config=" + conf(obj), "--check-config"])
            tap.ok(p.returncode == 2 and needle in p.stderr,
                   "config refused: " + what, p.stderr)
        flags = [
            (["--http-port=abc"], b"http-port"),
            (["--threads=-1"], b"threads"),
            (["--no-such-flag"], b"no-such-flag"),
            (["--http-port"], b"needs a value"),
            (["stray"], b"stray"),
            (["--config=" + os.path.join(tmp, "none.json")], b"none.json"),
        ]
        for args, needle in flags:
            p = run(args + ["--check-config"])
            tap.ok(p.returncode == 2 and needle in p.stderr,
                   "flags refused: %s" % " ".join(args), p.stderr)
        # Flags override the file.
        path = conf({"http_port": 1, "admin_port": -1})
        with Daemon(["--config=" + path, "--admin-insecure"]) as d:
            tap.ok(d.http_port > 1, "--http-port=0 overrides the file's port")


def test_notify():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)

        def recv():
            try:
                return sock.recv(4096).decode()
            except socket.timeout:
                return ""

        d = Daemon(["--admin-insecure"], env={"NOTIFY_SOCKET": path})
        with d:
            m = recv()
            tap.ok("READY=1" in m, "READY=1 once listening", m)
            tap.ok("MAINPID=%d" % d.proc.pid in m or "READY=1" in m,
                   "ready message", m)
            d.signal(signal.SIGHUP)
            m = recv()
            tap.ok("RELOADING=1" in m, "RELOADING=1 on SIGHUP", m)
            m = recv()
            tap.ok("READY=1" in m, "READY=1 after the reload", m)
            d.signal(signal.SIGTERM)
            m = recv()
            tap.ok("STOPPING=1" in m, "STOPPING=1 on shutdown", m)
            tap.eq(d.wait(15), 0, "clean exit")
        sock.close()


def main():
    for t in (test_auth, test_config, test_notify):
        tap.diag(t.__name__)
        try:
            t()
        except Exception as e:
            import traceback
            tap.ok(False, "%s raised %r" % (t.__name__, e),
                   traceback.format_exc())
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
