#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 12's compression targets on CNNs: int8 (ptq), bf16 and structured
pruning at 50% against f32, in one run.

    /usr/bin/python3 bench/compress_cnn.py BUILDDIR [--rounds R]
        [--repeat N] [--threads T]
        [--models cnn28,cnn_wide,resnet18,mobilenet_v2,r3d,unet3d]
        [--verbose]

cnn28 is bench/serve_models.py's MNIST-sized CNN (3x3 convs 1-32-64-64,
max pools, 28x28, random He weights) with the digits resized to 28x28 as
its data; cnn_wide is bench/search_models.py's trained CNN (8x8, 64-128-
128 channels, global average), taken from SEARCH_MODELS (default
/tmp/ss-search-models) when it is there.  resnet18 and mobilenet_v2 are
bench/engine_nets.py's torchvision-equivalent nets (random seeded weights
and BatchNorm statistics, exported at opset 17: needs PyTorch) at 224x224
with structured random images as data (smooth colour fields: 8x8 normal
noise upsampled bilinearly, plus a little white noise; calibration,
validation and the timing batch drawn separately).  r3d and unet3d are
tests/engine/test_conv3d.py's 3-D conv nets (r3d_18's shape at 3x8x56x56,
a 3-D U-Net block at 2x8x16x16; random weights, PyTorch needed) on random
normal rows, timed at batch 3 and 8.  Each method runs as a
job file through server/slimserve-train (the daemon's pipeline) with a
gate that always holds (min_agreement 0: this measures speed); the
accuracy proxy is the job's own, on its validation rows (held out from
calibration): agreement of the top class with f32 and max |y - y_f32| /
max |y_f32| over the logits.  On random weights the agreement of a pruned
net is low by construction: its speed is what this measures.  The job's
wall and CPU seconds (from its step lines) are printed, with its slowest
step.  Then engine/tools/slimserve-infer times f32 and every version at
each batch size, ROUNDS rounds interleaved, REPEAT runs each; a cell is
the median over rounds of the median per-run CPU time (1 thread: CPU time
is what the run costs, whatever the load).  The header prints the CPU
model, oneDNN's ISA and the load; --verbose lists each version's oneDNN
kernels (ONEDNN_VERBOSE, one run at the largest batch).
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


def images224(n, seed):
    """-> float32 [n, 3, 224, 224]: smooth colour fields (8x8 normal noise
    upsampled bilinearly) plus white noise at 0.1."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((n, 3, 8, 8))
    pos = np.linspace(0, 7, 224)
    lo = np.minimum(np.floor(pos).astype(int), 6)
    f = pos - lo
    rows = small[:, :, lo] * (1 - f)[None, None, :, None] + \
        small[:, :, lo + 1] * f[None, None, :, None]
    img = rows[:, :, :, lo] * (1 - f) + rows[:, :, :, lo + 1] * f
    img += 0.1 * rng.standard_normal(img.shape)
    return img.astype(np.float32)


def make_net(d, net, onnx_dir, n_calib, n_val):
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(os.path.join(onnx_dir, net + ".onnx"),
                os.path.join(d, "1", "model.onnx"))
    np.savez(os.path.join(d, "calib.npz"), input=images224(n_calib, 1))
    np.savez(os.path.join(d, "val.npz"), input=images224(n_val, 2))
    return "input", images224(32, 3)


def make_3d(d, net, n_calib, n_val):
    """tests/engine/test_conv3d.py's r3d or unet3d (random weights, opset
    13, dynamic batch; needs PyTorch) with random normal rows."""
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "engine"))
    import test_conv3d

    cls, shape = {n: (c, s) for n, c, s in test_conv3d.models()}[net]
    torch.manual_seed(len(net))
    os.makedirs(os.path.join(d, "1"))
    torch.onnx.export(cls().eval(), (torch.randn(1, *shape),),
                      os.path.join(d, "1", "model.onnx"),
                      input_names=["input"], output_names=["y"],
                      opset_version=13,
                      dynamic_axes={"input": {0: "n"}, "y": {0: "n"}})
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((n_calib + n_val + 8,) + tuple(shape))
    rows = rows.astype(np.float32)
    np.savez(os.path.join(d, "calib.npz"), input=rows[:n_calib])
    np.savez(os.path.join(d, "val.npz"),
             input=rows[n_calib:n_calib + n_val])
    return "input", rows[-8:]


def export_nets(nets, out):
    """bench/engine_nets.py's nets as ONNX in out (needs PyTorch)."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "engine_nets.py"),
                        "export", out] + nets, capture_output=True,
                       text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError("engine_nets.py export: %s" % p.stderr[-2000:])


def job_time(stderr):
    """-> (wall s, CPU s, 'slowest step (CPU s)') from slimserve-train's
    step lines."""
    steps = [(float(w), float(c), name) for w, c, name in re.findall(
        r"step at ([0-9.]+) s \(cpu ([0-9.]+) s\): (.*)", stderr)]
    if not steps:
        return None, None, "-"
    cost = [(b[1] - a[1], a[2]) for a, b in zip(steps, steps[1:])]
    worst = max(cost) if cost else (0.0, "-")
    return steps[-1][0], steps[-1][1], "%s %.1f s" % (worst[1], worst[0])


