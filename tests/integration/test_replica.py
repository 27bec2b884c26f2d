#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Replicas on one repository behind nginx (issue 16).

A primary and two replicas (role "replica", polling the repository every
0.2 s) serve one repository; nginx runs the shipped
conf/lb/nginx-slimserve.conf in front of the three.  Checked:
- a replica refuses the writes (compress, activate, rollback) with 409
  naming the primary; its status says its role;
- a PTQ job on the primary, activated: both replicas serve version 2
  within a few poll intervals;
- client threads through nginx during the activation and during a
  replica's restart (SIGTERM, then started again on its port): no
  failed request;
- a version a replica cannot load (a corrupt model.onnx made active in
  config.json) leaves it serving the old one, and the index says why;
- a model unloaded through a replica's API stays unloaded while it polls;
- conf/lb/haproxy.cfg is valid (haproxy -c) when haproxy is installed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.client

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import BINARY, Daemon, free_port, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

from paths import CALIB, HELD  # noqa: E402
NGINX_CONF = os.path.join(TOP_SRC, "conf", "lb", "nginx-slimserve.conf")
HAPROXY_CFG = os.path.join(TOP_SRC, "conf", "lb", "haproxy.cfg")
POLL = "0.2"


def infer_body():
    with np.load(HELD) as z:
        x = {"input": z["input"][:2]}
    return kserve.json_request(x)


