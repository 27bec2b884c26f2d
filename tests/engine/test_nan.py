#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""NaN and Inf through the engine, compared with PyTorch (issue 10).

oneDNN's ReLU, clip, max pooling and friends return the bound for a NaN
source where PyTorch returns NaN.  Each case here is a small ONNX model
(built with onnx.helper at test time) fed inputs holding NaN, +Inf and
-Inf among finite values, run through slimserve-infer and compared with
the same computation in PyTorch: the NaN positions must be the same, the
infinities must be the same, and finite values must agree within
    |slimserve - torch| <= rtol * max|torch finite| + atol.
The int8 path cannot carry NaN (nor can PyTorch's quantize_per_tensor):
NaN quantizes to 0 and infinities saturate (see docs/nan.md).
"""

import os
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
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - the CI image has both
    print("1..0 # SKIP needs python3-onnx and python3-torch: %s" % e)
    sys.exit(0)

NAN, INF = float("nan"), float("inf")
RNG = np.random.default_rng(10)


def poison(x):
    """x with NaN, +Inf and -Inf at a few spread positions."""
    x = x.copy()
    f = x.reshape(-1)
    n = f.size
    f[n // 7] = NAN
    f[(3 * n) // 7] = INF
    f[(5 * n) // 7] = -INF
    f[n - 1] = NAN
    return x


def model(nodes, inputs, outputs, inits=(), opset=13, meta=None):
    g = helper.make_graph(
        nodes, "nan",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
         for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [])
         for n in outputs],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if meta:
        helper.set_model_props(m, meta)
    onnx.checker.check_model(m)
    return m


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def compare(got, want, rtol, atol):
    if got is None:
        return False, "output missing"
    if got.shape != want.shape:
        return False, "shape %s, want %s" % (got.shape, want.shape)
    g = got.astype(np.float64).ravel()
    w = want.astype(np.float64).ravel()
    gn, wn = np.isnan(g), np.isnan(w)
    if not np.array_equal(gn, wn):
        i = int(np.flatnonzero(gn != wn)[0])
        return False, "NaN positions differ (%d got, %d want); first at " \
            "flat %d: got %r, want %r" % (gn.sum(), wn.sum(), i, g[i], w[i])
    gi, wi = np.isinf(g), np.isinf(w)
    if not np.array_equal(gi, wi) or not np.array_equal(g[gi], w[wi]):
        i = int(np.flatnonzero((gi != wi) | (gi & (g != w)))[0])
        return False, "Inf differ at flat %d: got %r, want %r" % (i, g[i],
                                                                  w[i])
    fin = np.isfinite(w)
    if not fin.any():
        return True, "%d NaN, %d Inf, no finite values" % (wn.sum(),
                                                             wi.sum())
    tol = rtol * float(np.max(np.abs(w[fin]))) + atol
    d = np.abs(g[fin] - w[fin])
    i = int(np.argmax(d))
    return bool(d[i] <= tol), "%d NaN, %d Inf match; max |diff| %.3g " \
        "(tolerance %.3g)" % (wn.sum(), wi.sum(), d[i], tol)


def check(name, m, feeds, want, rtol=1e-5, atol=1e-6):
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(m, path)
        specs = []
        for k, v in feeds.items():
            np.save(s.file(k + ".npy"), v.astype(np.float32))
            specs.append("%s=%s" % (k, s.file(k + ".npy")))
        got, msg = infer.run(path, specs, s.file("out.npz"))
    if got is None:
        return tap.ok(False, name, msg)
    ok, detail = compare(got.get("y"), want, rtol, atol)
    return tap.ok(ok, name, detail)


def unary(name, node, fn, shape=(4, 16), **kw):
    x = poison(RNG.standard_normal(shape).astype(np.float32) * 3)
    m = model([node], [("x", list(shape))], ["y"])
    with torch.no_grad():
        want = fn(t(x)).numpy()
    check(name, m, {"x": x}, want, **kw)


def mlp_model(meta=None, width=32, depth=3):
    """Gemm+Relu layers: the shape the fusion pass turns into one oneDNN
    inner product with a ReLU post-op."""
    rng = np.random.default_rng(3)
    nodes, inits, src = [], [], "x"
    dims = [16] + [width] * (depth - 1) + [10]
    ws = []
    for i in range(depth):
        w = (rng.standard_normal((dims[i + 1], dims[i])) /
             np.sqrt(dims[i])).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.1).astype(np.float32)
        inits += [("w%d" % i, w), ("b%d" % i, b)]
        ws.append((w, b))
        out = "y" if i == depth - 1 else "h%d" % i
        gemm = out if i == depth - 1 else "g%d" % i
        nodes.append(helper.make_node("Gemm", [src, "w%d" % i, "b%d" % i],
                                      [gemm], transB=1))
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [gemm], [out]))
        src = out
    return model(nodes, [("x", ["N", 16])], ["y"], inits, meta=meta), ws


def mlp_torch(x, ws, cast=None):
    h = t(x)
    for i, (w, b) in enumerate(ws):
        if cast is not None:
            h = h.to(cast).float()
            w = t(w).to(cast).float()
        else:
            w = t(w)
        h = F.linear(h, w, t(b))
        if i < len(ws) - 1:
            h = torch.relu(h)
    return h.numpy()


def mlp_input(rows=6):
    """Rows 0, 2, 4 hold NaN, +Inf, -Inf; the others are finite."""
    x = RNG.standard_normal((rows, 16)).astype(np.float32)
    x[0, 3] = NAN
    x[2, 7] = INF
    x[4, 1] = -INF
    return x


def qdq_mlp_model():
    """The int8 path: an MLP in QDQ form (as ptq writes it)."""
    rng = np.random.default_rng(4)
    dims = [16, 32, 10]
    nodes, inits, src = [], [], "x"
    ws = []
    for i in range(2):
        w = (rng.standard_normal((dims[i + 1], dims[i])) /
             np.sqrt(dims[i])).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.1).astype(np.float32)
        ws.append((w, b))
        sw = float(np.abs(w).max() / 127)
        wq = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
        inits_i = [
            numpy_helper.from_array(wq, "wq%d" % i),
            numpy_helper.from_array(np.array(sw, np.float32), "sw%d" % i),
            numpy_helper.from_array(np.array(0, np.int8), "zw%d" % i),
            numpy_helper.from_array(np.array(0.05, np.float32), "sx%d" % i),
            numpy_helper.from_array(np.array(0, np.int8), "zx%d" % i),
            numpy_helper.from_array(b, "b%d" % i)]
        inits += inits_i
        nodes += [
            helper.make_node("QuantizeLinear", [src, "sx%d" % i, "zx%d" % i],
                             ["xq%d" % i]),
            helper.make_node("DequantizeLinear",
                             ["xq%d" % i, "sx%d" % i, "zx%d" % i],
                             ["xd%d" % i]),
            helper.make_node("DequantizeLinear",
                             ["wq%d" % i, "sw%d" % i, "zw%d" % i],
                             ["wd%d" % i]),
            helper.make_node("Gemm", ["xd%d" % i, "wd%d" % i, "b%d" % i],
                             ["g%d" % i if i == 0 else "y"], transB=1)]
        if i == 0:
            nodes.append(helper.make_node("Relu", ["g0"], ["h0"]))
            src = "h0"
    g = helper.make_graph(
        nodes, "qmlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, ws


def main():
    unary("Relu", helper.make_node("Relu", ["x"], ["y"]), torch.relu)
    unary("LeakyRelu", helper.make_node("LeakyRelu", ["x"], ["y"],
                                        alpha=0.1),
          lambda x: F.leaky_relu(x, 0.1))
    unary("Sigmoid", helper.make_node("Sigmoid", ["x"], ["y"]),
          torch.sigmoid)
    unary("Tanh", helper.make_node("Tanh", ["x"], ["y"]), torch.tanh)
    unary("Softmax", helper.make_node("Softmax", ["x"], ["y"], axis=-1),
          lambda x: torch.softmax(x, -1))
    unary("ReduceMax", helper.make_node("ReduceMax", ["x"], ["y"],
                                        axes=[1], keepdims=1),
          lambda x: torch.amax(x, 1, keepdim=True))
    unary("ReduceMin", helper.make_node("ReduceMin", ["x"], ["y"],
                                        axes=[1], keepdims=1),
          lambda x: torch.amin(x, 1, keepdim=True))
    unary("MaxPool 2x2", helper.make_node("MaxPool", ["x"], ["y"],
                                          kernel_shape=[2, 2],
                                          strides=[2, 2]),
          lambda x: F.max_pool2d(x, 2), shape=(1, 3, 8, 8))
    unary("GlobalMaxPool", helper.make_node("GlobalMaxPool", ["x"], ["y"]),
          lambda x: torch.amax(x, (2, 3), keepdim=True), shape=(1, 3, 4, 4))

    # Clip, opset 13: bounds are inputs.
    x = poison(RNG.standard_normal((4, 16)).astype(np.float32) * 3)
    m = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
              [("x", [4, 16])], ["y"],
              [("lo", np.array(-1.0)), ("hi", np.array(1.0))])
    check("Clip(-1, 1)", m, {"x": x}, torch.clamp(t(x), -1, 1).numpy())
    m = model([helper.make_node("Clip", ["x", "lo"], ["y"])],
              [("x", [4, 16])], ["y"], [("lo", np.array(0.0))])
    check("Clip(0, none)", m, {"x": x}, torch.clamp(t(x), min=0).numpy())

    # Max and Min of two inputs, NaN in either.
    a = poison(RNG.standard_normal((4, 16)).astype(np.float32))
    b = RNG.standard_normal((4, 16)).astype(np.float32)
    b[1, 2], b[2, 9] = NAN, INF
    for op, fn in (("Max", torch.maximum), ("Min", torch.minimum)):
        m = model([helper.make_node(op, ["a", "b"], ["y"])],
                  [("a", [4, 16]), ("b", [4, 16])], ["y"])
        check(op, m, {"a": a, "b": b}, fn(t(a), t(b)).numpy())

    # Gemm+Relu (fused into one inner product with a ReLU post-op).
    w = RNG.standard_normal((8, 16)).astype(np.float32)
    bias = RNG.standard_normal(8).astype(np.float32)
    x = mlp_input()
    m = model([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
               helper.make_node("Relu", ["g"], ["y"])],
              [("x", ["N", 16])], ["y"], [("w", w), ("b", bias)])
    check("Gemm+Relu fused", m, {"x": x},
          torch.relu(F.linear(t(x), t(w), t(bias))).numpy(), rtol=1e-4)
    m = model([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
               helper.make_node("Clip", ["g", "lo", "hi"], ["y"])],
              [("x", ["N", 16])], ["y"],
              [("w", w), ("b", bias), ("lo", np.array(0.0)),
               ("hi", np.array(6.0))])
    check("Gemm+Clip(0, 6) fused", m, {"x": x},
          torch.clamp(F.linear(t(x), t(w), t(bias)), 0, 6).numpy(),
          rtol=1e-4)

    # Conv+Relu (fused), then MaxPool: NaN in one pixel spreads to the
    # windows that see it.
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x[0, 1, 2, 3] = NAN
    x[1, 0, 5, 5] = INF
    x[1, 2, 0, 7] = -INF
    w = (RNG.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    bias = RNG.standard_normal(4).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w", "b"], ["c"],
                                pads=[1, 1, 1, 1]),
               helper.make_node("Relu", ["c"], ["r"]),
               helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2],
                                strides=[2, 2])],
              [("x", ["N", 3, 8, 8])], ["y"], [("w", w), ("b", bias)])
    with torch.no_grad():
        want = F.max_pool2d(torch.relu(F.conv2d(t(x), t(w), t(bias),
                                                padding=1)), 2).numpy()
    check("Conv+Relu fused, MaxPool", m, {"x": x}, want, rtol=1e-4)

    # The MLP in f32 and bf16: every row with NaN or Inf in its input
    # ends NaN (Inf - Inf, 0 * Inf inside the products) as in PyTorch.
    x = mlp_input()
    m, ws = mlp_model()
    with torch.no_grad():
        check("MLP f32", m, {"x": x}, mlp_torch(x, ws), rtol=1e-4)
    m, ws = mlp_model(meta={"slimserve.precision": "bf16"})
    with torch.no_grad():
        check("MLP bf16", m, {"x": x}, mlp_torch(x, ws, torch.bfloat16),
              rtol=3e-2, atol=3e-2)

    # The int8 path: int8 holds no NaN.  ONNX leaves QuantizeLinear of
    # NaN undefined and PyTorch's quantize_per_tensor gives qmin (and
    # qmin for +Inf too, through an undefined cast); slimserve quantizes
    # NaN to 0 and saturates +Inf and -Inf, so every row is finite.
    m, ws = qdq_mlp_model()

    def fq(h):
        return torch.fake_quantize_per_tensor_affine(h, 0.05, 0, -128, 127)

    def qref(x):
        with torch.no_grad():
            h = torch.nan_to_num(t(x), nan=0.0, posinf=1e6, neginf=-1e6)
            for i, (w_, b_) in enumerate(ws):
                sw = float(np.abs(w_).max() / 127)
                wq = torch.clamp(torch.round(t(w_) / sw), -127, 127) * sw
                h = F.linear(fq(h), wq, t(b_))
                if i == 0:
                    h = torch.relu(h)
            return h.numpy()
    x = mlp_input()
    check("MLP int8 (QDQ), non-finite inputs", m, {"x": x}, qref(x),
          rtol=2e-2, atol=2e-2)
    x = np.nan_to_num(x, nan=0.5, posinf=0.5, neginf=-0.5)
    check("MLP int8 (QDQ), finite inputs (int8 kernels)", m, {"x": x},
          qref(x), rtol=2e-2, atol=2e-2)
    tap.done()


if __name__ == "__main__":
    main()
