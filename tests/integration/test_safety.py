# SPDX-License-Identifier: Apache-2.0
"""Hostile files and names (issue 10): job data that is a FIFO, a huge
sparse file or a symbolic link; nothing blocks the main loop (measured by
its lag probe and by admin latency); a long admin token; a model whose op
name is not UTF-8; temporary files left by an interrupted write; strict
model names and versions; no phantom index entry; NaN/Inf inputs."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
TOP_BUILD = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import BINARY, Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

from paths import MLP, HELD  # noqa: E402
# The jobs here run while probes keep the data plane busy: pacing off, or
# they would wait for the probes to stop (job_min_share's default, 0).
ADMIN = ["--admin-insecure", "--job-min-share=1"]


def repo_with_mlp(root, config=None):
    return repo.with_model(root, files={"val.npz": HELD}, config=config)


def submit(d, body, timeout=10.0):
    st, _, data = d.post("/admin/models/mlp/compress", body, admin=True,
                         timeout=timeout)
    return st, json_body(data) or {}


def infer_body(n=1):
    with np.load(HELD) as z:
        x = z["input"][:n]
    return kserve.json_request({"input": x})


class Prober:
    """Times a request against the data plane and one against the admin
    plane in a loop, on their own threads, until stopped."""

    def __init__(self, d):
        self.d = d
        self.times = {"data": [], "admin": []}
        self.errors = []
        self.stop_ev = threading.Event()
        body = infer_body()
        self.threads = [
            threading.Thread(target=self._run, args=(
                "data", lambda: d.post("/v2/models/mlp/infer", body,
                                       timeout=5.0)), daemon=True),
            threading.Thread(target=self._run, args=(
                "admin", lambda: d.get("/admin/status", admin=True,
                                       timeout=5.0)), daemon=True),
        ]

    def _run(self, name, fn):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            try:
                st, _, _ = fn()
                if st != 200:
                    self.errors.append((name, st))
            except (OSError, socket.timeout) as e:
                self.errors.append((name, repr(e)))
            self.times[name].append(time.monotonic() - t0)
            time.sleep(0.01)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)

    def worst(self, name):
        return max(self.times[name]) if self.times[name] else float("inf")

    def median(self, name):
        t = sorted(self.times[name])
        return t[len(t) // 2] if t else float("inf")


def lag_over(d, limit, metric="slimserve_loop_stall_seconds"):
    """Main-loop ticks above limit seconds, from the histogram: by default
    the stall (the lag less the loop thread's wait for a CPU, which on a
    loaded machine is other processes' doing, not the loop's)."""
    m = d.metrics()
    total = over = 0.0
    for (name, labels), v in m.items():
        lv = dict(labels)
        if name == metric + "_count" and lv.get("loop") == "main":
            total = v
        if name == metric + "_bucket" and \
                lv.get("loop") == "main" and lv.get("le") == repr(limit):
            over = v
    return total - over, total


def test_fifo():
    """A FIFO named as job data: before, the loop blocked in open(2) until
    a writer came (admin and every loop-side operation stalled); now the
    job fails at once and both planes answer as usual."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    fifo = os.path.join(root, "mlp", "calib.npz")
    os.mkfifo(fifo)
    with Daemon(ADMIN, repository=root) as d:
        with Prober(d) as base:
            time.sleep(0.5)
        with Prober(d) as p:
            time.sleep(0.2)
            try:
                st, js = submit(d, {"methods": ["bf16"],
                                    "validation": {"file": "calib.npz"}},
                                timeout=3.0)
            except (OSError, socket.timeout) as e:
                st, js = None, {"error": repr(e)}
            tap.ok(st == 202, "a job naming a FIFO is accepted at once", js)
            job = d.wait_job(js.get("job", 0), timeout=5) if st else {}
            time.sleep(0.3)
        err = job.get("error", "")
        tap.ok(job.get("state") == "failed" and "not a regular file" in err
               and "calib.npz" in err,
               "the job fails: not a regular file (%s)" % err, job)
        tap.ok(root not in err, "the error names no absolute path")
        tap.eq(p.errors, [], "no request failed meanwhile")
        # A FIFO read on the loop blocks it until a writer comes: seconds.
        tap.ok(p.worst("admin") < 1.0 and p.median("admin") < 0.1,
               "admin answered throughout (median %.3fs, worst %.3fs)"
               % (p.median("admin"), p.worst("admin")))
        tap.ok(p.worst("data") < max(0.25, 5 * base.worst("data")),
               "data plane within its normal latency (worst %.3fs, "
               "baseline %.3fs)" % (p.worst("data"), base.worst("data")))
        # Before the change the loop sits in open(2): let it go.
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_big_files():
    """A 64 GiB sparse file is refused by the size limit without being
    read; the limit is configurable and holds for real files too."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    huge = os.path.join(root, "mlp", "huge.npz")
    with open(huge, "wb") as f:
        f.truncate(64 << 30)
    with Daemon(ADMIN, repository=root) as d:
        t0 = time.monotonic()
        st, js = submit(d, {"methods": ["bf16"],
                            "validation": {"file": "huge.npz"}})
        job = d.wait_job(js.get("job", 0), timeout=10)
        took = time.monotonic() - t0
        err = job.get("error", "")
        tap.ok(job.get("state") == "failed" and "huge.npz" in err and
               "max_job_data_bytes" in err and str(64 << 30) in err,
               "a 64 GiB file is over the limit (%s)" % err, job)
        tap.ok(took < 2.0, "refused without reading it (%.2fs)" % took)
        tap.eq(d.stop(), 0, "clean exit")
    os.unlink(huge)
    size = os.path.getsize(os.path.join(root, "mlp", "val.npz"))
    with Daemon(ADMIN + ["--max-job-data-bytes=%d" % (size - 1)],
                repository=root) as d:
        st, js = submit(d, {"methods": ["bf16"],
                            "validation": {"file": "val.npz"}})
        job = d.wait_job(js.get("job", 0), timeout=30)
        tap.ok(job.get("state") == "failed" and
               "over the limit of %d" % (size - 1) in job.get("error", ""),
               "--max-job-data-bytes one below the file refuses it (%s)"
               % job.get("error"))
        tap.eq(d.stop(), 0, "clean exit")
    with Daemon(ADMIN + ["--max-job-data-bytes=%d" % size],
                repository=root) as d:
        st, js = submit(d, {"methods": ["bf16"],
                            "validation": {"file": "val.npz"}})
        job = d.wait_job(js.get("job", 0), timeout=120)
        tap.eq(job.get("state"), "succeeded",
               "a file of exactly the limit is read (%s)" % job.get("error"))
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_symlinks():
    """Links are never followed: not to a valid file outside the model's
    folder, not to /etc/passwd; the error names the link only."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    outside = os.path.join(tmp, "outside.npz")
    shutil.copy(HELD, outside)
    os.symlink(outside, os.path.join(root, "mlp", "out.npz"))
    os.symlink("/etc/passwd", os.path.join(root, "mlp", "pw.npy"))
    os.symlink("val.npz", os.path.join(root, "mlp", "rel.npz"))
    with Daemon(ADMIN, repository=root) as d:
        for name in ("out.npz", "pw.npy", "rel.npz"):
            st, js = submit(d, {"methods": ["bf16"],
                                "validation": {"file": name}})
            job = d.wait_job(js.get("job", 0), timeout=30)
            err = job.get("error", "")
            tap.ok(job.get("state") == "failed" and
                   "symbolic link" in err and name in err,
                   "%s: refused as a symbolic link (%s)" % (name, err), job)
            tap.ok(tmp not in err and "/etc/passwd" not in err and
                   "root:" not in err,
                   "%s: no path and no content in the error" % name)
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_loop_lag():
    """A job reading a 128 MiB data file: the read runs on the job thread,
    so the main loop's lag probe stays under 50 ms and admin answers."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    rows = (128 << 20) // (64 * 4)
    x = np.random.default_rng(0).standard_normal((rows, 64)).astype(
        np.float32)
    np.savez(os.path.join(root, "mlp", "big.npz"), input=x)
    del x
    with Daemon(ADMIN + ["--max-job-data-bytes=%d" % (256 << 20)],
                repository=root) as d:
        names = [n for (n, _) in d.metrics()]
        tap.ok("slimserve_loop_lag_seconds_bucket" in names and
               "slimserve_loop_lag_max_seconds" in names,
               "the loop lag metrics are exported")
        time.sleep(0.3)
        over0, n0 = lag_over(d, 0.05)
        long0, _ = lag_over(d, 0.25)
        with Prober(d) as p:
            t0 = time.monotonic()
            try:
                st, js = submit(d, {"methods": ["ptq"],
                                    "calibration": {"file": "big.npz"},
                                    "validation": {"file": "val.npz"}})
            except (OSError, socket.timeout) as e:
                st, js = None, {"error": repr(e)}
            took = time.monotonic() - t0
            tap.ok(st == 202, "submitted in %.3fs" % took, js)
            # Until the job is past loading its data.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st2, _, data = d.get("/admin/jobs/%d" % js.get("job", 0),
                                     admin=True)
                job = json_body(data) or {}
                if job.get("step") not in ("queued", "loading data"):
                    break
                time.sleep(0.05)
        over1, n1 = lag_over(d, 0.05)
        long1, _ = lag_over(d, 0.25)
        worst = d.metric("slimserve_loop_stall_max_seconds", loop="main")
        tap.ok(n1 > n0 + 10, "the probe ticked meanwhile (%d ticks)"
               % (n1 - n0))
        # Before, the read ran on the loop: one stall of seconds.  Now
        # the loop sleeps in epoll_wait throughout.  The stall leaves out
        # the loop's wait for a CPU (on a loaded machine, other
        # processes'); wake-ups can still come late while another CPU
        # moves hundreds of MiB (page faults of both threads take the
        # process's mmap lock; under ASan at load 18, 5 ticks of 50-145 ms
        # were seen), so only stalls over 250 ms fail: the read on the
        # loop stalled it for seconds.
        tap.ok(long1 - long0 == 0,
               "no loop stall while the job read 128 MiB: none over "
               "250 ms, %d over 50 ms (longest since start %.1f ms)"
               % (over1 - over0, worst * 1e3))
        # Round trips timed by this process include its own waits for a
        # CPU (ASan at load 14-18: one of 324 ms).  A loop busy with the
        # read shows as every request during it taking the read's seconds.
        tap.ok(p.worst("admin") < 1.0 and p.median("admin") < 0.1,
               "admin answered throughout (median %.3fs, worst %.3fs)"
               % (p.median("admin"), p.worst("admin")))
        d.request("DELETE", "/admin/jobs/%d" % js.get("job", 0), admin=True)
        d.wait_job(js.get("job", 0), timeout=60)
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_token():
    """An admin token file over the limit is refused at start, never cut;
    the longest token allowed works."""
    tmp = tempfile.mkdtemp()
    long_tok = "a" * 5000
    path = os.path.join(tmp, "token")
    with open(path, "w") as f:
        f.write(long_tok + "\n")
    os.chmod(path, 0o600)
    p = subprocess.run([BINARY, "--http-port=0", "--admin-port=0",
                        "--admin-token-file=" + path,
                        "--model-repository=" + tmp],
                       capture_output=True, timeout=30)
    msg = p.stderr.decode("utf-8", "replace")
    tap.eq(p.returncode, 1, "a 5000-byte token: refuse to start")
    tap.ok("4096" in msg and "token" in msg, "and say why", msg[-300:])
    with open(path, "wb") as f:
        f.write(b"abc\0def\n")
    p = subprocess.run([BINARY, "--http-port=0", "--admin-port=0",
                        "--admin-token-file=" + path,
                        "--model-repository=" + tmp],
                       capture_output=True, timeout=30)
    tap.eq(p.returncode, 1, "a token with a NUL: refuse to start (it "
           "would be cut at the NUL)")
    tok = "b" * 4096
    with open(path, "w") as f:
        f.write(tok + "\n")
    with Daemon(["--admin-token-file=" + path]) as d:
        st, _, _ = d.get("/admin/status", admin=True,
                         headers={"Authorization": "Bearer " + tok})
        tap.eq(st, 200, "a 4096-byte token authenticates")
        st, _, _ = d.get("/admin/status", admin=True,
                         headers={"Authorization": "Bearer " + tok[:-1]})
        tap.eq(st, 401, "and 4095 bytes of it do not")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_non_utf8_model():
    """A model whose op name is not UTF-8: every answer is valid JSON
    (U+FFFD in place of the bytes) and the log escapes them."""
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    os.makedirs(os.path.join(root, "bad", "1"))
    with open(MLP, "rb") as f:
        onnx = f.read()
    with open(os.path.join(root, "bad", "1", "model.onnx"), "wb") as f:
        f.write(onnx.replace(b"Relu", b"\xff\xfelu"))
    with Daemon(ADMIN, repository=root) as d:
        for what, (st, _, data) in (
                ("load", d.post("/v2/repository/models/bad/load", b"",
                                admin=True)),
                ("metadata", d.get("/v2/models/bad")),
                ("infer", d.post("/v2/models/bad/infer", infer_body())),
                ("index", d.post("/v2/repository/index", b"", admin=True)),
                ("bad path", d.get("/v2/models/%ff%fe"))):
            js = json_body(data)
            tap.ok(js is not None, "%s: %d with a JSON body" % (what, st),
                   data[:200])
        st, _, data = d.post("/v2/repository/models/bad/load", b"",
                             admin=True)
        err = (json_body(data) or {}).get("error", "")
        tap.ok(st == 400 and "\ufffd\ufffdlu" in err,
               "load: 400 and the op name with U+FFFD (%s)" % err)
        st, _, data = d.post("/v2/repository/index", b"", admin=True)
        tap.ok(any("\ufffd" in e.get("reason", "")
                   for e in json_body(data) or []),
               "index: the reason, with U+FFFD")
        logs = d.logs()
        tap.ok("\\xff\\xfelu" in logs, "the log escapes the bytes")
        tap.ok("\ufffd" not in logs, "no raw invalid byte in the log")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_leftovers():
    """Uncommitted atomic files (.config.json.tmp.XXXXXX and the like) are
    removed at start; look-alikes are kept."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    mdir = os.path.join(root, "mlp")
    left = [os.path.join(mdir, ".config.json.tmp.Ab12Cd"),
            os.path.join(mdir, "1", ".variant.json.tmp.x9Y8z7"),
            os.path.join(root, ".index.json.tmp.QQQQQQ")]
    keep = [os.path.join(mdir, "notes.tmp.abcdef"),
            os.path.join(mdir, ".config.json.tmp.toolong7"),
            os.path.join(mdir, ".keep")]
    for p in left + keep:
        with open(p, "w") as f:
            f.write("x")
    with Daemon(ADMIN, repository=root) as d:
        tap.ok(not any(os.path.exists(p) for p in left),
               "leftover temporary files are removed at start",
               [p for p in left if os.path.exists(p)])
        tap.ok(all(os.path.exists(p) for p in keep), "look-alikes are kept")
        tap.ok("left by an interrupted write" in d.logs(), "and logged")
        st, _, _ = d.post("/v2/models/mlp/infer", infer_body())
        tap.eq(st, 200, "the model serves")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_names():
    """mlp%00x is not mlp; 01 and +1 are not version 1; a missing model
    leaves no index entry; error bodies are JSON."""
    tmp = tempfile.mkdtemp()
    root = repo_with_mlp(os.path.join(tmp, "m"))
    with Daemon(ADMIN, repository=root) as d:
        body = infer_body()
        cases = [
            ("GET", "/v2/models/mlp%00x", False),
            ("GET", "/v2/models/mlp%00", False),
            ("POST", "/v2/models/mlp%00x/infer", False),
            ("GET", "/v2/models/mlp/versions/01", False),
            ("GET", "/v2/models/mlp/versions/+1", False),
            ("GET", "/v2/models/mlp/versions/1%00", False),
            ("POST", "/v2/models/mlp/versions/01/infer", False),
            ("POST", "/v2/models/mlp/versions/+1/infer", False),
            ("POST", "/admin/models/mlp/versions/01/activate", True),
            ("POST", "/admin/models/mlp%00x/versions/1/activate", True),
            ("GET", "/admin/jobs/01", True),
        ]
        for method, path, admin in cases:
            st, _, data = d.request(method, path, admin=admin,
                                    body=body if method == "POST" and
                                    not admin else None)
            tap.ok(st in (400, 404) and json_body(data) is not None,
                   "%s %s: %d with a JSON error" % (method, path, st),
                   data[:200])
        st, _, _ = d.get("/v2/models/mlp/versions/1")
        tap.eq(st, 200, "version 1 spelt 1 serves")
        st, _, data = d.post("/v2/repository/models/nope/load", b"",
                             admin=True)
        tap.eq(st, 404, "loading a missing model: 404")
        st, _, data = d.post("/v2/repository/models/nope/load", b"",
                             admin=True)
        tap.eq(st, 404, "again: 404")
        st, _, data = d.post("/v2/repository/index", b"", admin=True)
        idx = json_body(data) or []
        tap.ok(sorted(e["name"] for e in idx) == ["mlp"],
               "the index lists no phantom entry", idx)
        st, _, _ = d.get("/admin/models/nope/versions", admin=True)
        tap.eq(st, 404, "nor does the versions list know it")
        st, _, _ = d.get("/v2/models/nope")
        tap.eq(st, 404, "nor the data plane")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def binary_request(x, name="input"):
    hdr = json.dumps({"inputs": [{
        "name": name, "shape": list(x.shape), "datatype": "FP32",
        "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return hdr + x.tobytes(), {"Inference-Header-Content-Length":
                               str(len(hdr))}


def test_non_finite():
    """reject_non_finite refuses NaN and Inf inputs (JSON and binary) with
    400 naming the input and element; without it they pass to the
    kernels, and NaN propagates as in PyTorch: the row holding it gives
    NaN logits, the other row finite ones (tests/engine/test_nan.py
    compares op by op)."""
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    for name, cfg in (("strict", {"reject_non_finite": True}),
                      ("lax", None)):
        d_ = os.path.join(root, name)
        os.makedirs(os.path.join(d_, "1"))
        shutil.copy(MLP, os.path.join(d_, "1", "model.onnx"))
        if cfg:
            with open(os.path.join(d_, "config.json"), "w") as f:
                json.dump(cfg, f)
    with np.load(HELD) as z:
        x = z["input"][:2].copy()
    nan = x.copy()
    nan[1, 5] = np.nan
    inf = x.copy()
    inf[0, 3] = -np.inf
    with Daemon(ADMIN, repository=root) as d:
        # Python's json writes NaN and -Infinity; the parser takes them.
        for what, arr in (("NaN", nan), ("-Infinity", inf)):
            text = json.dumps({"inputs": [{
                "name": "input", "shape": list(arr.shape),
                "datatype": "FP32", "data": arr.ravel().tolist()}]})
            tap.ok(what in text, "json.dumps writes %s" % what)
            st, _, data = d.post("/v2/models/strict/infer", text.encode())
            err = (json_body(data) or {}).get("error", "")
            at = int(np.flatnonzero(~np.isfinite(arr.ravel()))[0])
            tap.ok(st == 400 and "input 'input'" in err and
                   "element %d" % at in err,
                   "strict, JSON %s: 400 naming the element (%s)"
                   % (what, err))
            st, hd, data = d.post("/v2/models/lax/infer", text.encode())
            tap.eq(st, 200, "lax, JSON %s: passed to the model" % what)
            if what == "NaN" and st == 200:
                _, outs = kserve.parse_response(data, hd)
                y = next(iter(outs.values()))
                tap.ok(np.isnan(y[1]).all() and np.isfinite(y[0]).all(),
                       "lax, NaN in row 1: its logits are NaN, row 0's "
                       "finite (as PyTorch)", y)
            body, hdrs = binary_request(arr)
            st, _, data = d.post("/v2/models/strict/infer", body,
                                 headers=hdrs)
            tap.eq(st, 400, "strict, binary %s: 400" % what)
        body, hdrs = binary_request(x)
        st, _, _ = d.post("/v2/models/strict/infer", body, headers=hdrs)
        tap.eq(st, 200, "strict, finite binary input: 200")
        st, _, _ = d.post("/v2/models/strict/infer",
                          kserve.json_request({"input": x}))
        tap.eq(st, 200, "strict, finite JSON input: 200")
        st, _, data = d.get("/metrics")
        tap.ok(b'slimserve_model_requests_total{model="strict",version="1",'
               b'result="bad_input"} 4' in data,
               "the refusals count as bad_input")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_non_finite_default():
    """--reject-non-finite makes refusing NaN/Inf the default; a model's
    config.json saying "reject_non_finite": false still wins."""
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    for name, cfg in (("plain", None), ("optout",
                                        {"reject_non_finite": False})):
        d_ = os.path.join(root, name)
        os.makedirs(os.path.join(d_, "1"))
        shutil.copy(MLP, os.path.join(d_, "1", "model.onnx"))
        if cfg is not None:
            with open(os.path.join(d_, "config.json"), "w") as f:
                json.dump(cfg, f)
    with np.load(HELD) as z:
        x = z["input"][:2].copy()
    x[0, 7] = np.inf
    body, hdrs = binary_request(x)
    with Daemon(ADMIN + ["--reject-non-finite"], repository=root) as d:
        st, _, data = d.post("/v2/models/plain/infer", body, headers=hdrs)
        tap.ok(st == 400 and "element 7" in
               (json_body(data) or {}).get("error", ""),
               "--reject-non-finite: a model without the key refuses Inf "
               "(%s)" % st, data)
        st, _, _ = d.post("/v2/models/optout/infer", body, headers=hdrs)
        tap.eq(st, 200, "a model saying reject_non_finite: false serves it")
        tap.eq(d.stop(), 0, "clean exit")
    with Daemon(ADMIN, repository=root) as d:
        st, _, _ = d.post("/v2/models/plain/infer", body, headers=hdrs)
        tap.eq(st, 200, "without the flag, the default is to serve it")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def main():
    for t in (test_names, test_leftovers, test_token, test_non_utf8_model,
              test_non_finite, test_non_finite_default, test_symlinks, test_big_files, test_fifo,
              test_loop_lag):
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
