#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The admin page in a real browser: headless Chromium (issue 17).

- without the token the page and its data are 401 (and the 401 offers
  Basic, so a browser asks); with it as the Basic password the page loads;
- after two compression jobs, Chromium renders the page (its script runs,
  fetches the admin API) with one chart point per version, the active one
  ringed, the Pareto front drawn; a screenshot is taken;
- clicking "activate" on the page (through the DevTools protocol, the
  confirmation accepted) switches the version the data plane serves.
Skipped when chromium is not installed.
"""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

from paths import CALIB, HELD  # noqa: E402
TOKEN = "ui-test-token-0123456789abcdef"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_args(profile):
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--user-data-dir=" + profile,
            "--window-size=1000,1400"]


def served_version(d):
    with np.load(HELD) as z:
        x = {"input": z["input"][:2]}
    st, hd, data = d.post("/v2/models/mlp/infer", kserve.json_request(x))
    return (json_body(data) or {}).get("model_version")


class DevTools:
    """The least of a WebSocket client needed to speak the DevTools
    protocol to one page: text frames, masked, unfragmented."""

    def __init__(self, ws_url):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", ws_url)
        self.s = socket.create_connection((m.group(1), int(m.group(2))), 10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: "
                        "websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: "
                        "13\r\n\r\n" % (m.group(3), m.group(1), m.group(2),
                                        key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.s.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("no WebSocket upgrade: %r" % head)
        self.n = 0

    def _recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise RuntimeError("DevTools closed the connection")
            b += c
        return b

    def call(self, method, **params):
        self.n += 1
        data = json.dumps({"id": self.n, "method": method,
                           "params": params}).encode()
        mask = os.urandom(4)
        hdr = b"\x81"
        if len(data) < 126:
            hdr += bytes([0x80 | len(data)])
        else:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        self.s.sendall(hdr + mask +
                       bytes(c ^ mask[i % 4] for i, c in enumerate(data)))
        while True:
            b0, b1 = self._recv(2)
            ln = b1 & 0x7f
            if ln == 126:
                ln = struct.unpack(">H", self._recv(2))[0]
            elif ln == 127:
                ln = struct.unpack(">Q", self._recv(8))[0]
            msg = self._recv(ln)
            if b0 & 0x0f != 1:
                continue
            js = json.loads(msg)
            if js.get("id") == self.n:
                return js

    def close(self):
        self.s.close()


def page_eval(dt, expr):
    r = dt.call("Runtime.evaluate", expression=expr, awaitPromise=True,
                returnByValue=True)
    return ((r.get("result") or {}).get("result") or {}).get("value")


def main():
    if CHROMIUM is None:
        tap.skip_all("chromium is not installed")
    tmp = tempfile.mkdtemp(prefix="ss-ui-")
    tf = repo.token_file(tmp, TOKEN)
    root = repo.with_model(os.path.join(tmp, "models"),
                           files={"calib.npz": CALIB, "val.npz": HELD},
                           config={"version_policy": {"all": {}}})
    with Daemon(["--admin-token-file=" + tf, "--job-threads=1"],
                repository=root) as d:
        d.admin_token = TOKEN
        port = d.admin_port
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/admin/ui")
        r = c.getresponse()
        r.read()
        chal = r.msg.get_all("WWW-Authenticate") or []
        tap.ok(r.status == 401 and any(h.startswith("Basic") for h in chal),
               "the page without the token: 401 offering Basic", chal)
        for path in ("/admin/status", "/admin/models/mlp/versions"):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            tap.eq(r.status, 401, "its data without the token: %s 401"
                   % path)
        basic = "Basic " + base64.b64encode(
            ("admin:" + TOKEN).encode()).decode()
        c.request("GET", "/admin/ui", headers={"Authorization": basic})
        r = c.getresponse()
        page = r.read()
        tap.ok(r.status == 200 and page.startswith(b"<!DOCTYPE html>") and
               b"slimserve" in page and
               r.getheader("Content-Type", "").startswith("text/html"),
               "the page with the token as the Basic password: 200 HTML")
        c.request("GET", "/admin/ui", headers={
            "Authorization": "Basic " + base64.b64encode(
                b"admin:wrong").decode()})
        r = c.getresponse()
        r.read()
        tap.eq(r.status, 401, "a wrong Basic password: 401")
        c.close()

        for body in ({"methods": ["ptq"], "calibration": {"file":
                      "calib.npz"}, "validation": {"file": "val.npz"}},
                     {"methods": [{"method": "prune", "params": {
                         "kind": "structured", "sparsity": 0.3}}],
                      "calibration": {"file": "calib.npz"},
                      "validation": {"file": "val.npz"},
                      "gate": {"max_accuracy_drop": 0.2}}):
            st, _, data = d.post("/admin/models/mlp/compress",
                                 json.dumps(body), admin=True)
            job = d.wait_job((json_body(data) or {}).get("job", 0)) \
                if st == 202 else {}
            tap.eq(job.get("state"), "succeeded", "job %s succeeded"
                   % body["methods"][0])

        url = "http://admin:%s@127.0.0.1:%d/admin/ui" % (TOKEN, port)
        profile = os.path.join(tmp, "profile")
        r = subprocess.run(chromium_args(profile) +
                           ["--virtual-time-budget=8000", "--dump-dom", url],
                           capture_output=True, timeout=120)
        dom = r.stdout.decode("utf-8", "replace")
        if os.environ.get("SS_UI_DOM"):
            with open(os.environ["SS_UI_DOM"], "w") as f:
                f.write(dom)
        points = re.findall(r'<circle class="point" data-version="(\d+)"',
                            dom)  # the script builds them with quotes
        tap.ok('data-loaded="1"' in dom and sorted(points) ==
               ["1", "2", "3"], "Chromium renders one point per version "
               "(%s)" % points, re.findall(r'id="err">([^<]*)', dom))
        # The front from the API's numbers: no other version both at
        # least as fast at batch 32 and at least as accurate.
        st, _, data = d.get("/admin/models/mlp/versions", admin=True)
        vs = (json_body(data) or {}).get("versions", [])
        src = next(v["variant"]["measurements"]["source"] for v in vs
                   if "variant" in v)
        pts = {}
        for v in vs:
            m = v["variant"]["measurements"]["variant"] if "variant" in v \
                else src
            pts[str(v["version"])] = (m["latency_ms"]["batch32"],
                                      m["accuracy"])
        want = sorted(k for k, (l, a) in pts.items() if not any(
            q != k and l2 <= l and a2 >= a and (l2 < l or a2 > a)
            for q, (l2, a2) in pts.items()))
        # The rendered chart only (the dump holds the script's text too).
        m = re.search(r'<svg class="chart".*?</svg>', dom, re.S)
        svg = m.group(0) if m else ""
        got = sorted(re.findall(r'data-version="(\d+)" data-front="1"',
                                svg))
        tap.ok(svg.count('<circle class="active"') == 1 and got == want and
               ('class="front"' in svg) == (len(want) > 1),
               "the active version is ringed; the Pareto front is %s"
               % want, (got, svg))
        shot = os.path.join(tmp, "ui.png")
        r = subprocess.run(chromium_args(profile + "2") +
                           ["--virtual-time-budget=8000",
                            "--screenshot=" + shot, url],
                           capture_output=True, timeout=120)
        ok = os.path.exists(shot)
        if ok:
            with open(shot, "rb") as f:
                png = f.read()
            w, h = struct.unpack(">II", png[16:24])
            ok = png[:8] == b"\x89PNG\r\n\x1a\n" and (w, h) == (1000, 1400)
            if os.environ.get("SS_UI_SCREENSHOT"):
                shutil.copy(shot, os.environ["SS_UI_SCREENSHOT"])
        tap.ok(ok, "a screenshot of the page (1000x1400 PNG)")

        # Click "activate" on version 3, accepting the confirmation.
        tap.eq(served_version(d), "1", "version 1 is served before")
        proc = subprocess.Popen(chromium_args(profile + "3") + [
            "--remote-debugging-port=0", url], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        try:
            ws = None
            deadline = time.monotonic() + 30
            err = b""
            while ws is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                err += line
                m = re.search(rb"DevTools listening on ws://[^:]+:(\d+)",
                              line)
                if m:
                    ws = int(m.group(1))
            tap.ok(ws is not None, "Chromium's DevTools port", err[-300:])
            target = None
            while ws and target is None and time.monotonic() < deadline:
                hc = http.client.HTTPConnection("127.0.0.1", ws, timeout=5)
                hc.request("GET", "/json/list")
                pages = [t for t in json.loads(hc.getresponse().read())
                         if t.get("type") == "page"]
                hc.close()
                if pages:
                    target = pages[0]["webSocketDebuggerUrl"]
                else:
                    time.sleep(0.1)
            dt = DevTools(target)
            loaded = None
            while time.monotonic() < deadline and loaded != "1":
                loaded = page_eval(dt, "document.body.dataset.loaded||''")
                time.sleep(0.1)
            clicked = page_eval(
                dt, "window.confirm=()=>true;(()=>{const b=document."
                "querySelector('button[data-act=activate][data-version="
                "\"3\"]');if(!b)return 'no button';b.click();"
                "return 'clicked'})()")
            tap.eq(clicked, "clicked", "the page's activate button for "
                   "version 3 clicked, confirmation accepted")
            v = None
            while time.monotonic() < deadline and v != "3":
                v = served_version(d)
                time.sleep(0.1)
            tap.eq(v, "3", "the data plane serves version 3")
            row = None
            while time.monotonic() < deadline and row != "active":
                row = page_eval(dt, "(document.querySelector('tr[data-"
                                "version=\"3\"]')||{}).className||''")
                time.sleep(0.2)
            tap.eq(row, "active", "the page marks version 3 active")
            dt.close()
        finally:
            proc.kill()
            proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
