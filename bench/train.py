#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Training throughput: the C trainer vs PyTorch eager, same data, same run.

    /usr/bin/python3 bench/train.py [--build DIR] [--steps N] [--threads T]
                                    [--nchw] [--nn-dnn] [--f32-acts]
                                    [--ceiling] [--models mlp,...]

For the MLP, CNN and transformer fixtures: batch 64 from the digits
held-out set, cross-entropy, AdamW, T threads (default 2).  Where the CPU
has AVX512_BF16 or AMX, the C trainer runs once more in bf16 mixed
precision ("precision": "bf16") and the last columns are its speed over
its own f32 run: by wall time, and by the process's CPU time per step
(with one thread, the figure a loaded machine disturbs least: time spent
preempted is not in it).  f32 and bf16 alternate, --reps times each, and
each column is the median of the runs' medians.  A fourth model, "wide"
(784-1024-1024-10, He-initialized, random inputs and labels; needs
python3-onnx to write it), is one where the products, which bf16
speeds up, are most of a step; "widecnn" (3x32x32 random inputs, five
3x3 convolutions of 32-128 channels with BatchNorm, Relu, two residual
Adds, MaxPool, GAP; not in the default list) is the same for a CNN, and
"widetr" (the transformer fixture at d 256, FFN 1024, random weights
from PyTorch's export; not in the default list) for a transformer, and
"mnist" (784-512-256-10, the issue's MNIST-sized MLP, random; not in the
default list) for an MLP.  --ceiling first prints bf16 over f32 of an
MLP step's oneDNN products alone (compress/train/mm-ceiling: the
fixture's widths and 784-512-256-10), what a bf16 step could gain if
all else were free.
--teams adds f32 and bf16 runs with the trainer's batch slices off
(SS_TRAIN_SLICES=0: every kernel and primitive an OpenMP team of
--threads; docs/threads.md) and columns of their speed, the default's
speed over them, and bf16 over f32 among them.  Under each row, how the
C trainer ran the batch (in slices, or whole and why).
--profile prints, after each model, CPU ms per step kind of one f32 and
one bf16 run on one thread (SS_TRAIN_PROFILE=cpu).
Relu and max pooling run on oneDNN's primitives; BatchNorm and average
pooling too in bf16, and on the trainer's C kernels in f32 (the default
of opts.nn: they match PyTorch's f32 within 1e-4); --nn-dnn adds an f32
run with those on oneDNN too and a column of bf16's speed over it (the
ratio of the precisions alone).  bf16 keeps a CNN's activations in bf16
(the convolutions write them, BatchNorm, Relu, pooling and residual Adds
keep them); --f32-acts adds a bf16 run with f32 activations (only the
products' operands bf16, opts.f32_acts) and a column of bf16's speed
over it (what the bf16 activations gain).  The C side is
compress/train/train-bench (one process per model); PyTorch runs the same
model, initialized from the same state_dict, in train mode with dropout
off, with torch.set_num_threads(T).  Both report the median step time
after 5 warm-up steps; the ratio is C samples/s over PyTorch samples/s,
"(cpu)" the same by process CPU time per step (PyTorch runs once per rep,
interleaved with the C runs; medians of the reps).
Needs python3-torch (Debian's 1.13); prints the CPU model and ISA, since
only ratios from one run compare.  --nchw adds, in the same
alternation, an f32 run with every activation kept NCHW (the trainer
before blocked convolutions, opts.nchw) and a column of the default's
speed over it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
FIX = os.path.join(TOP, "tests", "fixtures")


def cpu():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                       "amx_tile", "amx_bf16") if f in flags]
    return model, " ".join(isa)


