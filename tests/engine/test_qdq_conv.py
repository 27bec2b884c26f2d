#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""int8 Conv of a QDQ graph with an activation zero point, against numpy.

The int8 plan reads x_q directly and folds the activation's zero point z
into the bias (sum_k (x_q - z) w = sum_k x_q w - z sum_k w).  A padded
tap reads x_q = 0 there, the real value -z * s_x, where ONNX pads the
real x with 0: with pads 1 and a u8 zero point of 128 (the asymmetric
form ONNX Runtime's quantizer writes by default) every border output of
a 3x3 conv was wrong, by up to 85% of the output's range (session 27,
then run as f32).  A padded conv with a zero point now gives z to oneDNN
as its source zero point, whose int8 kernels count a padded tap as a
real 0; unpadded ones keep z in the bias.  Every case runs on the int8
kernel (the plan dump says so), depthwise and 64-channel ones too.

Each graph is QuantizeLinear -> DequantizeLinear -> Conv with s8
per-output-channel weights (DequantizeLinear, axis 0), built with
onnx.helper; the reference dequantizes as ONNX does and convolves in
float64:  |slimserve - reference| <= 1e-5 * max|reference| + 1e-6.
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

onnx = infer.import_onnx()
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
RNG = np.random.default_rng(31)

# (activation dtype, zero point, pads [t, l, b, r], group, stride,
#  input channels, output channels)
CASES = [
    (np.uint8, 128, [1, 1, 1, 1], 1, 1, 4, 8),
    (np.uint8, 37, [1, 1, 1, 1], 1, 1, 4, 8),
    (np.uint8, 128, [0, 1, 1, 0], 2, 1, 4, 8),
    (np.uint8, 200, [2, 2, 2, 2], 1, 2, 4, 8),
    (np.int8, -20, [1, 1, 1, 1], 1, 1, 4, 8),
    (np.uint8, 128, [0, 0, 0, 0], 1, 1, 4, 8),
    (np.uint8, 0, [1, 1, 1, 1], 1, 1, 4, 8),
    (np.int8, 0, [1, 1, 1, 1], 2, 2, 4, 8),
    (np.uint8, 128, [1, 1, 1, 1], 16, 1, 16, 16),
    (np.uint8, 128, [1, 1, 1, 1], 1, 1, 64, 64),
    (np.uint8, 100, [1, 2, 1, 0], 1, 2, 32, 48),
]


def build(xshape, zt, zp, pads, group, stride, oc=8):
    """(model, weights dequantized, activation scale)."""
    ic = xshape[1]
    w = RNG.standard_normal((oc, ic // group, 3, 3)).astype(np.float32)
    ws = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
    wq = np.round(w / ws[:, None, None, None]).astype(np.int8)
    sx = np.float32(2.0 / 255)
    inits = [numpy_helper.from_array(np.array(sx, np.float32), "sx"),
             numpy_helper.from_array(np.array(zp, zt), "zx"),
             numpy_helper.from_array(wq, "wq"),
             numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.zeros(oc, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"],
                              ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"],
                              ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=pads,
                              group=group, strides=[stride, stride])]
    g = helper.make_graph(
        nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       list(xshape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [
            xshape[0], oc,
            (xshape[2] + pads[0] + pads[2] - 3) // stride + 1,
            (xshape[3] + pads[1] + pads[3] - 3) // stride + 1])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, wq.astype(np.float64) * ws[:, None, None, None], sx


def reference(x, zt, zp, sx, wd, pads, group, stride):
    lo, hi = (0, 255) if zt == np.uint8 else (-128, 127)
    xq = np.clip(np.round(x / sx) + zp, lo, hi)      # ties to even
    xd = (xq - zp) * np.float64(sx)
    xp = np.pad(xd, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, w = xp.shape
    oc = wd.shape[0]
    ho, wo = (h - 3) // stride + 1, (w - 3) // stride + 1
    cg, og = c // group, oc // group
    y = np.zeros((n, oc, ho, wo))
    for gi in range(group):
        src = xp[:, gi * cg:(gi + 1) * cg]
        for i in range(3):
            for j in range(3):
                win = src[:, :, i:i + stride * ho:stride,
                          j:j + stride * wo:stride]
                y[:, gi * og:(gi + 1) * og] += np.einsum(
                    "nchw,oc->nohw", win, wd[gi * og:(gi + 1) * og, :, i, j])
    return y


def run(m, x):
    """(outputs, message, plan dump)."""
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(m, path)
        np.save(s.file("x.npy"), x)
        got, msg = infer.run(path, [s.file("x.npy")], s.file("out.npz"),
                             ("--threads", "1"))
        p = subprocess.run([infer.cli_path(), "--model", path, "--input",
                            s.file("x.npy"), "--output", s.file("o2.npz"),
                            "--threads", "1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=infer.TIMEOUT,
                           env=dict(os.environ, SS_ENGINE_DUMP="1"))
    return got, msg, (p.stdout + p.stderr).decode("utf-8", "replace")


def main():
    for zt, zp, pads, group, stride, ic, oc in CASES:
        what = "%s zero point %d, pads %s, group %d, stride %d, %d -> %d" % (
            np.dtype(zt).name, zp, pads, group, stride, ic, oc)
        x = RNG.uniform(-1, 1, (2, ic, 7, 7)).astype(np.float32)
        m, wd, sx = build(x.shape, zt, zp, pads, group, stride, oc)
        got, msg, dump = run(m, x)
        if got is None:
            tap.ok(False, what + ": runs", msg)
            continue
        want = reference(x.astype(np.float64), zt, zp, sx, wd, pads, group,
                         stride)
        y = got["y"].astype(np.float64)
        if y.shape != want.shape:
            tap.ok(False, what, "shape %s, want %s" % (y.shape, want.shape))
            continue
        d = np.abs(y - want)
        tol = RTOL * float(np.abs(want).max()) + ATOL
        tap.ok(float(d.max()) <= tol, what,
               "max |diff| %.3g (tolerance %.3g), %d of %d outputs off"
               % (d.max(), tol, int((d > tol).sum()), d.size))
        # every one runs on an int8 kernel: the zero point folded into
        # the bias (unpadded), or oneDNN's source zero point (padded)
        tap.ok("int8 Conv" in dump, what + ": int8 conv", "plan:\n" + dump)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
