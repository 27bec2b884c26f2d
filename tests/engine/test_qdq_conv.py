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
3-D convs (x [N, C, D, H, W], a 3x3x3 kernel) take the same int8 path on
ndhwc: checked the same way, plus ONEDNN_VERBOSE shows one int8 jit
convolution (not a reference kernel).
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

# 3-D (pads [d, h, w begin, d, h, w end]): the same int8 conv on ndhwc;
# the second pads only the depth axis, whose padded taps need oneDNN's
# source zero point as H and W's do
CASES3 = [
    (np.uint8, 128, [1, 1, 1, 1, 1, 1], 1, 1, 4, 8),
    (np.uint8, 37, [1, 0, 0, 1, 0, 0], 1, 1, 4, 8),
    (np.int8, 0, [0, 0, 0, 0, 0, 0], 2, 2, 8, 16),
    (np.uint8, 100, [1, 1, 1, 1, 1, 1], 1, 2, 32, 48),
]


def build(xshape, zt, zp, pads, group, stride, oc=8):
    """(model, weights dequantized, activation scale); a 3^nsp kernel,
    nsp = len(xshape) - 2."""
    ic, nsp = xshape[1], len(xshape) - 2
    w = RNG.standard_normal((oc, ic // group) + (3,) * nsp).astype(
        np.float32)
    ax = tuple(range(1, nsp + 2))
    ws = (np.abs(w).max(axis=ax) / 127).astype(np.float32)
    wsb = ws.reshape((oc,) + (1,) * (nsp + 1))
    wq = np.round(w / wsb).astype(np.int8)
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
                              group=group, strides=[stride] * nsp)]
    g = helper.make_graph(
        nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       list(xshape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [
            xshape[0], oc] + [
                (xshape[2 + i] + pads[i] + pads[nsp + i] - 3) // stride + 1
                for i in range(nsp)])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, wq.astype(np.float64) * wsb, sx


def reference(x, zt, zp, sx, wd, pads, group, stride):
    lo, hi = (0, 255) if zt == np.uint8 else (-128, 127)
    xq = np.clip(np.round(x / sx) + zp, lo, hi)      # ties to even
    xd = (xq - zp) * np.float64(sx)
    return infer.conv_ref(xd, wd, pads, [stride] * (x.ndim - 2), group)


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
                           env=dict(os.environ, SS_ENGINE_DUMP="1",
                                    ONEDNN_VERBOSE="1"))
    return got, msg, (p.stdout + p.stderr).decode("utf-8", "replace")


def int8_kernels(dump):
    """The oneDNN convolutions the run executed (ONEDNN_VERBOSE exec
    lines): [(implementation, source type)]."""
    out = []
    for ln in dump.splitlines():
        f = ln.split(",")
        if len(f) > 6 and f[:2] == ["onednn_verbose", "exec"] \
                and f[3] == "convolution":
            out.append((f[4], f[6].split(":")[0]))
    return out


def main():
    for zt, zp, pads, group, stride, ic, oc in CASES + CASES3:
        what = "%s zero point %d, pads %s, group %d, stride %d, %d -> %d" % (
            np.dtype(zt).name, zp, pads, group, stride, ic, oc)
        sp = (7, 7) if len(pads) == 4 else (4, 6, 6)
        x = RNG.uniform(-1, 1, (2, ic) + sp).astype(np.float32)
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
        if len(pads) == 6:      # 3-D: on oneDNN's int8 jit kernels
            k = int8_kernels(dump)
            tap.ok(len(k) == 1 and k[0][1] in ("src_u8", "src_s8")
                   and not k[0][0].startswith("ref"),
                   what + ": one oneDNN int8 kernel (%s)" % k, dump[-1500:])
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
