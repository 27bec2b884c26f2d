# SPDX-License-Identifier: Apache-2.0
"""Serving benchmarks: slimserve under wrk, in two parts.

--part scale (the default; bench/serve_scale.py, issue 9): slimserve vs
nginx `return 200` and a Node + onnxruntime-node peer on MNIST-sized
models, JSON and binary bodies, batching on/off, 1 vs 2 HTTP loops and a
per-core cost report.  See bench/serve_scale.py and bench/README.md.

--part layer: what the server layer costs, slimserve vs the bare engine.
For each fixture (MLP, CNN, transformer; opset 13) this starts slimserve on
loopback twice -- dynamic batching on (max_batch_size 32, a small queue
delay) and off (max_batch_size 1: every request is its own batch) -- and
drives POST /v2/models/<m>/infer with wrk (bench/serve/post.lua: one fixed
batch-1 body, KServe JSON or Triton binary tensors) at each concurrency for
a fixed duration.  Around every cell it reads slimserve_batch_size's _sum
and _count from /metrics, so the table shows the average batch the batcher
formed; then slimserve-infer runs the same model at batch 1 and at each
average batch size (rounded) with the same thread count, which gives the
engine's own throughput beside the served one.  GET /v2/health/live under
the same wrk load is the HTTP ceiling.  Last, the hot-swap cell: the MLP
with versions 1 and 2, wrk at a fixed concurrency, with and without 20
activations posted to the admin listener during the run.

It prints the tables and the issue's four target ratios.  The load
generator runs on the same machine as the server (loopback), so on a
small box they compete for the cores: the header says how many there are
and what the load average was.

    /usr/bin/python3 bench/serve.py --build BUILDDIR [--part layer] ...

(bench/serve.sh is the short form.)  Needs wrk and numpy; the scale part
needs more (bench/serve_scale.py).
"""

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import kserve  # noqa: E402

FIX = os.path.join(TOP, "tests", "fixtures")
MLP_V2 = os.path.join(TOP, "tests", "integration", "data", "mlp_v2.onnx")
LUA_POST = os.path.join(TOP, "bench", "serve", "post.lua")
LUA_GET = os.path.join(TOP, "bench", "serve", "get.lua")
LISTEN_RE = re.compile(r"listening http=(\S+):(\d+) admin=(\S+):(-?\d+)")
SUMMARY_RE = re.compile(r"^SSBENCH (.*)$", re.M)
# Server-side histograms read around each cell (means over the cell).
HISTOGRAMS = ("slimserve_batch_size", "slimserve_queue_duration_seconds",
              "slimserve_compute_duration_seconds",
              "slimserve_model_request_duration_seconds")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- the daemon ----------------------------------------------------------