def torch_run(name, steps, threads, batch):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, FIX)
    import models
    cls, inp, _, _ = models.MODELS[name]
    torch.set_num_threads(threads)
    data = np.load(os.path.join(FIX, "digits", name + "_heldout.npz"))
    x, y = data[inp], data["labels"]
    m = cls()
    m.load_state_dict(torch.load(os.path.join(FIX, "torch", name + ".pt")))
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    nb = x.shape[0] // batch
    ms, cpu = [], []
    for s in range(-5, steps):
        r0 = ((s + 5) % nb) * batch
        xb = torch.from_numpy(x[r0:r0 + batch])
        yb = torch.from_numpy(y[r0:r0 + batch])
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        loss = F.cross_entropy(m(xb), yb)
        loss.backward()
        opt.step()
        if s >= 0:
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    med = float(np.median(ms))
    return {"ms_per_step": med, "samples_per_s": batch * 1e3 / med,
            "cpu_ms_per_step": float(np.median(cpu))}


def wide_files(tmp, dims=(784, 1024, 1024, 10), name="wide"):
    """A wide MLP and random data for it, or None without python3-onnx."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rs = np.random.RandomState(0)
    nodes, inits, x = [], [], "input"
    for k, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
        w = (rs.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(
            np.float32)
        b = (rs.standard_normal(o) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, "w%d" % k),
                  numpy_helper.from_array(b, "b%d" % k)]
        last = k == len(dims) - 2
        y = "logits" if last else "h%d" % k
        nodes.append(helper.make_node("Gemm", [x, "w%d" % k, "b%d" % k],
                                      [y if last else y + "_"], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y + "_"], [y]))
        x = y
    g = helper.make_graph(
        nodes, "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", dims[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", dims[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, os.path.join(tmp, name + ".onnx"))
    np.savez(os.path.join(tmp, name + ".npz"),
             input=rs.standard_normal((1024, dims[0])).astype(np.float32),
             labels=rs.randint(0, dims[-1], 1024).astype(np.int64))
    return os.path.join(tmp, name + ".onnx"), os.path.join(tmp, name + ".npz")


def mnist_files(tmp):
    """The issue's MNIST-sized MLP (784-512-256-10, Relu), random."""
    return wide_files(tmp, (784, 512, 256, 10), "mnist")


def ceiling(a):
    """bf16's ceiling on an MLP's products (compress/train/mm-ceiling):
    the oneDNN matmuls of a training step of the MLP fixture's widths
    and of the MNIST-sized MLP's, f32 against bf16, one thread."""
    exe = os.path.join(a.build, "compress", "train", "mm-ceiling")
    print("bf16 ceiling of the products alone (one thread, thread CPU "
          "us per step, median of 100 rounds alternating f32 / bf16):")
    for widths in ("64,128,64,10", "784,512,256,10"):
        r = json.loads(subprocess.run(
            [exe, str(a.batch), "100", widths], check=True,
            capture_output=True, text=True).stdout.splitlines()[-1])
        print("  %-16s %d products: f32 %7.1f us, bf16 %7.1f us (%.2fx)" % (
            widths, r["products"], r["f32_us"], r["bf16_us"], r["ceiling"]))


