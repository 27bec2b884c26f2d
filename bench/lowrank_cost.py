#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""What low-rank factors cost against the layer they replace: the
measurements behind compress/lowrank.c's table of shares (a layer is
factored only when its factors cost at most 2/3 of a Linear's
multiply-adds, 1/2 of a conv's as channel factors, 1/3 as spatial ones).

    /usr/bin/python3 bench/lowrank_cost.py BUILDDIR [--kind linear|conv]
        [--shapes 512x1000,256x256] [--fracs 0.9,0.75,0.67,0.6]
        [--batches 1,32] [--rounds 3]

linear: one Gemm (x W^T + b, W [m, n]) against the factors as lowrank.c
writes them (MatMul x [n, r], then Gemm [m, r] transB + b) at the rank r
whose r (m + n) is the given share of m n; 4 copies of the layer read the
same x in one run, so the run's fixed cost weighs less.  conv: a 3x3 conv
128 -> 128 at 28x28 between two 1x1 convs, against its channel factors
(3x3 to r, 1x1) and spatial ones (3x1 to r, 1x3) at the ranks whose
multiply-adds are the given shares.  Random weights (the cost does not
depend on them).  A cell is the factors' CPU time over the layer's, the
median over rounds (versions interleaved) of the median per-run CPU time
of engine/tools/slimserve-infer at 1 thread.  The header names the CPU and
oneDNN's effective ISA (from one ONEDNN_VERBOSE run of a Gemm), as
bench/engine.py's does.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from engine import cpu_model, loadavg, onednn_isa  # noqa: E402

COPIES = 4
RNG = np.random.default_rng(0)


def save(path, nodes, inits, x_shape, outs):
    g = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)
         for y in outs], inits)
    onnx.save(helper.make_model(g, opset_imports=[
        helper.make_opsetid("", 13)]), path)


def const(name, shape, fan_in):
    return numpy_helper.from_array(
        (RNG.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32),
        name)


def linear(path, n, m, r):
    """COPIES Gemms [m, n] (r 0) or their rank-r factors, all reading x."""
    nodes, inits, outs = [], [], []
    for k in range(COPIES):
        y, b = "y%d" % k, "b%d" % k
        inits.append(const(b, (m,), 100))
        outs.append(y)
        if r == 0:
            inits.append(const("w%d" % k, (m, n), n))
            nodes.append(helper.make_node("Gemm", ["x", "w%d" % k, b], [y],
                                          transB=1))
        else:
            inits += [const("u%d" % k, (n, r), n),
                      const("v%d" % k, (m, r), r)]
            nodes += [helper.make_node("MatMul", ["x", "u%d" % k],
                                       ["t%d" % k]),
                      helper.make_node("Gemm", ["t%d" % k, "v%d" % k, b],
                                       [y], transB=1)]
    save(path, nodes, inits, ["N", n], outs)


def convs(path, layers, c, hw):
    """x -> 1x1 -> layers (o, i, kh, kw, pads) -> 1x1."""
    one = (c, c, 1, 1, [0, 0, 0, 0])
    nodes, inits, x = [], [], "x"
    seq = [one] + layers + [one]
    for i, (o, ci, kh, kw, pads) in enumerate(seq):
        inits.append(const("w%d" % i, (o, ci, kh, kw), ci * kh * kw))
        y = "y" if i == len(seq) - 1 else "t%d" % i
        nodes.append(helper.make_node("Conv", [x, "w%d" % i], [y],
                                      pads=pads))
        x = y
    save(path, nodes, inits, ["N", c, hw, hw], ["y"])


def cpu_ms(cli, model, npz, repeat):
    p = subprocess.run([cli, "-m", model, "-i", npz, "--repeat",
                        str(repeat), "--warmup", "3", "--threads", "1"],
                       capture_output=True, text=True, timeout=600)
    runs = [float(v) for v in re.findall(r"cpu ([0-9.]+) ms", p.stderr)]
    if p.returncode != 0 or not runs:
        raise RuntimeError("slimserve-infer %s: %s" % (model, p.stderr))
    return statistics.median(runs)


