#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Engine benchmark: slimserve-infer vs ONNX Runtime vs PyTorch eager.

Same ONNX files (tests/fixtures/<model>_op<opset>/model.onnx), same weights
(PyTorch loads tests/fixtures/torch/<model>.pt, the state_dict the ONNX
files were exported from), same inputs (the first `batch` held-out digits),
2 threads each, one engine at a time.  For every fixture and batch size
(1, 32, 256) it prints the median latency and the throughput of each engine
and the ratio slimserve/peer of throughputs (= peer median / slimserve
median: above 1 means slimserve is faster).  It also checks each engine's
argmax against PyTorch's, so a fast wrong answer cannot hide.

  slimserve     engine/tools/slimserve-infer --repeat N --warmup W --threads 2
                (per-run latency as it reports it: the plan run only)
  ONNX Runtime  bench/engine_ort.js via node and onnxruntime-node
                (intra-op threads 2, inter-op 1, all graph optimizations;
                session.run only).  Skipped with a note if not installed:
                cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm ci
  PyTorch       bench/engine_torch.py, torch.set_num_threads(2), eager
                under inference_mode, with OPENBLAS_CORETYPE=SKYLAKEX set
                (Debian's OpenBLAS otherwise falls back to slow generic
                kernels on this CPU, and PyTorch uses it for Linear layers)

With --nets (default resnet18,mobilenet_v2,convnext_tiny; "none" for
none) it also runs torchvision's classification nets at 224x224, built by
hand in bench/engine_nets.py (torchvision is not installable here), random
weights, exported at opset 17 into a temporary folder, at --net-batches
(default 1,8), on the same random images in the three engines; those rows
check the largest relative difference of the logits to PyTorch's
(max |y - y_torch| / max |y_torch|, target 1e-4) instead of argmaxes.
--cnn28 adds bench/serve_models.py's MNIST-sized CNN (28x28 input).

--rounds N lets slimserve and ORT take turns N times on each net and
cnn28 row (medians over all runs); their ss/ORT cpu column is the ratio
of median CPU times per run (every thread of each process), the one to
read at --threads 1 on a machine others load.  Their last column is each
engine's peak RSS (VmHWM) with the model loaded and run, over the ONNX
file's size (issue 12's memory target is slimserve's ratio).

The header prints the CPU model, oneDNN's effective ISA (what
dnnl_get_effective_cpu_isa picks, from ONEDNN_VERBOSE's info line) and the
load average before and after.

Usage:  bench/engine.py [--cli PATH] [--models mlp,cnn,transformer]
                        [--opsets 13,17] [--batches 1,32,256] [--threads 2]
                        [--nets resnet18,...|none] [--net-batches 1,8]
                        [--rounds N] [--cnn28] [--quick]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
FIX = os.path.join(TOP, "tests", "fixtures")

# timed runs and warm-up runs per batch size: about a second per cell
REPEAT = {1: (300, 20), 32: (100, 10), 256: (30, 5)}


