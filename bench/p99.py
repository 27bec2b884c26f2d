#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A/B of slimserve builds on one point of bench/serve.sh: the MNIST MLP,
KServe JSON (shortest float text), wrk -t1 at one concurrency; the builds
take turns, round by round, so that the machine's load falls on both
alike.  Prints req/s, p50, p99 and the server's CPU per request (all its
threads, schedstat) per round and their medians.

  bench/p99.py BUILD_A [BUILD_B ...] [--rounds 5] [--duration 4] [--conc 64]
               [--format json|json17|binary] [--http-threads N]

Loopback only; each server is stopped before the next starts.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
import pool  # noqa: E402  (cpu_line)
import serve  # noqa: E402
import serve_models  # noqa: E402
import serve_scale  # noqa: E402


def cpu_ns(pid):
    """CPU time of every thread of pid so far (schedstat, ns)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def wrk(port, args, conc, duration):
    argv = ["wrk", "-t1", "-c%d" % conc, "-d%ds" % duration, "--latency",
            "-s", os.path.join(HERE, "serve", "post.lua"),
            "http://127.0.0.1:%d/v2/models/mlp/infer" % port, "--"] + args
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=duration + 30).stdout
    for line in out.splitlines():
        if line.startswith("SSBENCH"):
            kv = dict(x.split("=") for x in line.split()[1:])
            n = int(kv["requests"])
            bad = int(kv["status"]) + int(kv["timeout"]) + int(kv["read"])
            return (n / (int(kv["duration_us"]) / 1e6),
                    int(kv["p50_us"]), int(kv["p99_us"]), bad)
    raise RuntimeError("no SSBENCH line from wrk:\n" + out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("builds", nargs="+")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--format", default="json")
    p.add_argument("--http-threads", type=int, default=None)
    p.add_argument("--nice", type=int, default=-10)
    a = p.parse_args()
    prio = serve.boost(a.nice)
    tmp = tempfile.mkdtemp(prefix="ss-p99-")
    try:
        models = serve_models.write_all(os.path.join(tmp, "models"))
        bodies = serve_scale.Bodies(tmp, models["image"])
        args = bodies.args("mlp", a.format)
        res = {b: [] for b in a.builds}
        print("CPU: %s" % pool.cpu_line())
        print("load average before: %s; %s" % (serve.loadavg(), prio))
        for r in range(a.rounds):
            for b in a.builds:
                repo = os.path.join(tmp, "repo-%d-%d" % (r, a.builds.index(b)))
                serve.make_repo(repo, "mlp", {1: models["mlp"]}, {})
                s = serve.Server(b, repo, None, http_threads=a.http_threads)
                try:
                    wrk(s.port, args, a.conc, 1)      # warm-up
                    c0 = cpu_ns(s.proc.pid)
                    x = wrk(s.port, args, a.conc, a.duration)
                    c1 = cpu_ns(s.proc.pid)
                    # The server's CPU per request: what the load on the
                    # machine changes least.
                    x = x + ((c1 - c0) / 1e3 / max(1, x[0] * a.duration),)
                finally:
                    s.stop()
                res[b].append(x)
                print("round %d %-28s %8.0f req/s p50 %5d us p99 %5d us "
                      "bad %d cpu %5.1f us/req" % ((r, b) + x), flush=True)
        print("load average after: %s" % serve.loadavg())
        for b in a.builds:
            xs = res[b]
            print("median %-28s %8.0f req/s p50 %5d us p99 %5d us cpu "
                  "%5.1f us/req" % (
                      b, statistics.median(x[0] for x in xs),
                      statistics.median(x[1] for x in xs),
                      statistics.median(x[2] for x in xs),
                      statistics.median(x[4] for x in xs)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