def measure(cli, models, npz, rounds, repeat):
    """-> {name: median ms}, the models interleaved round by round."""
    cells = {k: [] for k in models}
    for _ in range(rounds):
        for k, f in models.items():
            cells[k].append(cpu_ms(cli, f, npz, repeat))
    return {k: statistics.median(v) for k, v in cells.items()}


def run_linear(a, cli, tmp):
    for shape in a.shapes.split(","):
        n, m = (int(v) for v in shape.split("x"))
        models = {"layer": os.path.join(tmp, "full.onnx")}
        linear(models["layer"], n, m, 0)
        ranks = {}
        for f in a.fracs:
            r = max(1, int(round(f * n * m / (n + m))))
            ranks[f] = r
            models[f] = os.path.join(tmp, "f%g.onnx" % f)
            linear(models[f], n, m, r)
        for bs in a.batches:
            npz = os.path.join(tmp, "x.npz")
            np.savez(npz, x=RNG.standard_normal((bs, n)).astype(np.float32))
            t = measure(cli, models, npz, a.rounds, 200 if bs == 1 else 40)
            print("%s -> %s batch %d: layer %.3f ms (x%d); factors: %s "
                  "(load %s)" % (n, m, bs, t["layer"], COPIES, ", ".join(
                      "%.2f of the MACs (r %d) %.2fx the time"
                      % (f, ranks[f], t[f] / t["layer"]) for f in a.fracs),
                      loadavg()), flush=True)


def run_conv(a, cli, tmp):
    c, hw = 128, 28
    full = c * c * 9
    models = {"layer": os.path.join(tmp, "full.onnx")}
    convs(models["layer"], [(c, c, 3, 3, [1, 1, 1, 1])], c, hw)
    for f in a.fracs:
        r = max(1, int(round(f * full / (c * 9 + c))))
        models["channel %.2f (r %d)" % (f, r)] = os.path.join(
            tmp, "ch%g.onnx" % f)
        convs(models["channel %.2f (r %d)" % (f, r)],
              [(r, c, 3, 3, [1, 1, 1, 1]), (c, r, 1, 1, [0, 0, 0, 0])], c,
              hw)
        r = max(1, int(round(f * full / (c * 3 + c * 3))))
        models["spatial %.2f (r %d)" % (f, r)] = os.path.join(
            tmp, "sp%g.onnx" % f)
        convs(models["spatial %.2f (r %d)" % (f, r)],
              [(r, c, 3, 1, [1, 0, 1, 0]), (c, r, 1, 3, [0, 1, 0, 1])], c,
              hw)
    for bs in a.batches:
        npz = os.path.join(tmp, "x.npz")
        np.savez(npz, x=RNG.standard_normal((bs, c, hw, hw)).astype(
            np.float32))
        t = measure(cli, models, npz, a.rounds, 5)
        print("conv 128 -> 128 3x3 at 28x28 between 1x1s, batch %d: %.2f ms"
              % (bs, t["layer"]))
        for k in models:
            if k != "layer":
                print("  %-22s %.2fx the time" % (k, t[k] / t["layer"]))
        print("  (load %s)" % loadavg(), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--kind", choices=("linear", "conv"), default="linear")
    ap.add_argument("--shapes", default="512x1000,1280x1000,768x768,"
                    "768x3072,3072x768,256x256,784x128",
                    help="linear: IN x OUT, comma-separated")
    ap.add_argument("--fracs", default="0.9,0.75,0.67,0.6,0.5",
                    type=lambda s: [float(v) for v in s.split(",")])
    ap.add_argument("--batches", default="1,32",
                    type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    cli = os.path.join(a.build, "engine", "tools", "slimserve-infer")
    with tempfile.TemporaryDirectory(prefix="ss-lowrank-") as tmp:
        probe, x = os.path.join(tmp, "isa.onnx"), os.path.join(tmp, "x.npy")
        linear(probe, 64, 64, 0)
        np.save(x, RNG.standard_normal((1, 64)).astype(np.float32))
        print("# CPU %s, oneDNN ISA %s, 1 thread, CPU time of the factors / "
              "the layer's, median of %d rounds, load %s"
              % (cpu_model(), onednn_isa(cli, probe, x, "x"), a.rounds,
                 loadavg()), flush=True)
        (run_linear if a.kind == "linear" else run_conv)(a, cli, tmp)


if __name__ == "__main__":
    main()