def find_cli(arg):
    cands = [arg, os.environ.get("SLIMSERVE_INFER")]
    top = os.environ.get("top_builddir")
    if top:
        cands.append(os.path.join(top, "engine", "tools", "slimserve-infer"))
    cands += [os.path.join(TOP, "engine", "tools", "slimserve-infer"),
              os.path.join(TOP, "build", "engine", "tools", "slimserve-infer")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    return None


def ab_options(doc, batches, rounds):
    """The options of a bench that times this build against PyTorch or an
    older build in one run (bench/qdq_zp.py, conv3d.py): --cli, --base,
    --batches, --rounds, --threads; the caller adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--cli", help="slimserve-infer (default: this build)")
    ap.add_argument("--base", help="another slimserve-infer to compare")
    ap.add_argument("--batches", default=batches)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def ab_cli(a, name):
    """slimserve-infer for options a (ab_options), or exits saying why."""
    cli = find_cli(a.cli)
    if cli is None:
        sys.exit("%s: no slimserve-infer (--cli or SLIMSERVE_INFER)" % name)
    return cli


def repeats(batch, quick):
    n, w = REPEAT.get(batch, (max(10, 3000 // batch), 3))
    return (max(5, n // 10), 2) if quick else (n, w)


# the per-run CPU times of the last run_slimserve / run_ort call, by engine
CPU_MS = {}
# the peak RSS (MiB) of the last run_slimserve / run_ort call, by engine;
# ORT's as (peak, node's own RSS before the session)
RSS_MB = {}


def run_slimserve(cli, model, x_npy, in_name, out, n, w, threads,
                  out_name="logits"):
    cmd = [cli, "--model", model, "--input", "%s=%s" % (in_name, x_npy),
           "--output", out, "--repeat", str(n), "--warmup", str(w),
           "--threads", str(threads)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("slimserve-infer failed: %s"
                           % p.stderr.decode()[-500:])
    runs = re.findall(r"^run \d+: ([0-9.]+) ms(?: cpu ([0-9.]+) ms)?",
                      p.stderr.decode(), re.M)
    lat = [float(r[0]) for r in runs]
    CPU_MS[cli] = [float(r[1]) for r in runs if r[1]]
    summary = p.stdout.decode()
    r = re.search(r"peak_rss_mb=([0-9.]+)", summary)
    RSS_MB[cli] = float(r.group(1)) if r else None
    m = re.search(r"compile_ms=([0-9.]+)", summary)
    with np.load(out) as z:
        y = z[out_name if out_name is not None else z.files[0]]
    return lat, (float(m.group(1)) if m else None), y


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def onednn_isa(cli, model, x_npy, in_name):
    """oneDNN's info line on the ISA it runs (dnnl_get_effective_cpu_isa),
    from one run with ONEDNN_VERBOSE=1."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    p = subprocess.run([cli, "--model", model, "--input",
                        "%s=%s" % (in_name, x_npy), "--repeat", "1"],
                       env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    m = re.search(r"isa:([^\n,]+)", p.stdout.decode() + p.stderr.decode())
    return m.group(1).strip() if m else "?"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rel_diff(y, ref):
    """max |y - ref| / max |ref|."""
    den = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(y.astype(np.float64) - ref))) / den


