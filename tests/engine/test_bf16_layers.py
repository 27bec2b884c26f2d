#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Per-layer bf16 (metadata "slimserve.bf16_nodes", engine/ir/edit.h).

A two-layer MLP, fc1 (Gemm + Relu, whose result h is also a graph
output) then fc2 (Gemm), run through slimserve-infer:
  - only fc1 listed: h equals the numpy reference computed on fc1's
    input and weights rounded to bf16 (round to nearest even, as oneDNN
    converts), products summed in f64; y equals fc2 in f32 applied to
    the h slimserve returned;
  - only fc2 listed: h is bit for bit the all-f32 run's h (fc1 stays
    exactly f32) and y equals the reference on bf16(h) and bf16(W2);
  - whole-graph bf16 ("slimserve.precision") rounds both layers, as
    before; a name that matches no node is ignored with a warning on
    stderr and the model runs exactly as f32.
A 2-D chain (1-channel conv + Relu, MaxPool, conv + Relu) under
whole-graph bf16 runs in nChw16c bf16 from the first conv's output on
(cnn_case).  A 3-D conv pair (conv1 + Relu -> h, a graph output -> conv2, stride 2)
under whole-graph bf16: h and y against the same bf16-rounded float64
references (numpy convolution), and ONEDNN_VERBOSE shows both on bf16
jit kernels over 5-D tensors, not reference code.
Tolerance against a reference: |got - ref| <= 1e-5 * max|ref| + 1e-6
(bf16 x bf16 products are exact in f32: only the f32 summation order
differs).  Each bf16 case also checks that it is at least 20x that far
from the all-f32 answer, so a layer that silently stayed f32 fails.
"""

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # pragma: no cover - the CI image has it
    print("1..0 # SKIP needs python3-onnx: %s" % e)
    sys.exit(0)

RTOL, ATOL = 1e-5, 1e-6
RNG = np.random.default_rng(15)
X = RNG.standard_normal((8, 64)).astype(np.float32)
W1 = (RNG.standard_normal((48, 64)) / 8).astype(np.float32)
B1 = (RNG.standard_normal(48) * 0.1).astype(np.float32)
W2 = (RNG.standard_normal((16, 48)) / 7).astype(np.float32)
B2 = (RNG.standard_normal(16) * 0.1).astype(np.float32)


def bf16(a):
    """a rounded to bf16 (nearest, ties to even), back in f32."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def linear(x, w, b):
    return (x.astype(np.float64) @ w.astype(np.float64).T
            + b.astype(np.float64))