def widecnn_files(tmp):
    """A CNN whose convolutions are most of a step (3x32x32 inputs, 32 to
    128 channels: Conv, BatchNorm, Relu, a residual Add, MaxPool, GAP,
    Gemm), He-initialized, and random data for it; None without
    python3-onnx."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rs = np.random.RandomState(1)
    nodes, inits = [], []

    def conv_bn_relu(x, ci, co, k):
        w = (rs.standard_normal((co, ci, 3, 3)) *
             np.sqrt(2.0 / (ci * 9))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w%d" % k))
        for nm, v in (("g", np.ones(co)), ("b", np.zeros(co)),
                      ("m", np.zeros(co)), ("v", np.ones(co))):
            inits.append(numpy_helper.from_array(v.astype(np.float32),
                                                 "%s%d" % (nm, k)))
        nodes.append(helper.make_node("Conv", [x, "w%d" % k], ["c%d" % k],
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node(
            "BatchNormalization", ["c%d" % k] + ["%s%d" % (nm, k)
                                                for nm in "gbmv"],
            ["n%d" % k]))
        nodes.append(helper.make_node("Relu", ["n%d" % k], ["r%d" % k]))
        return "r%d" % k

    x = conv_bn_relu("input", 3, 32, 0)
    y = conv_bn_relu(x, 32, 32, 1)
    nodes.append(helper.make_node("Add", [x, y], ["a1"]))
    nodes.append(helper.make_node("MaxPool", ["a1"], ["p1"],
                                  kernel_shape=[2, 2], strides=[2, 2]))
    x = conv_bn_relu("p1", 32, 64, 2)
    y = conv_bn_relu(x, 64, 64, 3)
    nodes.append(helper.make_node("Add", [x, y], ["a3"]))
    nodes.append(helper.make_node("MaxPool", ["a3"], ["p3"],
                                  kernel_shape=[2, 2], strides=[2, 2]))
    x = conv_bn_relu("p3", 64, 128, 4)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    w = (rs.standard_normal((10, 128)) * np.sqrt(1.0 / 128)).astype(
        np.float32)
    inits += [numpy_helper.from_array(w, "fw"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fb")]
    nodes.append(helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"],
                                  transB=1))
    g = helper.make_graph(
        nodes, "widecnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, os.path.join(tmp, "widecnn.onnx"))
    np.savez(os.path.join(tmp, "widecnn.npz"),
             input=rs.standard_normal((256, 3, 32, 32)).astype(np.float32),
             labels=rs.randint(0, 10, 256).astype(np.int64))
    return (os.path.join(tmp, "widecnn.onnx"),
            os.path.join(tmp, "widecnn.npz"))


def widetr_files(tmp, d=256, ff=1024):
    """The transformer fixture's architecture at d 256, FFN 1024 (the
    fixture: 32, 64), randomly initialized (seed 0), on the fixture's
    data: one where the products are a larger part of a step."""
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, FIX)
    import models
    torch.manual_seed(0)
    m = models.Transformer(d=d, heads=4, ff=ff, layers=2)
    data = np.load(os.path.join(FIX, "digits", "transformer_heldout.npz"))
    path = os.path.join(tmp, "widetr.onnx")
    torch.onnx.export(m, (torch.from_numpy(data["input_ids"][:2]),), path,
                      opset_version=17, input_names=["input_ids"],
                      output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch"},
                                    "logits": {0: "batch"}},
                      do_constant_folding=True)
    npz = os.path.join(tmp, "widetr.npz")
    np.savez(npz, input_ids=data["input_ids"], labels=data["labels"])
    return path, npz


def profile(a, name, wide):
    """Per step kind, CPU ms per step of one f32 and one bf16 run
    (SS_TRAIN_PROFILE=cpu: the trainer's thread, so one thread only)."""
    exe = os.path.join(a.build, "compress", "train", "train-bench")
    onnx_path, npz = files(name, wide)
    agg = {}
    for p in ("f32", "bf16"):
        r = subprocess.run([exe, onnx_path, npz, str(a.batch), str(a.steps),
                            "1", "adamw", p], check=True, capture_output=True,
                           text=True, env=dict(os.environ,
                                               SS_TRAIN_PROFILE="cpu"))
        agg[p] = {}
        for line in r.stderr.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0].isdigit() and "ms" in f:
                k = f.index("ms")
                agg[p][f[1]] = (agg[p].get(f[1], 0)
                                + float(f[k - 1]) / (a.steps + 5))
    tot = {p: sum(v.values()) for p, v in agg.items()}
    print("  %s, CPU ms per step by step kind (one thread, one run each):"
          % name)
    for k in sorted(set(agg["f32"]) | set(agg["bf16"]),
                    key=lambda k: -agg["f32"].get(k, 0)):
        f, b = agg["f32"].get(k, 0), agg["bf16"].get(k, 0)
        if f + b >= 0.01 * (tot["f32"] + tot["bf16"]) / 2:
            print("    %-22s f32 %8.3f (%4.1f%%)  bf16 %8.3f  %s" % (
                k, f, 100 * f / tot["f32"], b,
                "%.2fx" % (f / b) if b > 0 else "(bf16 only)"))
    print("    %-22s f32 %8.3f          bf16 %8.3f  %.2fx" % (
        "all", tot["f32"], tot["bf16"], tot["f32"] / tot["bf16"]))


