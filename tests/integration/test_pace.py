#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Pacing (server/jobs/jobs.h, common/pace.h): a compression job waits
while the data plane has requests in flight, but keeps job_min_share of
its wall time for computing.  Checked through the job's own account,
"paused_for_serving_s" in GET /admin/jobs/ID.  A request is in flight
from its headers to its answer, so a client that sent its headers and
part of its body keeps the data plane busy for as long as it holds it:
that is what makes the load here exact on a loaded machine; clients
sending requests back to back run beside it and must all be answered.

  - job_min_share=1 (pacing off): the job never waits;
  - the default (0.1): it waits, and no more than 90% of its time;
  - job_min_share=0: it waits as long as the load lasts (its progress
    stands still), finishes once the load stops, and a cancel during the
    wait ends it at once;
  - without load it does not wait; requests are all answered;
  - a job_min_share outside [0, 1] is refused at start.
"""

import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, DaemonError, json_body  # noqa: E402

from paths import MLP, CALIB, HELD  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 64],
                               "datatype": "FP32",
                               "data": [0.5] * 64}]}).encode()
JOB = json.dumps({"methods": ["ptq"], "calibration": {"file": "calib.npz"},
                  "validation": {"file": "val.npz"},
                  "gate": {"min_agreement": 0.0},
                  "activate": False}).encode()


def make_repo(root):
    d = os.path.join(root, "mlp")
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(MLP, os.path.join(d, "1", "model.onnx"))
    shutil.copy(HELD, os.path.join(d, "val.npz"))
    shutil.copy(CALIB, os.path.join(d, "calib.npz"))


class Load:
    """n clients sending inference requests back to back (bounded by
    time) until stop(); counts answers by status."""

    def __init__(self, port, n=3):
        self.port, self.halt = port, threading.Event()
        self.codes, self.lock = {}, threading.Lock()
        self.ts = [threading.Thread(target=self.run, daemon=True)
                   for _ in range(n)]
        for t in self.ts:
            t.start()

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 120
        while not self.halt.is_set() and time.monotonic() < deadline:
            try:
                c.request("POST", "/v2/models/mlp/infer", body=BODY,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                code = r.status
            except (OSError, http.client.HTTPException):
                code = "error"
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=10)
            with self.lock:
                self.codes[code] = self.codes.get(code, 0) + 1
        c.close()

    def stop(self):
        self.halt.set()
        for t in self.ts:
            t.join(30)
        return self.codes


class Hold:
    """A request whose headers and first body byte were sent, the rest
    held back: in flight until close()."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\n"
                       b"Host: 127.0.0.1\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Content-Length: 100000\r\n\r\n{")

    def close(self):
        self.s.close()


def submit(d):
    st, _, data = d.post("/admin/models/mlp/compress", JOB, admin=True)
    return (json_body(data) or {}).get("job") if st == 202 else None


def job(d, jid):
    _, _, data = d.get("/admin/jobs/%d" % jid, admin=True)
    return json_body(data) or {}


def wall(js):
    return js.get("finished", 0) - js.get("started", 0)


def under_load(root, share, what):
    """Runs one job while clients keep the server busy: its final JSON."""
    with Daemon(["--admin-insecure", "--job-min-share=%s" % share],
                repository=root) as d:
        load, hold = Load(d.http_port, 2), Hold(d.http_port)
        time.sleep(0.2)
        jid = submit(d)
        js = d.wait_job(jid, timeout=120) if jid else {"state": "no job"}
        hold.close()
        codes = load.stop()
        tap.ok(js.get("state") == "succeeded", "%s: the job succeeded (%s)"
               % (what, js.get("state")), js.get("error"))
        tap.ok(set(codes) == {200} and codes[200] > 50,
               "%s: every request answered 200 (%s)" % (what, codes))
        tap.eq(d.stop(), 0, "%s: clean exit" % what)
        return js


def main():
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    make_repo(root)

    js = under_load(root, "1", "pacing off")
    tap.ok(js.get("paused_for_serving_s") == 0,
           "pacing off: the job never waited (%r s)"
           % js.get("paused_for_serving_s"))

    js = under_load(root, "0.1", "min share 0.1")
    p, w = js.get("paused_for_serving_s", -1), wall(js)
    tap.ok(p >= 0.5 * w, "min share 0.1: busy throughout, the job waited "
           "for serving most of its time (%.3f s of %.3f s)" % (p, w))
    # One slice (200 us) past the share at most per point, and the
    # account is kept from the job's start: 0.9 of the wall time plus
    # a margin for the end of the job after its last point.
    tap.ok(p <= 0.9 * w + 0.05, "min share 0.1: it kept 10%% for "
           "computing (waited %.3f of %.3f s)" % (p, w))

    with Daemon(["--admin-insecure", "--job-min-share=0"],
                repository=root) as d:
        load, hold = Load(d.http_port, 2), Hold(d.http_port)
        time.sleep(0.2)
        jid = submit(d)
        time.sleep(1.5)
        a = job(d, jid)
        time.sleep(0.5)
        b = job(d, jid)
        tap.ok(a.get("state") == "running" and b.get("state") == "running"
               and b.get("paused_for_serving_s", 0) > 1.0,
               "min share 0: under load the job waits (%s, paused %.2f s "
               "after 2 s)" % (b.get("state"),
                               b.get("paused_for_serving_s", 0)))
        tap.eq(a.get("progress"), b.get("progress"),
               "min share 0: its progress stands still while it waits")
        hold.close()
        codes = load.stop()
        js = d.wait_job(jid, timeout=120)
        tap.ok(js.get("state") == "succeeded", "min share 0: it finishes "
               "once the load stops (%s)" % js.get("state"))
        tap.ok(set(codes) == {200}, "min share 0: every request answered "
               "200 (%s)" % codes)
        # Cancel while waiting.
        hold = Hold(d.http_port)
        time.sleep(0.2)
        jid = submit(d)
        time.sleep(0.8)
        t0 = time.monotonic()
        st, _, _ = d.request("DELETE", "/admin/jobs/%d" % jid, admin=True)
        js = d.wait_job(jid, timeout=30)
        dt = time.monotonic() - t0
        hold.close()
        tap.ok(st in (200, 202) and js.get("state") == "cancelled"
               and dt < 2.0, "min share 0: a cancel during the wait ends "
               "the job at once (%s, %s after %.2f s)"
               % (st, js.get("state"), dt))
        # No load: no wait.
        jid = submit(d)
        js = d.wait_job(jid, timeout=120)
        tap.ok(js.get("state") == "succeeded"
               and js.get("paused_for_serving_s", 1) < 0.05,
               "no load: the job does not wait (%r s)"
               % js.get("paused_for_serving_s"))
        tap.eq(d.stop(), 0, "min share 0: clean exit")

    for bad in ("1.5", "-0.1", "x"):
        refused = None
        try:
            with Daemon(["--admin-insecure", "--job-min-share=" + bad],
                        repository=root):
                pass
        except DaemonError as e:
            refused = str(e)
        tap.ok(refused is not None and "job_min_share" in refused,
               "job_min_share=%s is refused at start" % bad, refused)
    shutil.rmtree(tmp)
    tap.done()


if __name__ == "__main__":
    main()
