#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Soak: hours of a daemon's life in minutes (issue 10).

Starts the daemon built in --build (two HTTP loop threads) on a fresh
repository of three models (mlp with two versions, cnn, transformer) and
runs, for --minutes (30 by default):

  good clients    JSON and binary inference requests on the three models
                  (each answer must be 200 with the expected output shape)
  bad clients     malformed JSON, wrong shapes, wrong datatypes, token ids
                  out of the transformer's vocabulary, unknown models:
                  each must get its 4xx (400 or 404), nothing else
  hot swaps       mlp activated to version 1 and rolled back, every
                  --swap-s seconds (3)
  jobs            a ptq compression job on mlp at the start and at the
                  middle of the run

Every minute it prints one row: the daemon's RSS, open fds and threads
(from /proc, sampled every 5 s, the minute's largest), requests, the
expected 4xx, unexpected answers (any other status, a wrong shape, a
connection error) by kind, and the p99 latency of good requests.  The
verdict: 0 unexpected answers, every swap and job answered as expected,
and RSS, fds and threads flat after the warm-up (the first 20% of the
minutes, at least 2; before the clock starts, every batch size of
every model is compiled once): every later minute within +-5% of the
first minute after it (fds also within +-(clients + 3) of it: each client's
connection in flight is one).  Exit status 0 when the verdict is PASS,
1 otherwise.

Usage: bench/soak.py [--build DIR] [--minutes N] [--swap-s S]
                     [--clients N]
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from pool import cpu_line  # the CPU model and ISA, as every bench prints

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import daemon as daemon_mod  # noqa: E402
import kserve  # noqa: E402

FIX = os.path.join(TOP, "tests", "fixtures")
MODELS = {
    # name: (fixture, input name, held-out file, classes)
    "mlp": ("mlp_op13", "input", "mlp_heldout.npz"),
    "cnn": ("cnn_op13", "input", "cnn_heldout.npz"),
    "transformer": ("transformer_op13", "input_ids",
                    "transformer_heldout.npz"),
}


def make_repo(root):
    for name, (fix, _, held) in MODELS.items():
        d = os.path.join(root, name)
        versions = (1, 2) if name == "mlp" else (1,)
        for v in versions:
            os.makedirs(os.path.join(d, str(v)))
            shutil.copy(os.path.join(FIX, fix, "model.onnx"),
                        os.path.join(d, str(v), "model.onnx"))
        if name == "mlp":
            shutil.copy(os.path.join(FIX, "digits", "mlp_calib.npz"),
                        os.path.join(d, "calib.npz"))
            shutil.copy(os.path.join(FIX, "digits", held),
                        os.path.join(d, "val.npz"))
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"version_policy": {"all": {}}}, f)


