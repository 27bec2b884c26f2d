#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 12's compression targets on plain CNNs: int8 (ptq), bf16 and
structured pruning at 50% against f32, at batch 32, in one run.

    /usr/bin/python3 bench/compress_cnn.py BUILDDIR [--rounds R]
        [--repeat N] [--threads T] [--models cnn28,cnn_wide]

cnn28 is bench/serve_models.py's MNIST-sized CNN (3x3 convs 1-32-64-64,
max pools, 28x28, random He weights) with the digits resized to 28x28 as
its data; cnn_wide is bench/search_models.py's trained CNN (8x8, 64-128-
128 channels, global average), taken from SEARCH_MODELS (default
/tmp/ss-search-models) when it is there.  Each method runs as a job file
through server/slimserve-train (the daemon's pipeline) with a gate
that always holds (min_agreement 0: this measures speed; agreement with
f32 is printed), then engine/tools/slimserve-infer times f32 and every
version at batch 32, ROUNDS rounds interleaved, REPEAT runs each; a cell
is the median over rounds of the median per-run CPU time (1 thread: CPU
time is what the run costs, whatever the load).  The header prints the
CPU model, oneDNN's ISA and the load; --verbose lists each version's
oneDNN kernels (ONEDNN_VERBOSE, one batch-32 run).
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
sys.path.insert(0, HERE)
import serve_models  # noqa: E402
from engine import cpu_model, loadavg  # noqa: E402

METHODS = (("int8", "ptq"), ("bf16", "bf16"),
           ("struct50", {"method": "prune", "params": {
               "kind": "structured", "sparsity": 0.5}}))
TARGETS = {"int8": 2.0, "bf16": 1.5, "struct50": 1.6}


def digits28(n):
    """-> float32 [n, 1, 28, 28]: the digits fixtures' rows resized."""
    with np.load(serve_models.DIGITS) as z:
        small = z["input"][:n].reshape(-1, 8, 8).astype(np.float64)
    pos = np.linspace(0, 7, 28)
    lo = np.minimum(np.floor(pos).astype(int), 6)
    f = pos - lo
    rows = small[:, lo] * (1 - f)[None, :, None] + \
        small[:, lo + 1] * f[None, :, None]
    img = rows[:, :, lo] * (1 - f)[None, None, :] + \
        rows[:, :, lo + 1] * f[None, None, :]
    return ((img - 0.1307) / 0.3081).astype(np.float32)[:, None]


def make_cnn28(d):
    os.makedirs(os.path.join(d, "1"))
    convs, fc = serve_models.cnn_weights()
    serve_models.write_cnn(os.path.join(d, "1", "model.onnx"), convs, fc)
    x = digits28(512)
    np.savez(os.path.join(d, "calib.npz"), input=x[:256])
    np.savez(os.path.join(d, "val.npz"), input=x[256:])
    return "input", x[:32]


def make_wide(d, src):
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(os.path.join(src, "model.onnx"), os.path.join(d, "1"))
    for f in ("calib.npz", "val.npz"):
        shutil.copy(os.path.join(src, f), d)
    with np.load(os.path.join(src, "val.npz")) as z:
        name = [k for k in z.files if k != "labels"][0]
        return name, z[name][:32]


def compress(build, d, method, threads):
    """-> (path of the version written, its result JSON)."""
    job = os.path.join(d, "job.json")
    with open(job, "w") as f:
        json.dump({"source_version": 1, "methods": [method],
                   "calibration": {"file": "calib.npz"},
                   "validation": {"file": "val.npz"},
                   "gate": {"min_agreement": 0.0}}, f)
    p = subprocess.run([os.path.join(build, "server",
                                     "slimserve-train"), job, "--model-dir",
                        d, "--threads", str(threads)],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("slimserve-train %s: %s%s" % (
            method, p.stdout, p.stderr))
    res = json.loads(p.stdout)
    vers = sorted(int(v) for v in os.listdir(d) if v.isdigit())
    return os.path.join(d, str(vers[-1]), "model.onnx"), res


def cpu_ms(cli, onnx, npz, repeat, threads, env=None):
    p = subprocess.run([cli, "-m", onnx, "-i", npz, "--repeat", str(repeat),
                        "--warmup", "3", "--threads", str(threads)],
                       capture_output=True, text=True, timeout=600, env=env)
    runs = [float(c) for c in re.findall(r"cpu ([0-9.]+) ms", p.stderr)]
    if p.returncode != 0 or not runs:
        raise RuntimeError("slimserve-infer %s: %s" % (onnx, p.stderr))
    return statistics.median(runs), p


def kernels(cli, onnx, npz, threads):
    """-> (oneDNN's ISA line, the primitives of the last of 4 batch-32 runs:
    'kind impl descs shape ms') from ONEDNN_VERBOSE; the CLI's "run I:"
    line on stderr closes each timed run, so stdout and stderr share one
    pipe to keep the order."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    p = subprocess.run([cli, "-m", onnx, "-i", npz, "--repeat", "2",
                        "--warmup", "2", "--threads", str(threads)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600, env=env)
    if p.returncode != 0:
        raise RuntimeError("slimserve-infer %s: %s" % (onnx, p.stdout))
    m = re.search(r"isa:([^\n,]+)", p.stdout)
    out, run = [], []
    for line in p.stdout.splitlines():
        if line.startswith("run "):
            out, run = run, []
            continue
        f = line.split(",")
        if len(f) > 9 and f[1] == "exec":
            run.append("  %s %s %s %s %s ms" % (f[3], f[4], f[6], f[9],
                                                f[-1]))
    return (m.group(1).strip() if m else "?"), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="cnn28,cnn_wide")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    cli = os.path.join(a.build, "engine", "tools", "slimserve-infer")
    tmp = tempfile.mkdtemp(prefix="ss-compress-cnn-")
    wide = os.path.join(os.environ.get("SEARCH_MODELS",
                                       "/tmp/ss-search-models"), "cnn_wide")
    isa_line = None
    try:
        for m in a.models.split(","):
            d = os.path.join(tmp, m)
            if m == "cnn28":
                name, x = make_cnn28(d)
            elif os.path.exists(os.path.join(wide, "model.onnx")):
                name, x = make_wide(d, wide)
            else:
                print("## %s: no %s (bench/search_models.py writes it)" % (
                    m, wide))
                continue
            npz = os.path.join(d, "b32.npz")
            np.savez(npz, **{name: x})
            files = {"f32": os.path.join(d, "1", "model.onnx")}
            agree = {}
            for label, method in METHODS:
                try:
                    files[label], res = compress(a.build, d, method,
                                                 a.threads)
                    agree[label] = res.get("variant", {}).get("agreement")
                except RuntimeError as e:
                    print("## %s %s failed: %s" % (m, label, e))
            if isa_line is None:
                isa_line = kernels(cli, files["f32"], npz, a.threads)[0]
                print("# CPU %s, oneDNN ISA %s, %d thread(s), load %s" % (
                    cpu_model(), isa_line, a.threads, loadavg()))
            cells = {v: [] for v in files}
            for _ in range(a.rounds):
                for v, f in files.items():
                    cells[v].append(cpu_ms(cli, f, npz, a.repeat,
                                           a.threads)[0])
            base = statistics.median(cells["f32"])
            print("## %s batch 32 (CPU ms, median of %d rounds x %d runs), "
                  "load %s" % (m, a.rounds, a.repeat, loadavg()))
            print("%-9s %9s %8s %8s %9s" % ("version", "cpu_ms", "speedup",
                                            "target", "agreement"))
            for v in files:
                ms = statistics.median(cells[v])
                t = TARGETS.get(v)
                print("%-9s %9.3f %7.2fx %8s %9s" % (
                    v, ms, base / ms, "%.1fx" % t if t else "-",
                    "%.4f" % agree[v] if agree.get(v) is not None else "-"))
            if a.verbose:
                for v, f in files.items():
                    print("### %s kernels (batch 32, the last of 4 runs)"
                          % v)
                    print("\n".join(kernels(cli, f, npz, a.threads)[1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
