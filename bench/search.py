#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Variant search vs the best single method, at the same accuracy budget.

Default (--models trained): three models large enough for a combination
to matter, trained by bench/search_models.py (python3-torch) on the
digits data: a 784-512-256-10 MLP, a wide CNN (64/128 channels) and a
d_model 128 transformer encoder, each WITH its training data, so the
search's space holds prune -> finetune -> ptq pipelines, distilled
students and its learned channel masks.  The single-method baseline is
the best that any one method reaches alone inside the budget in the same
run, with the training that method owns: structured pruning and
low-rank followed by finetune (their recovery; the same steps the
search gives them), distill (6 epochs, as the search), ptq, bf16, and
pruning/low-rank without recovery.  --models fixtures: the test
fixtures (MLP, CNN, transformer) without training data, as before.

For each model one daemon runs, through the admin API:
  - compress jobs for every single method at a few settings (ptq with its
    accuracy-aware fallback, bf16, structured pruning 10-50%, low-rank by
    ratio and by energy), each gated at the budget;
  - one optimize job (the search) at the same budget.
The source, every single method's passing variant and the search's best
are then timed side by side with slimserve-infer at batch 32 on one
thread, as jobs measure (interleaved rounds, median of the rounds'
medians): the best single method is the fastest passing variant in these
timings (not in the jobs' own, each made in another window of this
machine's load), and the ratio compares measurements from one window.
Also printed: the search's time to its first variant inside the budget,
its trials and how it stopped, and the load average.

--p99 PAIRS: serving p99 idle vs during a search instead.  A daemon with
--job-threads=1 serves the MLP under wrk (closed loop, bench/serve/post.lua,
KServe JSON batch 1) for --duration seconds, idle and while a search on the
transformer runs (time limit past the window, DELETEd after it); the
ratio is the median busy p99 over the median idle p99 (bench/compress.py's
wrk runner and the same method).  --conns (default 64) and --think-ms
(default 0: saturating) set the load: with a think time per connection the
clients leave the server capacity, as bench/compress.py --think-ms does.

    python3 bench/search.py [--build DIR] [--budget 0.01] [--time-limit 180]
    python3 bench/search.py --p99 3 [--duration 10] [--conns 64] [--think-ms 0]
                            [--daemon-arg=ARG]...
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
sys.path.insert(0, HERE)
import daemon  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import repo  # noqa: E402
from pool import cpu_line  # noqa: E402

import numpy as np  # noqa: E402

try:
    import search_models  # noqa: E402 (python3-torch)
except ImportError:
    search_models = None

FIX = os.path.join(TOP, "tests", "fixtures")

SINGLES = [
    ("ptq", "ptq"),
    ("bf16", "bf16"),
] + [("prune %d%%" % int(s * 100),
      {"method": "prune", "params": {"kind": "structured", "sparsity": s}})
     for s in (0.1, 0.2, 0.3, 0.5)] + [
    ("lowrank ratio %g" % r, {"method": "lowrank", "params": {"ratio": r}})
    for r in (0.25, 0.5)] + [
    ("lowrank energy %g" % e, {"method": "lowrank", "params": {"energy": e}})
    for e in (0.9, 0.99)]


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def job(d, path, body, timeout):
    st, _, data = d.post(path, json.dumps(body), admin=True)
    js = json_body(data) or {}
    if st != 202:
        return {"state": "refused", "error": js.get("error")}
    return d.wait_job(js["job"], timeout=timeout)


def time_b32(build, onnx, inputs, repeat):
    out = subprocess.run(
        [os.path.join(build, "engine", "tools", "slimserve-infer"),
         "--model", onnx, "--input", inputs, "--repeat", str(repeat),
         "--warmup", "5", "--threads", "1"], capture_output=True,
        text=True, check=True)
    for tok in out.stdout.split():
        if tok.startswith("median="):
            return float(tok.split("=")[1])
    raise RuntimeError(out.stdout + out.stderr)


def bench(kind, args):
    tmp = tempfile.mkdtemp(prefix="ss-bench-search-")
    try:
        return run(kind, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# What a method alone reaches when it owns its recovery training: the
# same settings the search's pipelines use (compress/search_cfg.c:
# 120 steps of batch 64, 2 to 8 epochs), set per model in run().
FT = {"method": "finetune", "params": {"epochs": 2}}


def ft_epochs(rows, batch=64, steps=120):
    per = rows // min(batch, rows)
    return min(8, max(2, -(-steps // per) if per else 8))
TRAINED_SINGLES = SINGLES + [
    ("prune %d%% + finetune" % int(s * 100),
     [{"method": "prune", "params": {"kind": "structured", "sparsity": s}},
      FT]) for s in (0.25, 0.5, 0.75)] + [
    ("lowrank ratio %g + finetune" % r,
     [{"method": "lowrank", "params": {"ratio": r}}, FT])
    for r in (0.125, 0.25, 0.5)] + [
    ("lowrank ratio 0.125", {"method": "lowrank",
                             "params": {"ratio": 0.125}})] + [
    ("distill width %g" % w,
     {"method": "distill", "params": {"student": {"width": w},
                                      "epochs": 6}})
    for w in (0.5, 0.75)]


def run(kind, args, tmp):
    if args.models == "trained":
        src = search_models.make(args.model_dir, kind)
        data = {f: os.path.join(src, f)
                for f in ("calib.npz", "val.npz", "train.npz")}
        onnx_src = os.path.join(src, "model.onnx")
    else:
        data = {"calib.npz": os.path.join(FIX, "digits",
                                          "%s_calib.npz" % kind),
                "val.npz": os.path.join(FIX, "digits",
                                        "%s_heldout.npz" % kind)}
        onnx_src = os.path.join(FIX, "%s_op13" % kind, "model.onnx")
    root = repo.with_model(os.path.join(tmp, "m"), name=kind,
                           onnx=onnx_src, files=data)
    with np.load(data["val.npz"]) as z:
        np.savez(os.path.join(tmp, "b32.npz"),
                 **{k: z[k][:32] for k in z.files if k != "labels"})
    gate = {"max_accuracy_drop": args.budget}
    common = {"calibration": {"file": "calib.npz"},
              "validation": {"file": "val.npz"}}
    if "train.npz" in data:
        common["training"] = {"file": "train.npz"}
    singles = TRAINED_SINGLES if "train.npz" in data else SINGLES
    if "train.npz" in data:
        with np.load(data["train.npz"]) as z:
            FT["params"]["epochs"] = ft_epochs(len(z["labels"]))
        print("  finetune (alone or in the search): %d epochs" %
              FT["params"]["epochs"])
    with Daemon(["--admin-insecure"], repository=root) as d:
        passed = []         # (name, version) of every single that passed
        for name, method in singles:
            b = dict(common, gate=gate, methods=method
                     if isinstance(method, list) else [method])
            j = job(d, "/admin/models/%s/compress" % kind, b, 600)
            r = j.get("result") or {}
            v = j.get("version")
            lat = ((r.get("variant") or {}).get("latency_ms") or {}).get(
                "batch32")
            ok = j.get("state") == "succeeded" and v
            print("  %-22s %-9s b32 %s ms%s" % (
                name, j.get("state"), "%.4f" % lat if lat else "-",
                "" if ok else "  (%s)" % (j.get("error") or "")[:60]))
            if ok:
                passed.append((name, v))
        t0 = time.monotonic()
        b = dict(common, budget=gate, objective="latency_b32",
                 time_limit_s=args.time_limit, seed=1)
        j = job(d, "/admin/models/%s/optimize" % kind, b,
                args.time_limit + 120)
        wall = time.monotonic() - t0
        r = j.get("result") or {}
        best = r.get("best") or {}
        print("  search: %s, %s trials, stopped %s, %.1f s, first in "
              "budget %s s" % (j.get("state"), r.get("trials"),
                               r.get("stopped"), wall,
                               "%.2f" % r["first_in_budget_s"]
                               if r.get("first_in_budget_s") is not None
                               else "-"))
        print("  search best: trial %s %s" % (
            best.get("trial"), json.dumps(best.get("config"))[:300]))
        trial_log(os.path.join(root, kind, "search-%d.json" % j["id"])
                  if j.get("id") else None)
    # Side by side: the source, every single method that passed and the
    # search's best.  The best single method is the fastest of these
    # timings, not of the jobs' own: each job timed its variant in another
    # window of this machine's load.
    onnx = {"source": os.path.join(root, kind, "1", "model.onnx")}
    for name, v in passed:
        onnx[name] = os.path.join(root, kind, str(v), "model.onnx")
    if best.get("version"):
        onnx["search"] = os.path.join(root, kind, str(best["version"]),
                                      "model.onnx")
    times = {k: [] for k in onnx}
    for _ in range(args.rounds):
        for k, path in onnx.items():
            times[k].append(time_b32(args.build, path,
                                     os.path.join(tmp, "b32.npz"),
                                     args.repeat))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("  batch-32 ms (median of %d rounds x %d runs): %s" % (
        args.rounds, args.repeat,
        ", ".join("%s %.4f" % (k, v) for k, v in med.items())))
    single = min(((n, med[n]) for n, _ in passed), key=lambda t: t[1],
                 default=None)
    if single:
        med["single"] = single[1]
    ratio = (med["single"] / med["search"]
             if "single" in med and "search" in med else None)
    print("  best single method: %s; search / single latency ratio: %s "
          "(target >= 1.2x)" % (single[0] if single else "none",
                                "%.2fx" % ratio if ratio else "-"))
    return {"ratio": ratio, "first": r.get("first_in_budget_s"),
            "med": med, "single": single[0] if single else None,
            "search": "+".join((best.get("config") or {}).get("pipeline")
                               or []) or None,
            "trials": r.get("trials"), "wall": wall}


def trial_log(path):
    """What the search tried: its trials by phase, and the passing
    pipelines (search-<id>.json's "all_trials" and front)."""
    try:
        with open(path) as f:
            js = json.load(f)
    except (OSError, TypeError, ValueError):
        print("  (no trial log)")
        return
    trials = js.get("all_trials") or []
    kinds = {}
    for t in trials:
        key = "+".join((t.get("config") or {}).get("pipeline") or [])
        ok = kinds.setdefault(key or "none", [0, 0])
        ok[0] += 1
        ok[1] += 1 if t.get("passed") else 0
    print("  trial log: %d trials; pipeline: tried/passed %s" % (
        len(trials), ", ".join("%s %d/%d" % (k, v[0], v[1])
                               for k, v in sorted(kinds.items()))))
    for t in js.get("front") or []:
        lat = t.get("latency_ms") or {}
        print("    front: trial %3s acc %.4f b32 %.4f ms  %s%s" % (
            t.get("trial"), t.get("accuracy") or 0, lat.get("batch32") or 0,
            "+".join((t.get("config") or {}).get("pipeline") or []),
            "" if t.get("passed", True) else " (out of budget)"))


def p99(args):
    spec = importlib.util.spec_from_file_location(
        "bench_compress", os.path.join(HERE, "compress.py"))
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    import kserve
    tmp = tempfile.mkdtemp(prefix="ss-bench-search-p99-")
    root = os.path.join(tmp, "m")
    repo.with_model(root, name="mlp")
    repo.with_model(root, name="transformer", onnx=os.path.join(
        FIX, "transformer_op13", "model.onnx"), files={
        "calib.npz": os.path.join(FIX, "digits", "transformer_calib.npz"),
        "val.npz": os.path.join(FIX, "digits", "transformer_heldout.npz")})
    with np.load(os.path.join(FIX, "digits", "mlp_heldout.npz")) as z:
        x = z["input"][:1]
    body = os.path.join(tmp, "mlp.json")
    with open(body, "wb") as f:
        f.write(kserve.json_request({"input": x}))
    cells = []
    try:
        with Daemon(["--admin-insecure", "--job-threads=1"] +
                    args.daemon_arg, repository=root) as d:
            url = "http://127.0.0.1:%d/v2/models/mlp/infer" % d.http_port
            bc.wrk(url, 1, args.conns, body, args.think_ms)
            for _ in range(args.p99):
                idle = bc.wrk(url, args.duration, args.conns, body,
                              args.think_ms)
                st, _, data = d.post(
                    "/admin/models/transformer/optimize", json.dumps({
                        "calibration": {"file": "calib.npz"},
                        "validation": {"file": "val.npz"},
                        "time_limit_s": args.duration + 30}), admin=True)
                jid = (json_body(data) or {}).get("job", 0)
                while (json_body(d.get("/admin/jobs/%d" % jid,
                                       admin=True)[2]) or {}).get(
                        "state") == "queued":
                    time.sleep(0.02)
                busy = bc.wrk(url, args.duration, args.conns, body,
                              args.think_ms)
                j = json_body(d.get("/admin/jobs/%d" % jid, admin=True)[2])
                trials = ((j or {}).get("search") or {}).get("trials")
                d.request("DELETE", "/admin/jobs/%d" % jid, admin=True)
                d.wait_job(jid, timeout=120)
                cells.append((idle["p99_us"], busy["p99_us"], trials))
                print("  idle p99 %.0f us (%.0f req/s), during a search "
                      "%.0f us (%.0f req/s, %s trials in the window), load "
                      "%s" % (idle["p99_us"], idle.get("rps", 0),
                              busy["p99_us"], busy.get("rps", 0), trials,
                              load()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = (statistics.median(c[1] for c in cells)
         / statistics.median(c[0] for c in cells))
    print("serving p99 during a search / idle: %.2fx (median of %d pairs; "
          "%d connections, think %d ms; target <= 1.5x)"
          % (r, len(cells), args.conns, args.think_ms))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.environ.get("top_builddir", TOP))
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--time-limit", type=float, default=180)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--models", choices=("trained", "fixtures"),
                   default="trained")
    p.add_argument("--model-dir", default=os.path.join(
        tempfile.gettempdir(), "ss-search-models"),
        help="where bench/search_models.py keeps the trained models")
    p.add_argument("--fixtures", default=None,
                   help="comma-separated names (default: all of --models)")
    p.add_argument("--p99", type=int, default=0, metavar="PAIRS")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--think-ms", type=int, default=0,
                   help="--p99: each connection's pause between requests")
    p.add_argument("--daemon-arg", action="append", default=[],
                   metavar="ARG", help="--p99: one more slimserve argument "
                   "(repeatable), e.g. --daemon-arg=--job-priority=idle")
    args = p.parse_args()
    daemon.BINARY = os.path.join(args.build, "server", "slimserve")
    print("bench/search: %s" % cpu_line())
    if args.p99:
        print("load %s" % load())
        return p99(args)
    print("budget %.3g relative accuracy drop; load %s" % (args.budget,
                                                           load()))
    if args.models == "trained" and search_models is None:
        sys.exit("bench/search: --models trained needs python3-torch "
                 "(or --models fixtures)")
    if args.fixtures is None:
        args.fixtures = ("mlp784,cnn_wide,transformer128"
                         if args.models == "trained"
                         else "mlp,cnn,transformer")
    summary = []
    for kind in args.fixtures.split(","):
        print("%s (load %s):" % (kind, load()), flush=True)
        summary.append((kind, bench(kind, args)))
    print("summary (load %s):" % load())
    print("| model | source b32 | best single method | search's best | "
          "single / search | trials, time | first in budget |")
    print("|---|---|---|---|---|---|---|")
    for kind, x in summary:
        m = x["med"]
        print("| %s | %s ms | %s: %s ms | %s: %s ms | %s | %s, %.0f s | "
              "%s s |" % (
                  kind, fmt(m.get("source")), x["single"],
                  fmt(m.get("single")), x["search"], fmt(m.get("search")),
                  "%.2fx" % x["ratio"] if x["ratio"] else "-",
                  x["trials"], x["wall"],
                  "%.2f" % x["first"] if x["first"] is not None else "-"))


def fmt(v):
    return "%.4f" % v if v is not None else "-"


if __name__ == "__main__":
    main()