def model(meta):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="fc1",
                              transB=1),
             helper.make_node("Relu", ["g1"], ["h"], name="relu1"),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], name="fc2",
                              transB=1)]
    g = helper.make_graph(
        nodes, "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 48])],
        [numpy_helper.from_array(a, n) for n, a in
         (("w1", W1), ("b1", B1), ("w2", W2), ("b2", B2))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    if meta:
        helper.set_model_props(m, meta)
    onnx.checker.check_model(m)
    return m


def run(meta):
    """(outputs or None, stderr or the failure message)."""
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(model(meta), path)
        np.save(s.file("x.npy"), X)
        cmd = [infer.cli_path(), "--model", path, "--input",
               "x=" + s.file("x.npy"), "--output", s.file("out.npz")]
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=infer.TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        err = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            return None, "exit %d: %s" % (p.returncode, err[-800:])
        with np.load(s.file("out.npz")) as z:
            return {k: z[k] for k in z.files}, err


def dist(got, ref):
    return float(np.max(np.abs(got.astype(np.float64) - ref)))


def tol(ref):
    return RTOL * float(np.max(np.abs(ref))) + ATOL


def near(name, got, ref, far_from=None):
    d, t = dist(got, ref), tol(ref)
    ok = d <= t
    msg = "max |diff| %.3g <= %.3g" % (d, t)
    if far_from is not None:
        f = dist(got, far_from)
        ok = ok and f >= 20 * t
        msg += "; %.3g from f32 (>= %.3g)" % (f, 20 * t)
    return tap.ok(ok, name, msg)


X3 = RNG.standard_normal((2, 4, 4, 6, 6)).astype(np.float32)
C1 = (RNG.standard_normal((16, 4, 3, 3, 3)) / 10).astype(np.float32)
CB1 = (RNG.standard_normal(16) * 0.1).astype(np.float32)
C2 = (RNG.standard_normal((8, 16, 3, 3, 3)) / 20).astype(np.float32)
CB2 = (RNG.standard_normal(8) * 0.1).astype(np.float32)


X2 = RNG.standard_normal((2, 1, 12, 12)).astype(np.float32)
D1 = (RNG.standard_normal((16, 1, 3, 3)) / 3).astype(np.float32)
DB1 = (RNG.standard_normal(16) * 0.1).astype(np.float32)
D2 = (RNG.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
DB2 = (RNG.standard_normal(32) * 0.1).astype(np.float32)


def conv3d_run(meta):
    """3-D: conv1 (pads 1) + Relu -> h (a graph output) -> conv2 (stride
    2, pads 1) -> y, through the CLI with ONEDNN_VERBOSE: (outputs or
    None, stdout + stderr)."""
    nodes = [helper.make_node("Conv", ["x", "c1", "cb1"], ["g1"],
                              name="conv1", pads=[1] * 6),
             helper.make_node("Relu", ["g1"], ["h"], name="relu1"),
             helper.make_node("Conv", ["h", "c2", "cb2"], ["y"],
                              name="conv2", pads=[1] * 6, strides=[2] * 3)]
    return conv_run(nodes, [("x", [4, 4, 6, 6], X3)],
                    [("y", [8, 2, 3, 3]), ("h", [16, 4, 6, 6])],
                    (("c1", C1), ("cb1", CB1), ("c2", C2), ("cb2", CB2)),
                    meta)


def cnn_run(meta):
    """2-D: the first layer (1 input channel, pads 1) + Relu -> MaxPool 2
    -> conv2 (16 -> 32, pads 1) + Relu -> y."""
    nodes = [helper.make_node("Conv", ["x", "d1", "db1"], ["g1"],
                              name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["g1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1",
                              kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "d2", "db2"], ["g2"],
                              name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["g2"], ["y"], name="relu2")]
    return conv_run(nodes, [("x", [1, 12, 12], X2)], [("y", [32, 6, 6])],
                    (("d1", D1), ("db1", DB1), ("d2", D2), ("db2", DB2)),
                    meta)


def conv_run(nodes, ins, outs, inits, meta):
    """The graph of nodes (inputs [(name, dims after N, value)], outputs
    [(name, dims after N)]) through the CLI with ONEDNN_VERBOSE: (outputs
    or None, stdout + stderr)."""
    g = helper.make_graph(
        nodes, "convs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"] + d)
         for n, d, _ in ins],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"] + d)
         for n, d in outs],
        [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    if meta:
        helper.set_model_props(m, meta)
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(m, path)
        np.save(s.file("x.npy"), ins[0][2])
        p = subprocess.run([infer.cli_path(), "--model", path, "--input",
                            "x=" + s.file("x.npy"), "--output",
                            s.file("out.npz")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=infer.TIMEOUT,
                           env=dict(os.environ, ONEDNN_VERBOSE="1"))
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
        if p.returncode != 0:
            return None, "exit %d: %s" % (p.returncode, text[-800:])
        with np.load(s.file("out.npz")) as z:
            return {k: z[k] for k in z.files}, text


def conv3d_case():
    """The 3-D convs in bf16 as the 2-D ones: h on bf16(x), bf16(C1); y
    on bf16(h), bf16(C2); both on oneDNN's bf16 jit kernels."""
    got, text = conv3d_run({"slimserve.precision": "bf16"})
    if got is None:
        return tap.ok(False, "3-D bf16 convs run", text)
    h32 = np.maximum(infer.conv_ref(X3, C1, [1] * 6, [1] * 3)
                     + CB1[:, None, None, None], 0)
    h_ref = np.maximum(infer.conv_ref(bf16(X3), bf16(C1), [1] * 6, [1] * 3)
                       + CB1[:, None, None, None], 0)
    near("3-D bf16: h equals the bf16-rounded reference", got["h"], h_ref,
         far_from=h32)
    near("3-D bf16: y equals the reference on bf16(h), bf16(C2)", got["y"],
         infer.conv_ref(bf16(got["h"]), bf16(C2), [1] * 6, [2] * 3)
         + CB2[:, None, None, None],
         far_from=infer.conv_ref(got["h"], C2, [1] * 6, [2] * 3)
         + CB2[:, None, None, None])
    convs = [ln.split(",") for ln in text.splitlines()
             if ln.startswith("onednn_verbose,exec,cpu,convolution,")]
    tap.ok(len(convs) == 2 and all(
        not f[4].startswith("ref") and f[6].startswith("src_bf16")
        and "_id" in ",".join(f) for f in convs),
        "3-D bf16: both convs on oneDNN bf16 jit kernels (%s)"
        % [f[4] for f in convs], text[-1500:])


def pool2(a):
    n, c, h, w = a.shape
    return a.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def cnn_case():
    """The 2-D chain in bf16 blocked layouts (session 30): conv1 reads the
    plain bf16 input on oneDNN's first-layer kernel and writes nChw16c
    bf16 (only bf16 steps read it), the pool runs on that, conv2 reads
    it.  The reference rounds x, the weights and the pooled conv1 output
    to bf16 (the usual tolerance: rounding p1 from float64 rather than
    from the kernel's f32 sum moves none of these by a bf16 step)."""
    got, text = cnn_run({"slimserve.precision": "bf16"})
    if got is None:
        return tap.ok(False, "2-D bf16 chain runs", text)
    bias = (lambda b: b[:, None, None])

    def net(x, w1, w2, rnd):
        p1 = rnd(pool2(np.maximum(infer.conv_ref(x, w1, [1] * 4, [1, 1])
                                  + bias(DB1), 0)))
        return np.maximum(infer.conv_ref(p1, w2, [1] * 4, [1, 1])
                          + bias(DB2), 0)

    want = net(bf16(X2), bf16(D1), bf16(D2), bf16)
    f32 = net(X2, D1, D2, lambda a: a)
    near("2-D bf16 chain: y equals the bf16 reference", got["y"], want,
         far_from=f32)
    ex = [ln.split(",") for ln in text.splitlines()
          if ln.startswith("onednn_verbose,exec,cpu,")]
    convs = [f for f in ex if f[3] == "convolution"]
    pools = [f for f in ex if f[3].startswith("pooling")]
    tap.ok(len(convs) == 2 and "src_bf16::blocked:abcd" in convs[0][6]
           and "dst_bf16::blocked:aBcd16b" in ",".join(convs[0])
           and "src_bf16::blocked:aBcd16b" in convs[1][6]
           and len(pools) == 1 and "src_bf16::blocked:aBcd16b" in pools[0][6]
           and not any(f[4].startswith("ref") or "gemm" in f[4]
                       for f in convs + pools),
           "2-D bf16 chain: conv1 plain -> nChw16c, pool and conv2 on "
           "nChw16c bf16, jit kernels (%s)" % [f[4] for f in convs + pools],
           "\n".join(",".join(f) for f in ex))


def main():
    cnn_case()
    conv3d_case()
    f32, err = run(None)
    if not tap.ok(f32 is not None, "the f32 model runs", err):
        return tap.done()
    h32 = np.maximum(linear(X, W1, B1), 0)
    y32 = linear(f32["h"], W2, B2)
    near("f32: h and y equal numpy", np.concatenate(
        [f32["h"].ravel(), f32["y"].ravel()]),
        np.concatenate([h32.ravel(), y32.ravel()]))

    # only fc1 in bf16
    got, err = run({"slimserve.bf16_nodes": "fc1"})
    if got is None:
        tap.ok(False, "fc1 bf16 runs", err)
        tap.ok(False, "fc1 bf16: fc2 f32", err)
    else:
        h_ref = np.maximum(linear(bf16(X), bf16(W1), B1), 0)
        near("fc1 bf16: h equals the bf16-rounded reference", got["h"],
             h_ref, far_from=h32)
        near("fc1 bf16: fc2 stays f32 (y = f32 fc2 of that h)", got["y"],
             linear(got["h"], W2, B2),
             far_from=linear(bf16(got["h"]), bf16(W2), B2))

    # only fc2 in bf16
    got, err = run({"slimserve.bf16_nodes": "fc2"})
    if got is None:
        tap.ok(False, "fc2 bf16 runs", err)
        tap.ok(False, "fc2 bf16: fc1 f32", err)
    else:
        tap.ok(np.array_equal(got["h"], f32["h"]),
               "fc2 bf16: fc1 stays exactly f32 (h bit for bit the f32 h)")
        near("fc2 bf16: y equals the reference on bf16(h), bf16(W2)",
             got["y"], linear(bf16(f32["h"]), bf16(W2), B2),
             far_from=linear(f32["h"], W2, B2))

    # whole graph, as before
    got, err = run({"slimserve.precision": "bf16"})
    if got is None:
        tap.ok(False, "whole-graph bf16 runs", err)
    else:
        h_ref = np.maximum(linear(bf16(X), bf16(W1), B1), 0)
        near("whole-graph bf16: both layers rounded",
             np.concatenate([got["h"].ravel(), got["y"].ravel()]),
             np.concatenate([h_ref.ravel(), linear(bf16(got["h"]),
                                                   bf16(W2), B2).ravel()]),
             far_from=np.concatenate([h32.ravel(), y32.ravel()]))

    # a name that matches no node: ignored, said, the rest as asked
    got, err = run({"slimserve.bf16_nodes": "nope"})
    tap.ok(got is not None and np.array_equal(got["h"], f32["h"])
           and np.array_equal(got["y"], f32["y"]),
           "an unknown name alone: the model runs exactly as f32")
    tap.ok(got is not None and "'nope'" in err and "no node" in err,
           "the unknown name is logged at plan time", err.strip()[-300:])
    got, err = run({"slimserve.bf16_nodes": "nope,fc2,"})
    tap.ok(got is not None and np.array_equal(got["h"], f32["h"])
           and dist(got["y"], linear(bf16(f32["h"]), bf16(W2), B2))
           <= tol(y32), "unknown and empty entries do not stop the others")
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