class Stats:
    """Counts per minute, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = {}
        self.unexpected_samples = []

    def row(self, minute):
        return self.rows.setdefault(minute, {
            "requests": 0, "good": 0, "expected_4xx": {}, "unexpected": {},
            "lat": [], "rss_kb": 0, "fds": 0, "threads": 0, "swaps": 0,
            "jobs": 0})

    def add(self, minute, kind, ok, expected_4xx=None, lat=None,
            detail=None):
        with self.lock:
            r = self.row(minute)
            r["requests"] += 1
            if not ok:
                r["unexpected"][kind] = r["unexpected"].get(kind, 0) + 1
                if len(self.unexpected_samples) < 20:
                    self.unexpected_samples.append((minute, kind, detail))
            elif expected_4xx is not None:
                k = "%s %d" % (kind, expected_4xx)
                r["expected_4xx"][k] = r["expected_4xx"].get(k, 0) + 1
            else:
                r["good"] += 1
                r["lat"].append(lat)


class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.stop_ev = threading.Event()
        self.t0 = None
        self.inputs = {}
        for name, (_, inp, held) in MODELS.items():
            with np.load(os.path.join(FIX, "digits", held)) as z:
                key = "input_ids" if name == "transformer" else "input"
                self.inputs[name] = (inp, z[key][:64].copy())

    def minute(self):
        return int((time.monotonic() - self.t0) // 60)

    def post(self, path, body, headers=None, admin=False):
        t = time.monotonic()
        try:
            st, hd, data = self.d.post(path, body, headers=headers,
                                       admin=admin, timeout=30)
        except OSError as e:
            return None, {}, repr(e).encode(), time.monotonic() - t
        return st, hd, data, time.monotonic() - t

    # -- clients -----------------------------------------------------------
    def good(self, seed, binary):
        rng = np.random.default_rng(seed)
        names = sorted(MODELS)
        while not self.stop_ev.is_set():
            name = names[int(rng.integers(len(names)))]
            inp, x = self.inputs[name]
            n = int(rng.integers(1, 9))
            i = int(rng.integers(0, len(x) - n))
            batch = x[i:i + n]
            kind = "%s %s" % (name, "binary" if binary else "json")
            if binary:
                body, hdrs = kserve.binary_request({inp: batch})
            else:
                body, hdrs = kserve.json_request({inp: batch}), None
            st, hd, data, lat = self.post("/v2/models/%s/infer" % name,
                                          body, hdrs)
            ok = st == 200
            if ok:
                try:
                    _, outs = kserve.parse_response(data, hd)
                    out = next(iter(outs.values()))
                    ok = out.shape[0] == n and np.all(np.isfinite(out))
                except (ValueError, KeyError, StopIteration) as e:
                    ok, data = False, repr(e).encode()
            self.stats.add(self.minute(), kind, ok, lat=lat,
                           detail=(st, data[:200]))
            time.sleep(0.005)

    def bad(self, seed):
        rng = np.random.default_rng(seed)
        _, xm = self.inputs["mlp"]
        _, xt = self.inputs["transformer"]
        tok = xt[:2].copy()
        tok[1, 3] = 100000          # beyond the vocabulary
        cases = [
            ("malformed json", "/v2/models/mlp/infer",
             b'{"inputs": [{"name": "input", "shape": [1, 64], ', None,
             (400,)),
            ("wrong shape", "/v2/models/mlp/infer",
             kserve.json_request({"input": xm[:2, :60]}), None, (400,)),
            ("wrong datatype", "/v2/models/cnn/infer",
             kserve.json_request({"input": xm[:1].astype(np.int64)}), None,
             (400,)),
            ("token out of range", "/v2/models/transformer/infer",
             kserve.json_request({"input_ids": tok}), None, (400,)),
            ("binary size lie", "/v2/models/mlp/infer",
             kserve.binary_request({"input": xm[:1]})[0][:-8],
             kserve.binary_request({"input": xm[:1]})[1], (400,)),
            ("unknown model", "/v2/models/nope/infer",
             kserve.json_request({"input": xm[:1]}), None, (404,)),
        ]
        while not self.stop_ev.is_set():
            kind, path, body, hdrs, want = cases[int(rng.integers(
                len(cases)))]
            st, _, data, _ = self.post(path, body, hdrs)
            ok = st in want and (json_body(data) or {}).get("error")
            self.stats.add(self.minute(), "bad: " + kind, bool(ok),
                           expected_4xx=st, detail=(st, data[:200]))
            time.sleep(0.02)

    # -- the operator ------------------------------------------------------
    def swapper(self):
        i = 0
        while not self.stop_ev.wait(self.args.swap_s):
            i += 1
            if i % 2:
                path = "/admin/models/mlp/versions/1/activate"
            else:
                path = "/admin/models/mlp/rollback"
            st, _, data, _ = self.post(path, b"", admin=True)
            # 409: a job holds the model; it is a correct answer.
            ok = st in (200, 409)
            with self.stats.lock:
                self.stats.row(self.minute())["swaps"] += 1
            if not ok:
                self.stats.add(self.minute(), "swap", False,
                               detail=(st, data[:200]))

    def jobs(self):
        marks = [0.2, self.args.minutes * 30.0]    # seconds from start
        for at in marks:
            if self.stop_ev.wait(max(0.0, at - (time.monotonic() - self.t0))):
                return
            st, _, data, _ = self.post(
                "/admin/models/mlp/compress",
                json.dumps({"methods": ["ptq"],
                            "calibration": {"file": "calib.npz"},
                            "validation": {"file": "val.npz"}}).encode(),
                admin=True)
            job = (json_body(data) or {}).get("job")
            if st != 202 or job is None:
                self.stats.add(self.minute(), "job submit", False,
                               detail=(st, data[:200]))
                continue
            state = None
            while not self.stop_ev.wait(0.5):
                st, _, data = self.d.get("/admin/jobs/%d" % job, admin=True)
                state = (json_body(data) or {}).get("state")
                if state in ("succeeded", "failed", "rejected", "cancelled"):
                    break
            with self.stats.lock:
                self.stats.row(self.minute())["jobs"] += 1
            if state is not None and state not in ("succeeded", "rejected"):
                self.stats.add(self.minute(), "job", False,
                               detail=(state, data[:200]))

    def sampler(self):
        pid = self.d.proc.pid
        while not self.stop_ev.wait(5.0):
            try:
                with open("/proc/%d/status" % pid) as f:
                    st = dict(line.split(":", 1) for line in f
                              if ":" in line)
                rss = int(st["VmRSS"].split()[0])
                thr = int(st["Threads"])
                fds = len(os.listdir("/proc/%d/fd" % pid))
            except (OSError, KeyError, ValueError):
                continue
            with self.stats.lock:
                r = self.stats.row(self.minute())
                r["rss_kb"] = max(r["rss_kb"], rss)
                r["fds"] = max(r["fds"], fds)
                r["threads"] = max(r["threads"], thr)

    def prewarm(self):
        """Compiles every batch size of every model and mlp version once
        (the batcher keeps a plan per size): otherwise the rare sizes
        the batcher forms now and then compile through the whole run and
        RSS creeps up by their plans, which is warm-up, not a leak."""
        for swap in ("/admin/models/mlp/versions/1/activate",
                     "/admin/models/mlp/rollback"):
            for name in sorted(MODELS):
                inp, x = self.inputs[name]
                for n in range(1, 33):
                    self.d.post("/v2/models/%s/infer" % name,
                                kserve.json_request({inp: x[:n]}),
                                timeout=60)
            self.d.post(swap, b"", admin=True)

    # -- the run -----------------------------------------------------------
    def run(self):
        a = self.args
        daemon_mod.BINARY = os.path.join(a.build, "server", "slimserve")
        tmp = tempfile.mkdtemp(prefix="ss-soak.")
        root = os.path.join(tmp, "models")
        make_repo(root)
        threads = []
        with daemon_mod.Daemon(["--admin-insecure", "--http-threads=2"],
                               repository=root) as d:
            self.d = d
            self.prewarm()
            self.t0 = time.monotonic()
            for i in range(a.clients):
                threads.append(threading.Thread(
                    target=self.good, args=(i, i % 2 == 1), daemon=True))
            threads.append(threading.Thread(target=self.bad, args=(99,),
                                            daemon=True))
            for fn in (self.swapper, self.jobs, self.sampler):
                threads.append(threading.Thread(target=fn, daemon=True))
            for t in threads:
                t.start()
            printed = 0
            print("CPU: " + cpu_line(), flush=True)
            print(header(), flush=True)
            end = self.t0 + 60 * a.minutes
            while time.monotonic() < end and d.proc.poll() is None:
                time.sleep(1.0)
                while printed < self.minute():
                    print(fmt(printed, self.stats.rows.get(printed)),
                          flush=True)
                    printed += 1
            self.stop_ev.set()
            for t in threads:
                t.join(60)
            while printed < a.minutes:
                print(fmt(printed, self.stats.rows.get(printed)), flush=True)
                printed += 1
            alive = d.proc.poll() is None
            rc = d.stop()
            logs = d.logs()
        shutil.rmtree(tmp, ignore_errors=True)
        return verdict(self.stats, a, alive, rc, logs)


def json_body(data):
    try:
        return json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return None


def p99(lat):
    if not lat:
        return float("nan")
    s = sorted(lat)
    return s[max(0, int(len(s) * 0.99) - 1)]


def header():
    return ("min   RSS MB  fds thr  requests  good  exp4xx  unexp  "
            "p99 ms  swaps jobs")


def fmt(m, r):
    if r is None:
        return "%3d   (no data)" % m
    return "%3d %8.1f %4d %3d %9d %5d %7d %6d %7.1f %6d %4d" % (
        m, r["rss_kb"] / 1024.0, r["fds"], r["threads"], r["requests"],
        r["good"], sum(r["expected_4xx"].values()),
        sum(r["unexpected"].values()), p99(r["lat"]) * 1e3, r["swaps"],
        r["jobs"])


def verdict(stats, a, alive, rc, logs):
    rows = [stats.rows.get(m) for m in range(a.minutes)]
    problems = []
    if not alive:
        problems.append("the daemon died")
    if rc != 0:
        problems.append("the daemon exited with %s" % rc)
    unexp = {}
    exp4 = {}
    for r in rows:
        for k, v in (r or {}).get("unexpected", {}).items():
            unexp[k] = unexp.get(k, 0) + v
        for k, v in (r or {}).get("expected_4xx", {}).items():
            exp4[k] = exp4.get(k, 0) + v
    if unexp:
        problems.append("unexpected answers: %s" % unexp)
    warm = max(2, a.minutes // 5)
    sampled = [(m, r) for m, r in enumerate(rows)
               if m >= warm and r and r["rss_kb"]]
    if a.minutes > warm and len(sampled) >= 1:
        m0, r0 = sampled[0]
        # A connection per client thread may be open at a sample or not.
        for key, slack in (("rss_kb", 0), ("fds", a.clients + 3),
                           ("threads", 0)):
            base = r0[key]
            for m, r in sampled[1:]:
                if abs(r[key] - base) > max(0.05 * base, slack):
                    problems.append("%s not flat: %d at minute %d, %d at "
                                    "minute %d" % (key, base, m0, r[key],
                                                   m))
                    break
    print("expected 4xx by kind: %s" % json.dumps(exp4, sort_keys=True))
    print("unexpected by kind: %s" % json.dumps(unexp, sort_keys=True))
    for s in stats.unexpected_samples[:10]:
        print("  unexpected at minute %d, %s: %r" % s)
    good = sum(r["good"] for r in rows if r)
    allat = [x for r in rows if r for x in r["lat"]]
    print("good requests %d, p99 %.1f ms over the run; warm-up %d minutes"
          % (good, p99(allat) * 1e3, warm))
    if problems:
        print("VERDICT: FAIL\n  " + "\n  ".join(problems))
        print("daemon log tail:\n" + "\n".join(logs.splitlines()[-20:]))
        return 1
    print("VERDICT: PASS (0 unexpected errors; RSS, fds and threads flat "
          "within 5%% after minute %d)" % warm)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("top_builddir", "."),
                    help="the build directory (server/slimserve in it)")
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--swap-s", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4,
                    help="good clients (half JSON, half binary)")
    a = ap.parse_args()
    if a.minutes < 1:
        ap.error("--minutes must be >= 1")
    a.build = os.path.abspath(a.build)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("soak: %d minutes, %d good clients + 1 bad, swaps every %.1f s, "
          "load average %s" % (a.minutes, a.clients, a.swap_s,
                               open("/proc/loadavg").read().split()[0]),
          flush=True)
    return Soak(a).run()


if __name__ == "__main__":
    sys.exit(main())
