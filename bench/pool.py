#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Threads, memory and batching of the shared executor pool, measured.

    bench/pool.py --build BUILDDIR models [--count 50,1000]
    bench/pool.py --build BUILDDIR load [--concurrency 8,64] [--duration 5]

models: makes N copies of conf/models/digits-mlp in a temporary repository,
starts the daemon on it and reports the time until /v2/health/ready says
200, the daemon's threads (/proc/PID/status Threads) and its RSS (VmRSS,
and per model).

load: serves conf/models/digits-mlp (its config.json, without "instances"
unless --instances is given) on both cores (--job-threads=0) and drives
it with wrk -t1 at each concurrency with a one-sample KServe JSON body;
reports req/s, p50/p99 and the average batch the executors formed
(slimserve_batch_size _sum/_count around the run).

Loopback only; every run is bounded in time.  Needs wrk for "load".
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(TOP, "conf", "models", "digits-mlp")
LUA_POST = os.path.join(TOP, "bench", "serve", "post.lua")
LISTEN_RE = re.compile(r"listening http=(\S+):(\d+) admin=(\S+):(-?\d+)")
SUMMARY_RE = re.compile(r"^SSBENCH (.*)$", re.M)


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return int(out["Threads"]), int(out["VmRSS"].split()[0]) * 1024


class Server:
    def __init__(self, build, repo, args=(), timeout=600):
        self.tmp = tempfile.mkdtemp(prefix="ss-pool-")
        self.logpath = os.path.join(self.tmp, "log")
        argv = [os.path.join(build, "server", "slimserve"),
                "--http-address=127.0.0.1", "--http-port=0",
                "--admin-port=-1", "--model-repository=" + repo,
                "--log-level=notice"] + list(args)
        self.logf = open(self.logpath, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.logf, cwd=self.tmp)
        self.port = None
        deadline = self.t0 + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.port is None:
                m = LISTEN_RE.search(self.log())
                if m:
                    self.port = int(m.group(2))
            elif self.request("GET", "/v2/health/ready")[0] == 200:
                self.ready_s = time.monotonic() - self.t0
                return
            time.sleep(0.02)
        text = self.log()
        self.stop()
        raise RuntimeError("slimserve did not become ready:\n" + text[-4000:])

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def request(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def histogram(self, name):
        """(sum, count) of a histogram over every series."""
        _, text = self.request("GET", "/metrics")
        s = n = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + "_sum"):
                s += float(line.split()[-1])
            elif line.startswith(name + "_count"):
                n += float(line.split()[-1])
        return s, n

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logf.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def copy_model(repo, name, cfg=None):
    dst = os.path.join(repo, name)
    os.makedirs(os.path.join(dst, "1"))
    shutil.copy(os.path.join(DIGITS, "1", "model.onnx"),
                os.path.join(dst, "1", "model.onnx"))
    if cfg is None:
        shutil.copy(os.path.join(DIGITS, "config.json"),
                    os.path.join(dst, "config.json"))
    else:
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f)


def run_models(a):
    weights = os.path.getsize(os.path.join(DIGITS, "1", "model.onnx"))
    print("%6s %8s %8s %10s %12s %10s" % ("models", "ready_s", "threads",
                                          "rss_MB", "rss/model_MB",
                                          "onnx_MB"))
    for n in a.count:
        repo = tempfile.mkdtemp(prefix="ss-pool-repo-")
        try:
            for i in range(n):
                copy_model(repo, "m%04d" % i)
            srv = Server(a.build, repo, a.server_args)
            try:
                time.sleep(0.5)
                threads, rss = proc_status(srv.proc.pid)
            finally:
                srv.stop()
            print("%6d %8.2f %8d %10.1f %12.2f %10.1f"
                  % (n, srv.ready_s, threads, rss / 2**20,
                     rss / 2**20 / n, weights * n / 2**20), flush=True)
        finally:
            shutil.rmtree(repo, ignore_errors=True)


def wrk(url, duration, conns, body_path):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency",
            "-s", LUA_POST, url, "--", body_path]
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=duration + 60)
    m = SUMMARY_RE.search(p.stdout)
    if p.returncode != 0 or m is None:
        raise RuntimeError("wrk failed:\n%s%s" % (p.stdout, p.stderr))
    r = dict(kv.split("=") for kv in m.group(1).split())
    r = {k: float(v) for k, v in r.items()}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def run_load(a):
    with open(os.path.join(DIGITS, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("instances", None)
    if a.instances is not None:
        cfg["instances"] = a.instances
    repo = tempfile.mkdtemp(prefix="ss-pool-repo-")
    body = os.path.join(repo, "body.json")
    try:
        copy_model(repo, "digits-mlp", cfg)
        srv = Server(a.build, repo, ["--job-threads=0"] + a.server_args)
        try:
            _, meta = srv.request("GET", "/v2/models/digits-mlp")
            inp = json.loads(meta)["inputs"][0]
            shape = [1] + [int(d) for d in inp["shape"][1:]]
            x = np.random.default_rng(1).random(shape, dtype=np.float32)
            with open(body, "w") as f:
                json.dump({"inputs": [{
                    "name": inp["name"], "shape": shape,
                    "datatype": "FP32",
                    "data": [float("%.9g" % v) for v in x.ravel()]}]}, f)
            url = "http://127.0.0.1:%d/v2/models/digits-mlp/infer" % srv.port
            wrk(url, 1, max(a.concurrency), body)     # warm-up
            print("%5s %10s %8s %8s %9s %7s" % ("conc", "req/s", "p50_us",
                                                "p99_us", "avg_batch",
                                                "non2xx"))
            for c in a.concurrency:
                s0, n0 = srv.histogram("slimserve_batch_size")
                r = wrk(url, a.duration, c, body)
                s1, n1 = srv.histogram("slimserve_batch_size")
                print("%5d %10.0f %8d %8d %9.2f %7d"
                      % (c, r["rps"], r["p50_us"], r["p99_us"],
                         (s1 - s0) / (n1 - n0) if n1 > n0 else 0,
                         r["status"]), flush=True)
            threads, rss = proc_status(srv.proc.pid)
            print("threads %d rss_MB %.1f" % (threads, rss / 2**20))
        finally:
            srv.stop()
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def cpu_line():
    """The CPU model and the ISA flags that pick oneDNN's kernels: numbers
    from different machines do not compare."""
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = [x for x in line.split(":", 1)[1].split()
                             if x.startswith(("avx512", "amx", "avx_vnni"))]
    except OSError:
        pass
    return "%s, %d CPUs, ISA: %s" % (model, os.cpu_count() or 0,
                                     " ".join(flags) or "no avx512/amx")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=TOP, help="build directory")
    p.add_argument("--server-arg", dest="server_args", action="append",
                   default=[], help="extra daemon flag (repeatable)")
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("models")
    m.add_argument("--count", default="50,1000")
    ld = sub.add_parser("load")
    ld.add_argument("--concurrency", default="8,64")
    ld.add_argument("--duration", type=int, default=5)
    ld.add_argument("--instances", type=int, default=None)
    a = p.parse_args()
    print("# " + cpu_line())
    if a.what == "models":
        a.count = [int(c) for c in a.count.split(",") if c]
        run_models(a)
    else:
        a.concurrency = [int(c) for c in a.concurrency.split(",") if c]
        if shutil.which("wrk") is None:
            sys.exit("wrk is missing (apt-get install wrk)")
        run_load(a)


if __name__ == "__main__":
    main()