class Server:
    """One slimserve process on loopback serving a throwaway repository."""

    def __init__(self, build, repo, threads, admin=False, http_threads=None,
                 cpus=None):
        """threads/http_threads None: the daemon's default (one per serving
        core); cpus: a taskset CPU list the daemon is started on (taskset
        execs it, so self.proc.pid is the daemon's)."""
        self.tmp = tempfile.mkdtemp(prefix="ss-bench-")
        self.logpath = os.path.join(self.tmp, "slimserve.log")
        argv = ["taskset", "-c", cpus] if cpus else []
        argv += [os.path.join(build, "server", "slimserve"),
                 "--http-address=127.0.0.1", "--http-port=0",
                 "--model-repository=" + repo,
                 # No compression jobs here: serving may use every CPU.
                 "--job-threads=0", "--log-level=notice"]
        if threads is not None:
            argv.append("--threads=%d" % threads)
        if http_threads is not None:
            argv.append("--http-threads=%d" % http_threads)
        argv += ["--admin-port=0", "--admin-insecure"] if admin else \
            ["--admin-port=-1"]
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.logf, cwd=self.tmp)
        self.port = self.admin_port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log())
            if m:
                self.port = int(m.group(2))
                self.admin_port = int(m.group(4))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        while self.port and time.monotonic() < deadline:
            if self.request("GET", "/v2/health/ready")[0] == 200:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log_text = self.log()
        self.stop()
        raise RuntimeError("slimserve did not become ready:\n" + log_text)

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def request(self, method, path, body=None, admin=False):
        port = self.admin_port if admin else self.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def stats(self, model):
        """-> {histogram: (sum, count)} for the model, over its versions."""
        for _ in range(50):
            st, data = self.request("GET", "/metrics")
            if st == 200 or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if st != 200:
            raise RuntimeError("GET /metrics answered %d (daemon %s); log:\n%s"
                               % (st, "exited %s" % self.proc.returncode
                                  if self.proc.poll() is not None
                                  else "running", self.log()[-3000:]))
        out = {h: [0.0, 0.0] for h in HISTOGRAMS}
        pat = re.compile(r'^(slimserve_\w+)_(sum|count)\{[^}]*'
                         r'model="%s"[^}]*\} (\S+)$' % re.escape(model), re.M)
        for name, kind, val in pat.findall(data.decode()):
            if name in out:
                out[name][kind == "count"] += float(val)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def make_repo(root, model, versions, cfg):
    for v, src in versions.items():
        d = os.path.join(root, model, str(v))
        os.makedirs(d, exist_ok=True)
        shutil.copy(src, os.path.join(d, "model.onnx"))
    with open(os.path.join(root, model, "config.json"), "w") as f:
        json.dump(cfg, f)


# ---- load ----------------------------------------------------------------

def wrk(url, duration, conns, lua, args=(), threads=1, cpus=None):
    """-> dict of the SSBENCH summary (rps added; wrk_cpu_s: the CPU time
    wrk itself used).  cpus: a taskset CPU list to pin wrk to."""
    argv = ["taskset", "-c", cpus] if cpus else []
    argv += ["wrk", "-t%d" % min(threads, conns), "-c%d" % conns,
             "-d%ds" % duration, "--latency", "--timeout", "10s", "-s", lua,
             url]
    if args:
        argv += ["--"] + list(args)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=duration + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = SUMMARY_RE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError("wrk failed:\n%s%s" % (p.stdout, p.stderr))
    r = {k: float(v) for k, v in
         (kv.split("=") for kv in m.group(1).split())}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = int(r["connect"] + r["read"] + r["write"] + r["status"] +
                      r["timeout"])
    r["wrk_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime +
                                                      ru0.ru_stime)
    return r


class Bodies:
    """Request bodies on disk for wrk: {fmt: (path, wrk args)}."""

    def __init__(self, tmp, model, sample):
        self.files = {}
        inputs = {sample[0]: sample[1]}
        path = os.path.join(tmp, model + ".json")
        with open(path, "wb") as f:
            f.write(kserve.json_request(inputs))
        self.files["json"] = (path, [path])
        body, hdrs = kserve.binary_request(inputs, binary_output=True)
        path = os.path.join(tmp, model + ".bin")
        with open(path, "wb") as f:
            f.write(body)
        self.files["binary"] = (path, [path,
                                       hdrs["Inference-Header-Content-Length"]])

    def args(self, fmt):
        return self.files[fmt][1]


# ---- the engine ----------------------------------------------------------