def files(name, wide):
    if name in wide:
        return wide[name]
    return (os.path.join(FIX, name + "_op17", "model.onnx"),
            os.path.join(FIX, "digits", name + "_heldout.npz"))


def c_run(build, name, steps, threads, batch, precision="f32", wide=None):
    """precision: PREC[:LAYOUT[:KERNELS]], or PREC:teams (batch slices
    off: SS_TRAIN_SLICES=0)."""
    exe = os.path.join(build, "compress", "train", "train-bench")
    onnx_path, npz = files(name, wide)
    env = dict(os.environ)
    if precision.endswith(":teams"):
        precision = precision[:-len(":teams")]
        env["SS_TRAIN_SLICES"] = "0"
    prec, layout, nn = (precision.split(":") + ["blocked", "auto"])[:3]
    out = subprocess.run(
        [exe, onnx_path, npz, str(batch), str(steps), str(threads), "adamw",
         prec, layout, nn],
        check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def c_pair(a, name, bf16, wide):
    """f32 and bf16 (and f32 NCHW) runs alternating: medians of ms and
    CPU ms."""
    runs = {"f32": [], "bf16": [], "f32:nchw": [], "f32:blocked:dnn": [],
            "bf16-f32acts": [], "f32:teams": [], "bf16:teams": [],
            "torch": []}
    kinds = ["f32"] + (["bf16"] if bf16 else []) + (
        ["f32:nchw"] if a.nchw else []) + (
        ["f32:blocked:dnn"] if a.nn_dnn else []) + (
        ["bf16-f32acts"] if a.f32_acts and bf16 else []) + (
        ["f32:teams"] + (["bf16:teams"] if bf16 else []) if a.teams
        else [])
    for _ in range(a.reps):
        for p in kinds:
            runs[p].append(c_run(a.build, name, a.steps, a.threads, a.batch,
                                 p, wide))
        if name not in wide:
            runs["torch"].append(torch_run(name, a.steps, a.threads,
                                           a.batch))
    med = {}
    for p, rs in runs.items():
        if rs:
            med[p] = {k: float(np.median([r[k] for r in rs]))
                      for k in ("ms_per_step", "cpu_ms_per_step")}
            med[p]["samples_per_s"] = a.batch * 1e3 / med[p]["ms_per_step"]
            med[p]["graph"] = rs[0].get("graph", "")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("top_builddir", TOP))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default="mlp,cnn,transformer,wide")
    ap.add_argument("--nchw", action="store_true",
                    help="also run f32 with NCHW activations (before "
                    "blocked convolutions)")
    ap.add_argument("--nn-dnn", action="store_true",
                    help="also run f32 with BatchNorm, Relu and pooling on "
                    "oneDNN (as bf16 runs them) and compare bf16 with it")
    ap.add_argument("--profile", action="store_true",
                    help="after each model, CPU ms per step kind of an f32 "
                    "and a bf16 run (one thread)")
    ap.add_argument("--f32-acts", action="store_true",
                    help="also run bf16 with f32 activations (only the "
                    "products' operands bf16) and compare bf16 with it")
    ap.add_argument("--teams", action="store_true",
                    help="also run f32 and bf16 with batch slices off "
                    "(SS_TRAIN_SLICES=0: every step an OpenMP team of "
                    "--threads) and compare")
    ap.add_argument("--ceiling", action="store_true",
                    help="first, bf16 over f32 of an MLP step's products "
                    "alone (the fixture's widths and 784-512-256-10)")
    a = ap.parse_args()
    model, isa = cpu()
    bf16 = "avx512_bf16" in isa.split() or "amx_bf16" in isa.split()
    print("cpu: %s; isa: %s; threads %d, batch %d, AdamW; load average "
          "%.1f at the start" % (model, isa or "-", a.threads, a.batch,
                                 os.getloadavg()[0]))
    if a.ceiling and bf16:
        ceiling(a)
    print("%-12s %12s %12s %8s %8s %12s %9s %9s%s" % (
        "model", "C samples/s", "torch s/s", "ratio", "(cpu)", "C bf16 s/s",
        "bf16/f32", "(cpu)", " %12s %9s %9s" % (
            "C NCHW s/s", "blk/NCHW", "(cpu)") if a.nchw else "") + (
            " %12s %11s %9s" % ("C f32dnn s/s", "bf16/f32dnn", "(cpu)")
            if a.nn_dnn else "") + (
            " %12s %12s %9s" % ("bf16f32a s/s", "bf16/f32acts", "(cpu)")
            if a.f32_acts else "") + (
            " %12s %12s %12s" % ("C teams s/s", "slices/teams",
                                 "bf16/f32 tm") if a.teams else ""))
    tmp = tempfile.mkdtemp(prefix="train-bench-")
    try:
        names = a.models.split(",")
        wide = {k: f(tmp) for k, f in (("wide", wide_files),
                                       ("mnist", mnist_files),
                                       ("widecnn", widecnn_files),
                                       ("widetr", widetr_files))
                if k in names}
        for name in names:
            if name in wide and wide[name] is None:
                print("%s: python3-onnx is not installed, skipped" % name)
                continue
            m = c_pair(a, name, bf16, wide)
            c, b, n = m["f32"], m.get("bf16"), m.get("f32:nchw")
            d, e = m.get("f32:blocked:dnn"), m.get("bf16-f32acts")
            t = m.get("torch")
            print("%-12s %12.0f %12s %8s %8s %12s %9s %9s" % (
                name, c["samples_per_s"],
                "%.0f" % t["samples_per_s"] if t else "-",
                "%.2fx" % (c["samples_per_s"] / t["samples_per_s"]) if t
                else "-",
                "%.2fx" % (t["cpu_ms_per_step"] / c["cpu_ms_per_step"]) if t
                else "-",
                "%.0f" % b["samples_per_s"] if b else "-",
                "%.2fx" % (c["ms_per_step"] / b["ms_per_step"]) if b
                else "-",
                "%.2fx" % (c["cpu_ms_per_step"] / b["cpu_ms_per_step"])
                if b else "-") + (" %12.0f %9s %9s" % (
                    n["samples_per_s"],
                    "%.2fx" % (n["ms_per_step"] / c["ms_per_step"]),
                    "%.2fx" % (n["cpu_ms_per_step"] / c["cpu_ms_per_step"]))
                    if n else "") + (" %12.0f %11s %9s" % (
                        d["samples_per_s"],
                        "%.2fx" % (d["ms_per_step"] / b["ms_per_step"])
                        if b else "-",
                        "%.2fx" % (d["cpu_ms_per_step"] / b["cpu_ms_per_step"])
                        if b else "-") if d else "") + (" %12.0f %12s %9s" % (
                            e["samples_per_s"],
                            "%.2fx" % (e["ms_per_step"] / b["ms_per_step"]),
                            "%.2fx" % (e["cpu_ms_per_step"] /
                                       b["cpu_ms_per_step"])) if e else "")
                + (" %12.0f %12s %12s" % (
                    m["f32:teams"]["samples_per_s"],
                    "%.2fx" % (m["f32:teams"]["ms_per_step"] /
                               c["ms_per_step"]),
                    "%.2fx" % (m["f32:teams"]["ms_per_step"] /
                               m["bf16:teams"]["ms_per_step"])
                    if "bf16:teams" in m else "-") if a.teams else ""))
            how = c.get("graph", "").split("; ")[-1]
            if how.startswith("the batch"):
                print("  %s: %s" % (name, how))
            if a.profile and bf16:
                profile(a, name, wide)
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("load average %.1f at the end; every column is the median step "
          "after 5 warm-up steps (C: median over %d runs)" % (
              os.getloadavg()[0], a.reps))


if __name__ == "__main__":
    main()
