#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""MatMulInteger and QLinearMatMul (and ConvInteger and QLinearConv:
strides, pads, groups, per-channel weight zero points and scales, an int32
bias) through slimserve-infer against numpy, beyond the node suite's
cases: int8 and uint8 operands mixed, zero points
per row of a and per column of b, scales per row and column, batch axes
that broadcast.  numpy: acc = (a - a_zp) @ (b - b_zp) in int64; int32 for
MatMulInteger; QLinearMatMul: clip(rint(acc * a_scale * b_scale /
y_scale) + y_zp) in float64 (the engine rounds half to even in double
too).  Outputs must be equal exactly; a failure says how many elements
differ.  Skipped without python3-onnx."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def model(op, ins, out_type):
    from onnx import helper
    g = helper.make_graph(
        [helper.make_node(op, [n for n, _, _ in ins], ["y"])], "q",
        [helper.make_tensor_value_info(n, t, a.shape) for n, t, a in ins],
        [helper.make_tensor_value_info("y", out_type, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m


def run(s, m, arrays):
    import onnx
    onnx.save(m, s.file("m.onnx"))
    np.savez(s.file("in.npz"), **arrays)
    return infer.run(s.file("m.onnx"), [s.file("in.npz")], s.file("o.npz"))


def main():
    try:
        from onnx import TensorProto as T
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    rng = np.random.default_rng(12)
    tt = {np.uint8: T.UINT8, np.int8: T.INT8}
    with infer.Scratch() as s:
        for ta, tb, ash, bsh in ((np.uint8, np.int8, (2, 3, 5), (5, 4)),
                                 (np.int8, np.uint8, (1, 3, 6), (2, 6, 2)),
                                 (np.uint8, np.uint8, (4, 7), (7, 3))):
            lo = {np.uint8: 0, np.int8: -128}
            a = rng.integers(lo[ta], lo[ta] + 256, ash).astype(ta)
            b = rng.integers(lo[tb], lo[tb] + 256, bsh).astype(tb)
            m_, n_ = ash[-2], bsh[-1]
            azp = rng.integers(lo[ta], lo[ta] + 256, (m_,)).astype(ta)
            bzp = rng.integers(lo[tb], lo[tb] + 256, (n_,)).astype(tb)
            acc = np.matmul(a.astype(np.int64) - azp[:, None],
                            b.astype(np.int64) - bzp)
            got, msg = run(s, model("MatMulInteger", [
                ("a", tt[ta], a), ("b", tt[tb], b), ("azp", tt[ta], azp),
                ("bzp", tt[tb], bzp)], T.INT32),
                {"a": a, "b": b, "azp": azp, "bzp": bzp})
            desc = "MatMulInteger %s %s x %s %s, zero points per row/column" \
                % (np.dtype(ta).name, ash, np.dtype(tb).name, bsh)
            if tap.ok(got is not None, desc + ": runs", msg):
                ok, detail = infer.compare(got.get("y"), acc.astype(np.int32),
                                           0, 0)
                tap.ok(ok, desc + ": equals numpy", detail)
            # QLinearMatMul: zero points per tensor (the spec's scalars),
            # scales per row of a and per column of b
            azs, bzs = azp[:1].reshape(()), bzp[:1].reshape(())
            asc = rng.uniform(0.01, 0.05, (m_,)).astype(np.float32)
            bsc = rng.uniform(0.01, 0.05, (n_,)).astype(np.float32)
            ysc = np.array(0.7, np.float32)
            yzp = np.array(3, np.uint8)
            acc = np.matmul(a.astype(np.int64) - azs,
                            b.astype(np.int64) - bzs)
            want = np.clip(np.rint(acc * asc.astype(np.float64)[:, None]
                                   * bsc.astype(np.float64)
                                   / np.float64(ysc)) + 3, 0, 255)
            want = want.astype(np.uint8)
            got, msg = run(s, model("QLinearMatMul", [
                ("a", tt[ta], a), ("as", T.FLOAT, asc), ("azp", tt[ta], azs),
                ("b", tt[tb], b), ("bs", T.FLOAT, bsc), ("bzp", tt[tb], bzs),
                ("ys", T.FLOAT, ysc), ("yzp", T.UINT8, yzp)], T.UINT8),
                {"a": a, "as": asc, "azp": azs, "b": b, "bs": bsc,
                 "bzp": bzs, "ys": ysc, "yzp": yzp})
            desc = "QLinearMatMul %s %s x %s %s, scales per row/column" \
                % (np.dtype(ta).name, ash, np.dtype(tb).name, bsh)
            if tap.ok(got is not None, desc + ": runs", msg):
                y = got.get("y")
                ok = y is not None and y.shape == want.shape and \
                    y.dtype == want.dtype
                off = int(np.sum(y != want)) if ok else -1
                tap.ok(ok and off == 0, desc + ": equals numpy",
                       "%d of %d differ" % (off, want.size))
        conv_cases(s, rng, T)
    return tap.done()


def conv_ref(x, w, xzp, wzp, stride, pad, group):
    """int64 acc of (x - xzp) conv (w - wzp[oc]), NCHW, symmetric pads."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - xzp,
                ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # padding is with x's zero point: (x - xzp) is 0 there
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    wz = w.astype(np.int64) - wzp.reshape(-1, 1, 1, 1)
    y = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for oc in range(m):
        g = oc // mg
        for r in range(oh):
            for q in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           r * stride:r * stride + kh,
                           q * stride:q * stride + kw]
                y[:, oc, r, q] = np.sum(patch * wz[oc], axis=(1, 2, 3))
    return y


def conv_cases(s, rng, T):
    from onnx import helper
    x = rng.integers(0, 256, (2, 4, 7, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    xzp = np.array(7, np.uint8)
    wzp = rng.integers(-5, 5, (6,)).astype(np.int8)
    acc = conv_ref(x, w, 7, wzp, 2, 1, 2)
    attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1], group=2)

    def mk(op, ins, out_type):
        g = helper.make_graph(
            [helper.make_node(op, [n for n, _, _ in ins], ["y"], **attrs)],
            "c", [helper.make_tensor_value_info(n, t, a.shape)
                  for n, t, a in ins],
            [helper.make_tensor_value_info("y", out_type, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 7
        return m
    got, msg = run(s, mk("ConvInteger", [
        ("x", T.UINT8, x), ("w", T.INT8, w), ("xzp", T.UINT8, xzp),
        ("wzp", T.INT8, wzp)], T.INT32),
        {"x": x, "w": w, "xzp": xzp, "wzp": wzp})
    desc = "ConvInteger stride 2, pad 1, group 2, w zero point per channel"
    if tap.ok(got is not None, desc + ": runs", msg):
        ok, detail = infer.compare(got.get("y"), acc.astype(np.int32), 0, 0)
        tap.ok(ok, desc + ": equals numpy", detail)
    xs = np.array(0.02, np.float32)
    ws = rng.uniform(0.005, 0.02, (6,)).astype(np.float32)
    ys = np.array(0.5, np.float32)
    yzp = np.array(-3, np.int8)
    bias = rng.integers(-500, 500, (6,)).astype(np.int32)
    want = np.clip(np.rint((acc + bias.reshape(1, -1, 1, 1))
                           * np.float64(xs)
                           * ws.astype(np.float64).reshape(1, -1, 1, 1)
                           / np.float64(ys)) - 3, -128, 127).astype(np.int8)
    got, msg = run(s, mk("QLinearConv", [
        ("x", T.UINT8, x), ("xs", T.FLOAT, xs), ("xzp", T.UINT8, xzp),
        ("w", T.INT8, w), ("ws", T.FLOAT, ws), ("wzp", T.INT8, wzp),
        ("ys", T.FLOAT, ys), ("yzp", T.INT8, yzp), ("b", T.INT32, bias)],
        T.INT8),
        {"x": x, "xs": xs, "xzp": xzp, "w": w, "ws": ws, "wzp": wzp,
         "ys": ys, "yzp": yzp, "b": bias})
    desc = "QLinearConv with bias, scales per channel, int8 out"
    if tap.ok(got is not None, desc + ": runs", msg):
        y = got.get("y")
        ok = y is not None and y.shape == want.shape and \
            y.dtype == want.dtype
        off = int(np.sum(y != want)) if ok else -1
        tap.ok(ok and off == 0, desc + ": equals numpy",
               "%d of %d differ" % (off, want.size))


if __name__ == "__main__":
    sys.exit(main())