class Engine:
    """slimserve-infer medians per (model, batch), cached."""

    def __init__(self, build, tmp, threads, budget_s):
        self.cli = os.path.join(build, "engine", "tools", "slimserve-infer")
        self.tmp = tmp
        self.threads = threads
        self.budget_s = budget_s
        self.cache = {}

    def _run(self, onnx, npz, repeat):
        p = subprocess.run([self.cli, "--model", onnx, "--input", npz,
                            "--repeat", str(repeat), "--warmup", "3",
                            "--threads", str(self.threads)],
                           capture_output=True, text=True, timeout=600)
        m = re.search(r"latency_ms median=(\S+) min=(\S+)", p.stdout)
        if p.returncode != 0 or not m:
            raise RuntimeError("slimserve-infer failed: " + p.stderr[-2000:])
        return float(m.group(1)), float(m.group(2))

    def median_ms(self, model, batch):
        key = (model, batch)
        if key in self.cache:
            return self.cache[key]
        onnx = os.path.join(FIX, model + "_op13", "model.onnx")
        with np.load(os.path.join(FIX, model + "_op13", "batch64.npz")) as z:
            arrays = {k: z[k] for k in z.files}
        rows = {}
        for k, a in arrays.items():
            reps = -(-batch // a.shape[0])
            rows[k] = np.concatenate([a] * reps)[:batch]
        npz = os.path.join(self.tmp, "%s_b%d.npz" % (model, batch))
        np.savez(npz, **rows)
        # The probe's minimum: a preempted run must not shrink the count.
        probe = self._run(onnx, npz, 5)[1]
        repeat = int(min(3000, max(30, self.budget_s * 1000 / max(probe,
                                                                  1e-3))))
        med = self._run(onnx, npz, repeat)[0]
        self.cache[key] = med
        log("  engine %s batch %d: median %.4f ms (%d runs)"
            % (model, batch, med, repeat))
        return med

    def samples_per_s(self, model, batch):
        return batch / (self.median_ms(model, batch) / 1e3)


# ---- the runs ------------------------------------------------------------

def first_sample(model):
    with np.load(os.path.join(FIX, model + "_op13", "batch1.npz")) as z:
        name = z.files[0]
        return name, z[name]


def run_model(a, model, bodies, results, ceiling):
    onnx = os.path.join(FIX, model + "_op13", "model.onnx")
    url_path = "/v2/models/%s/infer" % model
    modes = [("on", {"max_batch_size": a.max_batch,
                     "max_queue_delay_us": a.delay_us,
                     "instances": 1,
                     "queue": {"max_size": 4096}}),
             ("off", {"max_batch_size": 1, "instances": 1,
                      "queue": {"max_size": 4096}})]
    for batching, cfg in modes:
        repo = tempfile.mkdtemp(prefix="ss-bench-repo-")
        make_repo(repo, model, {1: onnx}, cfg)
        srv = Server(a.build, repo, a.threads)
        try:
            url = "http://127.0.0.1:%d%s" % (srv.port, url_path)
            # Warm-up: compiles the plans for the batch sizes the load forms.
            for c in sorted(set(a.concurrency), reverse=True):
                wrk(url, 1, c, LUA_POST, bodies.args("binary"))
            if ceiling is not None and not ceiling:
                hurl = "http://127.0.0.1:%d/v2/health/live" % srv.port
                for c in a.concurrency:
                    ceiling[c] = wrk(hurl, a.duration, c, LUA_GET)
                    log("  health c=%d: %.0f req/s p50 %d us"
                        % (c, ceiling[c]["rps"], ceiling[c]["p50_us"]))
            for fmt in ("binary", "json"):
                for c in a.concurrency:
                    m0 = srv.stats(model)
                    r = wrk(url, a.duration, c, LUA_POST, bodies.args(fmt))
                    m1 = srv.stats(model)
                    means = {}
                    for h in HISTOGRAMS:
                        ds = m1[h][0] - m0[h][0]
                        dn = m1[h][1] - m0[h][1]
                        means[h] = ds / dn if dn > 0 else 0.0
                    r["avg_batch"] = means["slimserve_batch_size"]
                    r["queue_us"] = means[
                        "slimserve_queue_duration_seconds"] * 1e6
                    r["compute_us"] = means[
                        "slimserve_compute_duration_seconds"] * 1e6
                    r["model_req_us"] = means[
                        "slimserve_model_request_duration_seconds"] * 1e6
                    r["samples_per_s"] = r["rps"] * 1  # batch-1 requests
                    results[(model, batching, fmt, c)] = r
                    log("  %s batching %s %s c=%d: %.0f req/s p50 %d us "
                        "p99 %d us avg batch %.2f errors %d"
                        % (model, batching, fmt, c, r["rps"], r["p50_us"],
                           r["p99_us"], r["avg_batch"], r["errors"]))
        finally:
            srv.stop()
            shutil.rmtree(repo, ignore_errors=True)


def run_swap(a, bodies):
    """-> [(wrk result without swaps, wrk result with, swaps that
    answered 200)], one per pair of runs."""
    repo = tempfile.mkdtemp(prefix="ss-bench-repo-")
    make_repo(repo, "mlp", {1: os.path.join(FIX, "mlp_op13", "model.onnx"),
                            2: MLP_V2},
              {"max_batch_size": a.max_batch,
               "max_queue_delay_us": a.delay_us, "instances": 1,
               "queue": {"max_size": 4096},
               "version_policy": {"all": {}}, "active_version": 1})
    srv = Server(a.build, repo, a.threads, admin=True)
    out = []
    try:
        url = "http://127.0.0.1:%d/v2/models/mlp/infer" % srv.port
        wrk(url, 1, a.swap_concurrency, LUA_POST, bodies.args("binary"))
        for _ in range(a.swap_runs):
            base = wrk(url, a.swap_duration, a.swap_concurrency, LUA_POST,
                       bodies.args("binary"))
            oks = []

            def swapper():
                gap = a.swap_duration / (a.swaps + 1)
                for k in range(a.swaps):
                    time.sleep(gap)
                    v = 2 if k % 2 == 0 else 1
                    st, _ = srv.request(
                        "POST", "/admin/models/mlp/versions/%d/activate" % v,
                        b"", admin=True)
                    oks.append(st == 200)

            t = threading.Thread(target=swapper)
            t.start()
            swap = wrk(url, a.swap_duration, a.swap_concurrency, LUA_POST,
                       bodies.args("binary"))
            t.join()
            out.append((base, swap, sum(oks)))
            log("  swap run: p99 %d us without, %d us with %d/%d swaps "
                "(errors %d/%d)" % (base["p99_us"], swap["p99_us"], sum(oks),
                                    a.swaps, base["errors"],
                                    swap["errors"]))
    finally:
        srv.stop()
        shutil.rmtree(repo, ignore_errors=True)
    return out


# ---- report --------------------------------------------------------------

def verdict(ok):
    return "MET" if ok else "MISSED"


def report(a, results, ceiling, engine, swaps, env):
    print("slimserve serving benchmark (bench/serve.py)")
    print("machine: %s; load generator wrk -t1 on the same cores (loopback)"
          % env["cpus"])
    print("load average before: %s   after: %s; priority: %s"
          % (env["load0"], env["load1"], env["priority"]))
    print("server: --threads=%d (oneDNN threads per executor), 1 instance, "
          "1 loop thread; batching on = max_batch_size %d, "
          "max_queue_delay_us %d; off = max_batch_size 1"
          % (a.threads, a.max_batch, a.delay_us))
    print("engine: slimserve-infer --threads %d, median of runs; cells %d s "
          "each; requests are batch 1" % (a.threads, a.duration))
    print("environment: OMP_NUM_THREADS=%s"
          % os.environ.get("OMP_NUM_THREADS", "(unset)"))
    print()
    if ceiling:
        print("HTTP ceiling, GET /v2/health/live:")
        for c in sorted(ceiling):
            r = ceiling[c]
            print("  c=%-3d %9.0f req/s   p50 %6d us   p99 %6d us"
                  % (c, r["rps"], r["p50_us"], r["p99_us"]))
        print()
    hdr = ("%-8s %-6s %4s %9s %9s %8s %8s %6s %11s %7s %7s %7s %7s %4s"
           % ("batching", "format", "conc", "req/s", "samples/s", "p50_us",
              "p99_us", "avg_b", "engine_s/s", "srv/eng", "q_us", "run_us",
              "srv_us", "err"))
    for model in a.models:
        e1 = engine.median_ms(model, 1)
        print("%s: engine batch 1 median %.1f us = %.0f samples/s"
              % (model, e1 * 1e3, 1e3 / e1))
        print("  " + hdr)
        for batching in ("on", "off"):
            for fmt in ("binary", "json"):
                for c in a.concurrency:
                    r = results.get((model, batching, fmt, c))
                    if r is None:
                        continue
                    b = max(1, int(round(r["avg_batch"])))
                    es = engine.samples_per_s(model, b)
                    print("  %-8s %-6s %4d %9.0f %9.0f %8d %8d %6.2f "
                          "%11.0f %7.2f %7.0f %7.0f %7.0f %4d"
                          % (batching, fmt, c, r["rps"],
                             r["samples_per_s"], r["p50_us"], r["p99_us"],
                             r["avg_batch"], es,
                             r["samples_per_s"] / es, r["queue_us"],
                             r["compute_us"], r["model_req_us"],
                             r["errors"]))
        print()
    print("p50_us/p99_us: wrk's end-to-end latency.  avg_b: mean batch the "
          "batcher formed.\nengine_s/s: slimserve-infer samples/s at avg_b "
          "rounded; srv/eng: served samples/s / engine_s/s.\nServer-side "
          "means from /metrics: q_us queue wait per request, run_us per "
          "batch\n(gather, execute, split), srv_us per request from "
          "admission to answer.")
    print()
    print("Targets")
    c = max(a.concurrency)
    lo = min(a.concurrency)
    for model in a.models:
        r = results.get((model, "on", "binary", c))
        if r:
            b = max(1, int(round(r["avg_batch"])))
            ratio = r["samples_per_s"] / engine.samples_per_s(model, b)
            print("  1. %-11s c=%d batching binary / engine at batch %d: "
                  "%.2f (target >= 0.70) %s"
                  % (model, c, b, ratio, verdict(ratio >= 0.70)))
    for model in a.models:
        on = results.get((model, "on", "binary", c))
        off = results.get((model, "off", "binary", c))
        if on and off:
            ratio = on["rps"] / off["rps"]
            tgt = " (target >= 2x) %s" % verdict(ratio >= 2) \
                if model == "cnn" else " (no target)"
            print("  2. %-11s c=%d batching on / off: %.2fx%s"
                  % (model, c, ratio, tgt))
    for model in a.models:
        e1 = engine.median_ms(model, 1) * 1e3
        for batching in ("off", "on"):
            r = results.get((model, batching, "binary", lo))
            if r:
                ov = r["p50_us"] - e1
                tgt = " (target <= 50 us) %s" % verdict(ov <= 50) \
                    if batching == "off" else \
                    " (includes the %d us queue delay)" % a.delay_us
                print("  3. %-11s c=%d binary, batching %-3s: p50 %d us - "
                      "engine %.1f us = %.1f us%s"
                      % (model, lo, batching, r["p50_us"], e1, ov, tgt))
                if batching == "off":
                    print("     server side only (mean admission-to-answer "
                          "%.0f us - engine): %.1f us"
                          % (r["model_req_us"], r["model_req_us"] - e1))
    if ceiling and lo in ceiling:
        print("     (HTTP floor: GET /v2/health/live p50 at c=%d is %d us)"
              % (lo, ceiling[lo]["p50_us"]))
    if swaps:
        ratios = []
        for base, swap, ok in swaps:
            ratios.append(swap["p99_us"] / max(base["p99_us"], 1))
            print("  4. mlp c=%d %ds: p99 %d us without swaps (%.0f req/s), "
                  "%d us with %d swaps (%.0f req/s): %.2fx; errors %d/%d"
                  % (a.swap_concurrency, a.swap_duration, base["p99_us"],
                     base["rps"], swap["p99_us"], ok, swap["rps"],
                     ratios[-1], base["errors"], swap["errors"]))
        med = sorted(ratios)[len(ratios) // 2]
        print("     median ratio %.2fx (target <= 2x) %s"
              % (med, verdict(med <= 2)))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def boost(nice):
    """Raises this session's scheduling weight (and so its children's).

    With autogroup scheduling (kernel.sched_autogroup_enabled) a process's
    nice only counts inside its session, so a busy neighbour in another
    session takes half the cores whatever nice says; the session's
    autogroup nice is what weighs against them.  Needs CAP_SYS_NICE to go
    below 0; without it the run goes on at normal weight."""
    if nice == 0:
        return "normal"
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("%d" % nice)
        return "autogroup nice %d" % nice
    except OSError as e:
        log("cannot set the autogroup nice (%s): normal priority" % e)
        return "normal (autogroup nice failed)"


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--part", choices=("scale", "layer"), default="scale")
    part, rest = pre.parse_known_args()
    if part.part == "layer":
        return main_layer(rest)
    import serve_scale
    p = argparse.ArgumentParser(
        description=serve_scale.__doc__.split("\n")[0],
        epilog="--part layer runs the other part (the engine vs the "
        "server layer, hot swaps); see bench/README.md")
    p.add_argument("--part", choices=("scale", "layer"), default="scale")
    p.add_argument("--build", default=TOP, help="build directory")
    p.add_argument("--duration", type=int, default=4,
                   help="seconds per point and round")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--threads", type=int, default=None,
                   help="slimserve --threads (executors); default: the "
                   "daemon's, one per serving core")
    p.add_argument("--nice", type=int, default=-10,
                   help="autogroup nice for this session (0: leave it)")
    serve_scale.add_args(p)
    a = p.parse_args(rest)
    a.concurrency = [int(c) for c in a.concurrency.split(",") if c]
    serve_scale.main(a)


def main_layer(argv):
    p = argparse.ArgumentParser(
        description="What the server layer costs: slimserve under wrk vs "
        "the bare engine.")
    p.add_argument("--part", choices=("layer",), default="layer")
    p.add_argument("--build", default=TOP, help="build directory")
    p.add_argument("--duration", type=int, default=5,
                   help="seconds per cell")
    p.add_argument("--models", default="mlp,cnn,transformer")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--threads", type=int, default=1,
                   help="server --threads and slimserve-infer --threads")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--delay-us", type=int, default=0,
                   help="max_queue_delay_us with batching on")
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument("--swap-duration", type=int, default=10)
    p.add_argument("--swap-concurrency", type=int, default=32)
    p.add_argument("--swap-runs", type=int, default=3,
                   help="pairs of (without, with) swap runs; the median "
                   "ratio counts")
    p.add_argument("--no-swap", action="store_true")
    p.add_argument("--nice", type=int, default=-10,
                   help="autogroup nice for this session (0: leave it)")
    p.add_argument("--engine-seconds", type=float, default=1.5,
                   help="time budget per slimserve-infer measurement")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    a.concurrency = [int(c) for c in a.concurrency.split(",") if c]
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing (apt-get install wrk)")
    for exe in ("server/slimserve", "engine/tools/slimserve-infer"):
        if not os.access(os.path.join(a.build, exe), os.X_OK):
            sys.exit("%s is missing in %s: build first" % (exe, a.build))

    env = {"cpus": "%d cores" % os.cpu_count(), "load0": loadavg(),
           "priority": boost(a.nice)}
    tmp = tempfile.mkdtemp(prefix="ss-bench-")
    results, ceiling, swaps = {}, {}, []
    engine = Engine(a.build, tmp, a.threads, a.engine_seconds)
    try:
        for model in a.models:
            log("%s:" % model)
            bodies = Bodies(tmp, model, first_sample(model))
            run_model(a, model, bodies, results, ceiling)
            # The engine right after its cells, under the same background.
            engine.median_ms(model, 1)
            for (m, _, _, _), r in results.items():
                if m == model:
                    engine.median_ms(model, max(1, int(round(
                        r["avg_batch"]))))
        if not a.no_swap:
            log("hot swap:")
            swaps = run_swap(a, Bodies(tmp, "mlp", first_sample("mlp")))
        env["load1"] = loadavg()
        report(a, results, ceiling, engine, swaps, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