def compress(build, d, method, threads, latency_runs):
    """-> (path of the version written, its result JSON, job_time())."""
    job = os.path.join(d, "job.json")
    with open(job, "w") as f:
        json.dump({"source_version": 1, "methods": [method],
                   "calibration": {"file": "calib.npz"},
                   "validation": {"file": "val.npz"},
                   "gate": {"min_agreement": 0.0}}, f)
    p = subprocess.run([os.path.join(build, "server",
                                     "slimserve-train"), job, "--model-dir",
                        d, "--threads", str(threads), "--latency-runs",
                        str(latency_runs)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError("slimserve-train %s: %s%s" % (
            method, p.stdout, p.stderr))
    res = json.loads(p.stdout)
    vers = sorted(int(v) for v in os.listdir(d) if v.isdigit())
    return (os.path.join(d, str(vers[-1]), "model.onnx"), res,
            job_time(p.stderr))


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


NETS = ("resnet18", "mobilenet_v2")
NETS3D = ("r3d", "unet3d")      # timed at batch 3 and 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=None,
                    help="default 5 (cnn28, cnn_wide), 3 (224x224 nets)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="default 20 (cnn28, cnn_wide), 3 (224x224 nets)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="cnn28,cnn_wide,resnet18,"
                    "mobilenet_v2")
    ap.add_argument("--calib", type=int, default=16,
                    help="calibration rows of the 224x224 nets")
    ap.add_argument("--val", type=int, default=16,
                    help="validation rows of the 224x224 nets")
    ap.add_argument("--onnx-dir", default=None,
                    help="resnet18.onnx / mobilenet_v2.onnx from "
                    "engine_nets.py export (default: export them)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    cli = os.path.join(a.build, "engine", "tools", "slimserve-infer")
    tmp = tempfile.mkdtemp(prefix="ss-compress-cnn-")
    wide = os.path.join(os.environ.get("SEARCH_MODELS",
                                       "/tmp/ss-search-models"), "cnn_wide")
    models = a.models.split(",")
    isa_line = None
    try:
        nets = [m for m in models if m in NETS]
        onnx_dir = a.onnx_dir
        if nets and onnx_dir is None:
            onnx_dir = os.path.join(tmp, "onnx")
            export_nets(nets, onnx_dir)
        for m in models:
            d = os.path.join(tmp, m)
            big = m in NETS or m in NETS3D
            if m == "cnn28":
                name, x = make_cnn28(d)
            elif m in NETS3D:
                name, x = make_3d(d, m, a.calib, a.val)
            elif big:
                name, x = make_net(d, m, onnx_dir, a.calib, a.val)
            elif os.path.exists(os.path.join(wide, "model.onnx")):
                name, x = make_wide(d, wide)
            else:
                print("## %s: no %s (bench/search_models.py writes it)" % (
                    m, wide))
                continue
            batches = (3, 8) if m in NETS3D else (8, 32) if big else (32,)
            rounds = a.rounds or (3 if big else 5)
            repeat = a.repeat or (3 if big else 20)
            npz = {}
            for b in batches:
                npz[b] = os.path.join(d, "b%d.npz" % b)
                np.savez(npz[b], **{name: x[:b]})
            files = {"f32": os.path.join(d, "1", "model.onnx")}
            res_of, jt = {}, {}
            for label, method in METHODS:
                try:
                    files[label], res_of[label], jt[label] = compress(
                        a.build, d, method, a.threads, 3 if big else 20)
                except RuntimeError as e:
                    print("## %s %s failed: %s" % (m, label, e))
            if isa_line is None:
                isa_line = kernels(cli, files["f32"], npz[batches[-1]],
                                   a.threads)[0]
                print("# CPU %s, oneDNN ISA %s, %d thread(s), load %s" % (
                    cpu_model(), isa_line, a.threads, loadavg()))
            print("## %s: jobs (slimserve-train, %d thread(s)%s)" % (
                m, a.threads, ", %d calibration / %d validation rows" % (
                    a.calib, a.val) if big else ""))
            print("%-9s %7s %7s  %-52s %9s %11s" % (
                "version", "wall_s", "cpu_s", "slowest step (cpu)",
                "agreement", "max_rel_err"))
            for v in res_of:
                w, c, worst = jt[v]
                var = res_of[v].get("variant", {})
                print("%-9s %7.1f %7.1f  %-52s %9.4f %11.4g" % (
                    v, w or 0, c or 0, worst, var.get("agreement", -1),
                    var.get("max_relative_error", -1)))
            for b in batches:
                cells = {v: [] for v in files}
                for _ in range(rounds):
                    for v, f in files.items():
                        cells[v].append(cpu_ms(cli, f, npz[b], repeat,
                                               a.threads)[0])
                base = statistics.median(cells["f32"])
                print("## %s batch %d (CPU ms, median of %d rounds x %d "
                      "runs), load %s" % (m, b, rounds, repeat, loadavg()))
                print("%-9s %9s %8s %8s" % ("version", "cpu_ms", "speedup",
                                            "target"))
                for v in files:
                    ms = statistics.median(cells[v])
                    t = TARGETS.get(v)
                    print("%-9s %9.3f %7.2fx %8s" % (
                        v, ms, base / ms, "%.1fx" % t if t else "-"),
                        flush=True)
            if a.verbose:
                for v, f in files.items():
                    print("### %s kernels (batch %d, the last of 4 runs)"
                          % (v, batches[-1]))
                    print("\n".join(kernels(cli, f, npz[batches[-1]],
                                            a.threads)[1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
