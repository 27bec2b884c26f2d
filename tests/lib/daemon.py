# SPDX-License-Identifier: Apache-2.0
"""Starts the real slimserve daemon on loopback ports for black-box tests.

    with Daemon(["--admin-insecure"]) as d:
        status, headers, body = d.get("/v2/health/live")

The daemon listens on port 0; its "listening http=ADDR:PORT admin=ADDR:PORT"
log line tells the ports.  stderr is collected in the background so tests
can look for log lines.  stop() sends SIGTERM and returns the exit code;
sanitizer reports make it non-zero (see ASAN_OPTIONS in Makefile.am).

Set d.ssl_context (an ssl.SSLContext) to speak HTTPS in request(), get(),
post() and metrics(); raw() always speaks plain bytes.  Set d.admin_token
to send it as the bearer token of admin requests.

SS_TEST_HTTP_THREADS=N in the environment starts every daemon with
--http-threads=N (the *_loops2.py tests run whole suites that way); a
test's own --http-threads comes later and wins.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

TOP_BUILDDIR = os.environ.get("top_builddir", ".")
TOP_SRCDIR = os.environ.get("top_srcdir", ".")
BINARY = os.path.join(TOP_BUILDDIR, "server", "slimserve")

JOB_ENDS = ("succeeded", "rejected", "failed", "cancelled")

_LISTEN_RE = re.compile(r"listening http=(\S+):(\d+) admin=(\S+):(-?\d+)")


class DaemonError(Exception):
    pass


class Daemon:
    def __init__(self, args=None, env=None, start_timeout=60.0,
                 repository=None, cwd=None, wait_models=True):
        self.args = list(args or [])
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.start_timeout = start_timeout
        self.wait_models = wait_models
        self.tmp = tempfile.TemporaryDirectory(prefix="ss-test-")
        self.repository = repository or os.path.join(self.tmp.name, "models")
        self.cwd = cwd or self.tmp.name
        self.proc = None
        self.log = ""
        self._log_lock = threading.Lock()
        self.http_port = None
        self.admin_port = None
        self.returncode = None
        self.ssl_context = None     # HTTPS when set
        self.admin_token = None     # sent as a bearer token to admin

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        argv = [BINARY, "--http-address=127.0.0.1", "--http-port=0",
                "--admin-port=0", "--model-repository=" + self.repository]
        if os.environ.get("SS_TEST_HTTP_THREADS"):
            argv.append("--http-threads=" +
                        os.environ["SS_TEST_HTTP_THREADS"])
        argv += self.args
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env,
                                     cwd=self.cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            m = _LISTEN_RE.search(self.logs())
            # Listening comes first; the models found at start load after.
            if m and (not self.wait_models or
                      "model(s) loaded" in self.logs()):
                self.http_port = int(m.group(2))
                self.admin_port = int(m.group(4))
                return self
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise DaemonError("daemon exited with %d:\n%s"
                                  % (self.proc.returncode, self.logs()))
            time.sleep(0.02)
        self.kill()
        raise DaemonError("daemon did not report its ports:\n" + self.logs())

    def _read(self):
        for line in iter(self.proc.stderr.readline, b""):
            with self._log_lock:
                self.log += line.decode("utf-8", "replace")

    def logs(self):
        with self._log_lock:
            return self.log

    def wait_log(self, pattern, timeout=10.0):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            if rx.search(self.logs()):
                return True
            time.sleep(0.02)
        return False

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30.0):
        """SIGTERM, wait, return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=30.0):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError("daemon did not exit within %gs" % timeout)
        self._reader.join(5)
        if self.returncode != 0:
            # Sanitizer reports and errors land in the log: show its tail.
            for line in self.logs().splitlines()[-60:]:
                print("#   daemon: " + line)
        return self.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                self.stop()
        finally:
            self.tmp.cleanup()

    # -- requests ----------------------------------------------------------
    def request(self, method, path, body=None, headers=None, admin=False,
                timeout=10.0):
        port = self.admin_port if admin else self.http_port
        if self.ssl_context is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port,
                                              timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
            if admin and self.admin_token is not None:
                headers = dict(headers or {})
                headers.setdefault("Authorization",
                                   "Bearer " + self.admin_token)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def metrics(self):
        """{(name, ((label, value), ...)): value} from GET /metrics."""
        st, _, body = self.get("/metrics")
        if st != 200:
            raise DaemonError("/metrics answered %d" % st)
        return parse_metrics(body.decode())

    def metric(self, name, **labels):
        """The sum of the samples of name whose labels include labels."""
        total = 0.0
        for (n, lv), v in self.metrics().items():
            if n == name and all((k, str(x)) in lv
                                 for k, x in labels.items()):
                total += v
        return total

    def wait_job(self, jid, timeout=240.0, poll=0.05):
        """GET /admin/jobs/JID until the job ends; its JSON, or
        {"state": "timeout"} when it has not ended within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, _, data = self.get("/admin/jobs/%d" % jid, admin=True)
            js = json_body(data) or {}
            if js.get("state") in JOB_ENDS:
                return js
            time.sleep(poll)
        return {"state": "timeout"}

    def raw(self, data, admin=False, timeout=5.0, read=True):
        """Sends raw bytes; returns what the server answered (until it
        closes or the timeout passes)."""
        port = self.admin_port if admin else self.http_port
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            if data:
                s.sendall(data)
            if not read:
                return b""
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                    if b"\r\n\r\n" in out and _complete(out):
                        break
            except socket.timeout:
                pass
            return out
        finally:
            s.close()


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def proc_status(pid, key):
    """The number of a /proc/PID/status line ("Threads", "VmHWM" in kB),
    or -1."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def asan_build():
    """Whether the daemon under test is built with ASan.  Its RSS is then
    its shadow and its quarantine of freed blocks (256 MB by default,
    handed back late): RSS comparisons say nothing there."""
    with open(BINARY, "rb") as f:
        return b"__asan_init" in f.read()


def free_port():
    """A loopback port nobody listens on right now, for a server that
    cannot be told to pick its own (nginx, HAProxy, a replica's primary
    URL known before it starts)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_metrics(text):
    """Prometheus text format to {(name, ((label, value), ...)): value}."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = tuple(sorted(_LABEL_RE.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def _complete(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def json_body(data):
    try:
        return json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return None