def export_nets(tmp, names):
    p = subprocess.run([sys.executable, os.path.join(HERE, "engine_nets.py"),
                        "export", tmp] + names, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("engine_nets.py export failed: %s"
                           % p.stderr.decode()[-800:])
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def run_torch_nets(tmp, nets, inputs, batches, threads, quick):
    runs = []
    for net in nets:
        for b in batches:
            n, w = net_repeats(b, quick)
            runs.append({"net": net, "batch": b, "input": inputs[b],
                         "state": os.path.join(tmp, net + ".pt"),
                         "repeat": n, "warmup": w,
                         "output": os.path.join(tmp, "torch_%s_%d.npy"
                                                % (net, b))})
    jf = os.path.join(tmp, "torch_nets.json")
    with open(jf, "w") as f:
        json.dump({"threads": threads, "runs": runs}, f)
    env = dict(os.environ, OPENBLAS_CORETYPE="SKYLAKEX")
    p = subprocess.run([sys.executable, os.path.join(HERE, "engine_nets.py"),
                        "run", jf], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    if p.returncode != 0:
        raise RuntimeError("torch failed: %s" % p.stderr.decode()[-800:])
    lat = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return {(r["net"], r["batch"]): (lat["%s/%d" % (r["net"], r["batch"])],
                                     np.load(r["output"])) for r in runs}


# timed and warm-up runs of the 224x224 nets, per batch size
NET_REPEAT = {1: (30, 3), 8: (10, 2)}


def net_repeats(batch, quick):
    n, w = NET_REPEAT.get(batch, (max(5, 80 // batch), 2))
    return (max(3, n // 5), 1) if quick else (n, w)


def ort_available():
    return shutil.which("node") is not None and os.path.isdir(
        os.path.join(HERE, "node_modules", "onnxruntime-node"))


def run_ort(tmp, model, x, in_name, n, w, threads):
    xf = os.path.join(tmp, "ort_in.bin")
    np.ascontiguousarray(x).tofile(xf)
    outdir = os.path.join(tmp, "ort_out")
    os.makedirs(outdir, exist_ok=True)
    job = {"model": model, "threads": threads, "repeat": n, "warmup": w,
           "inputs": [{"name": in_name, "dtype": str(x.dtype),
                       "shape": list(x.shape), "file": xf}],
           "outputs_dir": outdir}
    jf = os.path.join(tmp, "ort_job.json")
    with open(jf, "w") as f:
        json.dump(job, f)
    p = subprocess.run(["node", os.path.join(HERE, "engine_ort.js"), jf],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=HERE)
    if p.returncode != 0:
        raise RuntimeError("onnxruntime-node failed: %s"
                           % p.stderr.decode()[-500:])
    lat = json.loads(p.stdout.decode().strip().splitlines()[-1])
    CPU_MS["ort"] = lat.get("cpu_ms", [])
    RSS_MB["ort"] = (lat.get("peak_rss_mb"), lat.get("base_rss_mb"))
    with open(os.path.join(outdir, "logits.json")) as f:
        dims = json.load(f)["dims"]
    y = np.fromfile(os.path.join(outdir, "logits.bin"),
                    dtype=np.float32).reshape(dims)
    return lat["latencies_ms"], y


def take_turns(tmp, cli, model, xf, x, n, w, args, use_ort, out_name):
    """slimserve and ORT in turns, args.rounds times: -> row (medians over
    every round's runs: latency, CPU time), ss's and ORT's last outputs."""
    lat, olat, scpu, ocpu, oy = [], [], [], [], None
    srss, orss = [], []
    for _ in range(max(1, args.rounds)):
        sl, comp, y = run_slimserve(cli, model, xf, "input",
                                    os.path.join(tmp, "out.npz"), n, w,
                                    args.threads, out_name=out_name)
        lat += sl
        scpu += CPU_MS.get(cli, [])
        if RSS_MB.get(cli) is not None:
            srss.append(RSS_MB[cli])
        if use_ort:
            ol, oy = run_ort(tmp, model, x, "input", n, w, args.threads)
            olat += ol
            ocpu += CPU_MS.get("ort", [])
            if RSS_MB["ort"][0] is not None:
                orss.append(RSS_MB["ort"])
    row = {"ss": statistics.median(lat), "compile": comp,
           "ort": statistics.median(olat) if olat else None, "torch": None,
           "check": ""}
    if scpu and ocpu:
        row["ss_cpu"] = statistics.median(scpu)
        row["ort_cpu"] = statistics.median(ocpu)
    mib = os.path.getsize(model) / 2**20
    if srss:
        row["mem"] = "ss %.0f (%.2fx)" % (max(srss), max(srss) / mib)
    if orss:
        pk = max(o[0] for o in orss)
        base = min(o[1] or 0 for o in orss)
        row["mem"] = (row.get("mem", "") +
                      "; ORT %.0f (%.2fx; %.2fx over node's %.0f)"
                      % (pk, pk / mib, (pk - base) / mib, base))
    return row, y, oy


def run_torch(tmp, kind, inputs, batches, threads, quick):
    """One process per model for every batch size: returns {b: (lat, y)}."""
    runs = []
    for b in batches:
        n, w = repeats(b, quick)
        runs.append({"batch": b, "input": inputs[b], "repeat": n,
                     "warmup": w,
                     "output": os.path.join(tmp, "torch_%d.npy" % b)})
    jf = os.path.join(tmp, "torch_job.json")
    with open(jf, "w") as f:
        json.dump({"fixtures": FIX, "model": kind, "threads": threads,
                   "runs": runs}, f)
    env = dict(os.environ, OPENBLAS_CORETYPE="SKYLAKEX")
    p = subprocess.run([sys.executable, os.path.join(HERE, "engine_torch.py"),
                        jf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError("torch failed: %s" % p.stderr.decode()[-500:])
    lat = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return {r["batch"]: (lat[str(r["batch"])], np.load(r["output"]))
            for r in runs}


def fmt_ms(v):
    return "-" if v is None else ("%.3f" % v if v < 10 else "%.1f" % v)


def fmt_rate(b, med):
    return "-" if med is None else "%.0f" % (b * 1e3 / med)


def fmt_ratio(peer, ours):
    return "-" if peer is None or ours is None else "%.2f" % (peer / ours)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli")
    ap.add_argument("--models", default="mlp,cnn,transformer",
                    help="fixtures, or none")
    ap.add_argument("--opsets", default="13,17")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="a tenth of the runs: a smoke test, not numbers")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--nets", default="resnet18,mobilenet_v2,convnext_tiny",
                    help="224x224 nets of engine_nets.py, or none")
    ap.add_argument("--net-batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=1,
                    help="nets, cnn28: slimserve and ORT take turns this many "
                    "times; medians over every round's runs")
    ap.add_argument("--cnn28", action="store_true",
                    help="serve_models.py's 28x28 CNN at --batches too")
    args = ap.parse_args()

    cli = find_cli(args.cli)
    if cli is None:
        sys.exit("engine.py: slimserve-infer not found: build it and pass "
                 "--cli PATH (or set SLIMSERVE_INFER)")
    kinds = [] if args.models in ("", "none") else args.models.split(",")
    opsets = [int(o) for o in args.opsets.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    use_ort = not args.no_ort and ort_available()
    notes = ["slimserve: %s" % cli,
             "threads: %d per engine; one engine runs at a time"
             % args.threads,
             "PyTorch: eager, OPENBLAS_CORETYPE=SKYLAKEX",
             "slimserve's OpenMP: OMP_WAIT_POLICY=%s"
             % os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins)")]
    if not args.no_ort and not use_ort:
        notes.append("ONNX Runtime: not installed (cd bench && "
                     "ONNXRUNTIME_NODE_INSTALL=skip npm ci)")
    nets = [] if args.nets in ("", "none") else args.nets.split(",")
    net_batches = [int(b) for b in args.net_batches.split(",")]
    rows = []
    load_before = loadavg()
    isa = None
    tmp = tempfile.mkdtemp(prefix="ss-bench-engine.")
    try:
        if args.cnn28:
            p = subprocess.run([sys.executable,
                                os.path.join(HERE, "serve_models.py"), tmp],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode != 0:
                raise RuntimeError("serve_models.py failed: %s"
                                   % p.stderr.decode()[-500:])
            img = np.load(os.path.join(tmp, "image.npy")).astype(np.float32)
            img = img.reshape(1, 1, 28, 28)
            model = os.path.join(tmp, "cnn.onnx")
            for b in batches:
                n, w = repeats(b, args.quick)
                x = np.ascontiguousarray(np.repeat(img, b, 0))
                xf = os.path.join(tmp, "cnn28_%d.npy" % b)
                np.save(xf, x)
                if isa is None:
                    isa = onednn_isa(cli, model, xf, "input")
                row, y, oy = take_turns(tmp, cli, model, xf, x, n, w, args,
                                        use_ort, None)
                row.update(fixture="cnn28_op17", batch=b)
                if use_ort:
                    row["check"] = "vs ORT %.1e" % rel_diff(y, oy)
                rows.append(row)
                print("# %-16s batch %-4d slimserve %s ms  ORT %s ms"
                      % ("cnn28_op17", b, fmt_ms(row["ss"]),
                         fmt_ms(row["ort"])), file=sys.stderr, flush=True)
        for kind in kinds:
            in_name = "input_ids" if kind == "transformer" else "input"
            with np.load(os.path.join(FIX, "digits",
                                      kind + "_heldout.npz")) as z:
                pool = z[in_name]
            inputs = {}
            for b in batches:
                reps = -(-b // len(pool))
                x = np.ascontiguousarray(np.concatenate([pool] * reps)[:b])
                inputs[b] = os.path.join(tmp, "%s_%d.npy" % (kind, b))
                np.save(inputs[b], x)
            torch_res = {}
            if not args.no_torch:
                torch_res = run_torch(tmp, kind, inputs, batches,
                                      args.threads, args.quick)
            for opset in opsets:
                name = "%s_op%d" % (kind, opset)
                model = os.path.join(FIX, name, "model.onnx")
                for b in batches:
                    n, w = repeats(b, args.quick)
                    x = np.load(inputs[b])
                    if isa is None:
                        isa = onednn_isa(cli, model, inputs[b], in_name)
                    lat, comp, y = run_slimserve(
                        cli, model, inputs[b], in_name,
                        os.path.join(tmp, "out.npz"), n, w, args.threads)
                    row = {"fixture": name, "batch": b,
                           "ss": statistics.median(lat), "compile": comp,
                           "ort": None, "torch": None, "check": ""}
                    checks = []
                    if b in torch_res:
                        tl, ty = torch_res[b]
                        row["torch"] = statistics.median(tl)
                        ref = ty.argmax(-1)
                        agree = int((y.argmax(-1) == ref).sum())
                        checks.append("ss %d/%d" % (agree, b))
                    if use_ort:
                        ol, oy = run_ort(tmp, model, x, in_name, n, w,
                                         args.threads)
                        row["ort"] = statistics.median(ol)
                        if b in torch_res:
                            agree = int((oy.argmax(-1) == ref).sum())
                            checks.append("ort %d/%d" % (agree, b))
                    row["check"] = " ".join(checks)
                    rows.append(row)
                    print("# %-16s batch %-4d slimserve %s ms  ORT %s ms  "
                          "torch %s ms" % (name, b, fmt_ms(row["ss"]),
                                           fmt_ms(row["ort"]),
                                           fmt_ms(row["torch"])),
                          file=sys.stderr, flush=True)
        if nets:
            info = export_nets(tmp, nets)
            rng = np.random.default_rng(0)
            pool = rng.standard_normal((max(net_batches), 3, 224, 224),
                                       dtype=np.float32)
            inputs = {}
            for b in net_batches:
                inputs[b] = os.path.join(tmp, "img_%d.npy" % b)
                np.save(inputs[b], np.ascontiguousarray(pool[:b]))
            torch_res = {}
            if not args.no_torch:
                torch_res = run_torch_nets(tmp, nets, inputs, net_batches,
                                           args.threads, args.quick)
            for net in nets:
                model = info[net]["onnx"]
                for b in net_batches:
                    n, w = net_repeats(b, args.quick)
                    x = np.load(inputs[b])
                    if isa is None:
                        isa = onednn_isa(cli, model, inputs[b], "input")
                    row, y, oy = take_turns(tmp, cli, model, inputs[b], x, n,
                                            w, args, use_ort, "logits")
                    row.update(fixture=net + "_op17", batch=b)
                    checks = []
                    ref = None
                    if (net, b) in torch_res:
                        tl, ref = torch_res[(net, b)]
                        row["torch"] = statistics.median(tl)
                        checks.append("ss %.1e" % rel_diff(y, ref))
                    if use_ort and ref is not None:
                        checks.append("ort %.1e" % rel_diff(oy, ref))
                    row["check"] = " ".join(checks)
                    rows.append(row)
                    print("# %-16s batch %-4d slimserve %s ms  ORT %s ms  "
                          "torch %s ms" % (net, b, fmt_ms(row["ss"]),
                                           fmt_ms(row["ort"]),
                                           fmt_ms(row["torch"])),
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = loadavg()
    print("CPU: %s; oneDNN ISA: %s; %d CPUs online" % (
        cpu_model(), isa or "?", os.cpu_count() or 0))
    print("load average before: %s   after: %s" % (load_before, load_after))

    head = ("fixture", "batch", "ss ms", "ss /s", "ORT ms", "ORT /s",
            "torch ms", "torch /s", "ss/ORT", "ss/torch", "ss/ORT cpu",
            "compile ms", "check vs torch", "peak RSS MiB (/ file)")
    table = [head]
    for r in rows:
        b = r["batch"]
        table.append((r["fixture"], str(b), fmt_ms(r["ss"]),
                      fmt_rate(b, r["ss"]), fmt_ms(r["ort"]),
                      fmt_rate(b, r["ort"]), fmt_ms(r["torch"]),
                      fmt_rate(b, r["torch"]), fmt_ratio(r["ort"], r["ss"]),
                      fmt_ratio(r["torch"], r["ss"]),
                      fmt_ratio(r.get("ort_cpu"), r.get("ss_cpu")),
                      fmt_ms(r["compile"]), r["check"], r.get("mem", "")))
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(t, widths))
              + " |")
    print()
    print("ms: median latency of one batch; /s: samples per second; "
          "ss/peer: slimserve throughput over the peer's (>1: slimserve "
          "faster).")
    print("ss/ORT cpu (nets, cnn28): ORT's median CPU time per run over "
          "slimserve's, every thread of each process; with --threads 1 the "
          "cost of a run less the time other processes held the core (at "
          "2 threads it counts OpenMP's spinning)."
          + (" %d rounds, the engines taking turns." % args.rounds
             if args.rounds > 1 else ""))
    print("peak RSS (nets): the largest VmHWM of slimserve-infer's and "
          "node's processes over the rounds, MiB, and over the ONNX "
          "file's size; ORT's also less node's own VmRSS before the "
          "session.")
    print("check: fixtures, argmaxes that agree with PyTorch's; nets, "
          "max |y - y_torch| / max |y_torch| (target 1e-4); cnn28 "
          "(no PyTorch model), the same against ORT.")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
