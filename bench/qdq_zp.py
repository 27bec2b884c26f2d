#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""int8 padded convs with an activation zero point, against f32.

ONNX Runtime's quantize_static writes u8 activations with a zero point
(QDQ form): x -Q(u8, z)-> -DQ-> Conv 3x3 pads 1.  slimserve runs such a
conv on oneDNN's int8 kernel with z as oneDNN's source zero point (the
padding then counts as a real 0, plan_qdq.c); before session 28 it ran
the f32 conv of the dequantized source.  This bench times, in one run
and interleaved, three models of the same four-conv stack (3x3, pads 1,
ReLU, C channels, HxW):

  f32     the plain f32 convs
  int8z   QDQ, u8 activations with zero point 128 (ORT's default form)
  int8    QDQ, zero point 0 (the form slimserve's own ptq writes)

and, with --base CLI (an older slimserve-infer), int8z on that binary too
(before session 28: the f32 fallback).  Medians of the per-run CPU ms
(slimserve-infer's "cpu" figure); ratios are of CPU medians measured in
the same run.  Prints CPU model, oneDNN ISA and load.

  bench/qdq_zp.py [--cli PATH] [--base PATH] [--batches 1,32]
                  [--channels 64] [--size 28] [--rounds 5] [--threads 1]
"""

import os
import statistics
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import engine  # noqa: E402  (find_cli, run_slimserve, cpu_model, ...)


def build(c, size, zp, qdq, seed=5):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    sx = np.float32(4.0 / 255)
    inits += [numpy_helper.from_array(np.array(sx, np.float32), "sx"),
              numpy_helper.from_array(np.array(zp, np.uint8), "zx")]
    cur = "x"
    for i in range(4):
        w = (rng.standard_normal((c, c, 3, 3)) / (3 * c ** 0.5)
             ).astype(np.float32)
        if qdq:
            ws = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
            wq = np.round(w / ws[:, None, None, None]).astype(np.int8)
            inits += [numpy_helper.from_array(wq, "wq%d" % i),
                      numpy_helper.from_array(ws, "ws%d" % i),
                      numpy_helper.from_array(np.zeros(c, np.int8),
                                              "wz%d" % i)]
            nodes += [helper.make_node("QuantizeLinear", [cur, "sx", "zx"],
                                       ["q%d" % i]),
                      helper.make_node("DequantizeLinear",
                                       ["q%d" % i, "sx", "zx"], ["d%d" % i]),
                      helper.make_node("DequantizeLinear",
                                       ["wq%d" % i, "ws%d" % i, "wz%d" % i],
                                       ["w%d" % i], axis=0)]
            src = "d%d" % i
        else:
            inits.append(numpy_helper.from_array(w, "w%d" % i))
            src = cur
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(c) * 0.1).astype(np.float32), "b%d" % i))
        nodes += [helper.make_node("Conv", [src, "w%d" % i, "b%d" % i],
                                   ["c%d" % i], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c%d" % i], ["r%d" % i])]
        cur = "r%d" % i
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    g = helper.make_graph(
        nodes, "qdq_zp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       ["n", c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       ["n", c, size, size])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def main():
    ap = engine.ab_options(__doc__, "1,32", 5)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    a = ap.parse_args()
    cli = engine.ab_cli(a, "qdq_zp")
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, zp, qdq in (("f32", 0, False), ("int8z", 128, True),
                              ("int8", 0, True)):
            models[name] = os.path.join(tmp, name + ".onnx")
            onnx.save(build(a.channels, a.size, zp, qdq), models[name])
        runs = [(n, cli, models[n]) for n in ("f32", "int8z", "int8")]
        if a.base:
            runs.append(("int8z@base", a.base, models["int8z"]))
        out = os.path.join(tmp, "y.npz")
        print("qdq_zp: %s, %d thread(s), C=%d %dx%d, load %s"
              % (engine.cpu_model(), a.threads, a.channels, a.size, a.size,
                 engine.loadavg()))
        for b in (int(v) for v in a.batches.split(",")):
            x = np.random.default_rng(b).uniform(
                -1, 1, (b, a.channels, a.size, a.size)).astype(np.float32)
            xf = os.path.join(tmp, "x%d.npy" % b)
            np.save(xf, x)
            if b == int(a.batches.split(",")[0]):
                print("oneDNN ISA: %s" % engine.onednn_isa(
                    cli, models["int8z"], xf, "x"))
            n = max(5, 600 // b)
            cpu = {name: [] for name, _, _ in runs}
            ys = {}
            for _ in range(a.rounds):
                for name, c, m in runs:
                    _, _, ys[name] = engine.run_slimserve(
                        c, m, xf, "x", out, n, 3, a.threads, "y")
                    cpu[name] += engine.CPU_MS[c]
            med = {k: statistics.median(v) for k, v in cpu.items()}
            line = "batch %3d  cpu ms median: %s" % (b, "  ".join(
                "%s %.3f" % (k, v) for k, v in med.items()))
            line += "  | f32/int8z %.2fx  f32/int8 %.2fx" % (
                med["f32"] / med["int8z"], med["f32"] / med["int8"])
            if a.base:
                line += "  int8z@base/int8z %.2fx" % (
                    med["int8z@base"] / med["int8z"])
                line += "  (int8z vs base max rel diff %.1e)" % (
                    engine.rel_diff(ys["int8z"], ys["int8z@base"]
                                    .astype(np.float64)))
            print(line + "  load %s" % engine.loadavg(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