def served_version(port, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("POST", "/v2/models/mlp/infer", body,
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            return None
        return (json_body(data) or {}).get("model_version")
    except OSError:
        return None
    finally:
        c.close()


def wait_version(port, body, want, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if served_version(port, body) == want:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


class Nginx:
    def __init__(self, tmp, ports):
        self.port = free_port()
        d = os.path.join(tmp, "nginx")
        os.makedirs(d)
        with open(NGINX_CONF) as f:
            site = f.read()
        lines = []
        servers = iter(ports)
        for line in site.splitlines():
            s = line.strip()
            if s.startswith("server 127.0.0.1:"):
                line = line.replace(s.split()[1], "127.0.0.1:%d"
                                    % next(servers))
            elif s == "listen 8080;":
                line = "    listen 127.0.0.1:%d;" % self.port
            lines.append(line)
        tap.ok(next(servers, None) is None,
               "the shipped nginx upstream lists %d servers" % len(ports))
        with open(os.path.join(d, "site.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write("""daemon off;
master_process on;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    include %(d)s/site.conf;
}
""" % {"d": d})
        self.dir = d
        self.proc = subprocess.Popen(
            ["nginx", "-e", os.path.join(d, "error.log"), "-p", d, "-c",
             os.path.join(d, "nginx.conf")], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: %s"
                           % self.proc.stderr.read().decode())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Load:
    """Client threads posting inference requests through nginx, each on
    its own keep-alive connection (a new one after an error)."""

    def __init__(self, port, body, threads=3):
        self.port, self.body = port, body
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []
        self.versions = {}
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        c = None
        while not self.stop_ev.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port,
                                                   timeout=10)
                c.request("POST", "/v2/models/mlp/infer", self.body,
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                st = r.status
            except (OSError, http.client.HTTPException) as e:
                st, data = None, repr(e).encode()
                c.close()
                c = None
            with self.lock:
                if st == 200:
                    self.ok += 1
                    v = (json_body(data) or {}).get("model_version")
                    self.versions[v] = self.versions.get(v, 0) + 1
                else:
                    self.failed.append((st, data[:200]))
            time.sleep(0.002)
        if c is not None:
            c.close()

    def finish(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)


def replica_args(primary):
    return ["--admin-insecure", "--role=replica",
            "--repository-poll-s=" + POLL,
            "--primary-url=http://127.0.0.1:%d" % primary.admin_port]


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def test_refusals(rep, primary):
    st, _, data = rep.get("/admin/status", admin=True)
    js = json_body(data) or {}
    tap.eq((st, js.get("role"), js.get("repository_poll_s")),
           (200, "replica", 0.2), "a replica's status names its role")
    body = {"methods": ["ptq"], "calibration": {"file": "calib.npz"},
            "validation": {"file": "val.npz"}}
    for path, b in (("/admin/models/mlp/compress", json.dumps(body)),
                    ("/admin/models/mlp/versions/1/activate", None),
                    ("/admin/models/mlp/rollback", None)):
        st, _, data = rep.post(path, b, admin=True)
        msg = (json_body(data) or {}).get("error", "")
        tap.ok(st == 409 and "primary" in msg and
               str(primary.admin_port) in msg,
               "replica: POST %s is 409 naming the primary" % path, msg)
    st, _, data = rep.get("/admin/jobs", admin=True)
    tap.eq((st, json_body(data)), (200, []), "no job was created")


def test_bad_config():
    for arg, want in (("--role=secondary", "'role' must be primary or "
                       "replica, not 'secondary'"),
                      ("--repository-poll-s=-1", "repository_poll_s")):
        r = subprocess.run([BINARY, arg, "--admin-insecure",
                            "--check-config"], capture_output=True,
                           text=True, timeout=30)
        tap.ok(r.returncode == 2 and want in r.stderr,
               "%s is refused at start, naming the key" % arg, r.stderr)


def main():
    test_bad_config()
    tmp = tempfile.mkdtemp(prefix="ss-replica-")
    root = repo.with_model(os.path.join(tmp, "models"),
                           files={"calib.npz": CALIB, "val.npz": HELD})
    body = infer_body()
    ports = [free_port(), free_port()]
    nginx = load = None
    # Pacing off: the job computes under the load (at the default,
    # job_min_share 0, it would wait for the load to stop).
    with Daemon(["--admin-insecure", "--job-threads=1", "--job-min-share=1"],
                repository=root) as primary, \
            Daemon(replica_args(primary) + ["--http-port=%d" % ports[0]],
                   repository=root) as ra, \
            Daemon(replica_args(primary) + ["--http-port=%d" % ports[1]],
                   repository=root) as rb:
        try:
            test_refusals(ra, primary)
            for name, d in (("primary", primary), ("replica a", ra),
                            ("replica b", rb)):
                tap.eq(served_version(d.http_port, body), "1",
                       "%s serves version 1" % name)
            if shutil.which("nginx") is None:
                tap.skip("nginx is not installed (nginx-light)", 3)
            else:
                nginx = Nginx(tmp, [primary.http_port, ra.http_port,
                                    rb.http_port])
                load = Load(nginx.port, body)
            # A PTQ variant on the primary, activated.
            st, _, data = primary.post(
                "/admin/models/mlp/compress",
                json.dumps({"methods": ["ptq"],
                            "calibration": {"file": "calib.npz"},
                            "validation": {"file": "val.npz"},
                            "activate": True}), admin=True)
            jid = (json_body(data) or {}).get("job", 0)
            job = primary.wait_job(jid, timeout=120)
            tap.ok((st, job.get("state")) == (202, "succeeded"),
                   "the primary's PTQ job succeeded", job)
            tap.eq(served_version(primary.http_port, body), "2",
                   "the primary serves version 2")
            for name, d in (("replica a", ra), ("replica b", rb)):
                took = wait_version(d.http_port, body, "2", 10)
                tap.ok(took is not None and took < 5.0,
                       "%s serves version 2 %s after the activation "
                       "(poll %s s)" % (name, "%.2f s" % took if took
                                        is not None else "never", POLL))
            # A replica restarts under load: SIGTERM drains it, nginx
            # sends its requests elsewhere, it comes back on its port.
            if load is not None:
                time.sleep(0.3)
                tap.eq(ra.stop(), 0, "replica a drained and exited cleanly")
                time.sleep(0.5)
                ra.start()
                took = wait_version(ra.http_port, body, "2", 30)
                tap.ok(took is not None and ra.http_port == ports[0],
                       "replica a is back on its port serving version 2")
                time.sleep(0.5)
                load.finish()
                tap.ok(load.ok > 100 and not load.failed,
                       "through nginx during the activation and the "
                       "restart: %d answered, %d failed" % (
                           load.ok, len(load.failed)), load.failed[:3])
                tap.ok(load.versions.get("2", 0) > 0,
                       "clients saw version 2 (%s)" % load.versions)
                load = None
            # A version the replicas cannot load: they keep version 2.
            vdir = os.path.join(root, "mlp", "3")
            os.makedirs(vdir + ".tmp")
            with open(os.path.join(vdir + ".tmp", "model.onnx"), "wb") as f:
                f.write(b"\x08\x07this is not a model")
            os.rename(vdir + ".tmp", vdir)
            cfgp = os.path.join(root, "mlp", "config.json")
            with open(cfgp) as f:
                cfg = json.load(f)
            cfg["active_version"] = 3
            write_atomic(cfgp, json.dumps(cfg).encode())
            deadline = time.monotonic() + 10
            reason = ""
            while time.monotonic() < deadline and "3" not in reason:
                st, _, data = rb.post("/v2/repository/index", b"", admin=True)
                for e in json_body(data) or []:
                    if e.get("name") == "mlp":
                        reason = e.get("reason", "")
                time.sleep(0.1)
            tap.ok("version 3" in reason,
                   "replica b's index says why version 3 is not served: "
                   + reason[:120], reason)
            tap.eq(served_version(rb.http_port, body), "2",
                   "replica b still serves version 2")
            # Unloaded by hand on a replica: polls leave it unloaded.
            st, _, _ = rb.post("/v2/repository/models/mlp/unload", b"", admin=True)
            tap.eq(st, 200, "replica b: unload through its API")
            time.sleep(1.0)
            st, _, _ = rb.get("/v2/models/mlp/ready")
            tap.ok(st != 200, "the model stays unloaded over 5 polls "
                   "(ready: %d)" % st)
        finally:
            if load is not None:
                load.finish()
            if nginx is not None:
                nginx.stop()
        for name, d in (("primary", primary), ("replica b", rb)):
            tap.eq(d.stop(), 0, "%s exited cleanly" % name)
    shutil.rmtree(tmp, ignore_errors=True)

    if shutil.which("haproxy") is None:
        tap.skip("haproxy is not installed", 1)
    else:
        r = subprocess.run(["haproxy", "-c", "-f", HAPROXY_CFG],
                           capture_output=True, text=True)
        tap.ok(r.returncode == 0, "conf/lb/haproxy.cfg is valid",
               r.stdout + r.stderr)


if __name__ == "__main__":
    main()
    sys.exit(tap.done())
