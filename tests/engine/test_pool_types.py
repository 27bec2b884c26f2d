#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""MaxPool beyond float32 and its Indices in both storage orders, through
slimserve-infer, against numpy.

MaxPool (version 12) on int8, uint8 and float16 (1-D, 2-D, 3-D, with
padding, strides and dilations) must equal numpy's window maxima exactly,
in the input's type; its Indices output must name the first maximum of
each window (in window order: ties go to the first), flattened over the
whole tensor row-major (storage_order 0)
or column-major within each [H, W] (or [D, H, W]) plane (storage_order
1), as ONNX Runtime writes them.  AveragePool on int8 is refused with a
message (ONNX defines it on floats only)."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def maxpool_np(x, k, s, d, pads, colmaj):
    sp = x.ndim - 2
    lo = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    out_sp = [(x.shape[2 + i] + pads[i] + pads[sp + i]
               - ((k[i] - 1) * d[i] + 1)) // s[i] + 1 for i in range(sp)]
    y = np.zeros(x.shape[:2] + tuple(out_sp), x.dtype)
    ind = np.zeros(y.shape, np.int64)
    plane = int(np.prod(x.shape[2:]))
    for idx in np.ndindex(*y.shape):
        best, arg = None, None
        for t in np.ndindex(*k):
            pos = [idx[2 + i] * s[i] - pads[i] + t[i] * d[i]
                   for i in range(sp)]
            if any(p < 0 or p >= x.shape[2 + i] for i, p in enumerate(pos)):
                continue
            v = x[idx[:2] + tuple(pos)]
            if best is None or v > best:
                best, arg = v, pos
        y[idx] = lo if best is None else best
        if colmaj:
            flat = 0
            for i in reversed(range(sp)):
                flat = flat * x.shape[2 + i] + arg[i]
        else:
            flat = int(np.ravel_multi_index(arg, x.shape[2:]))
        ind[idx] = (idx[0] * x.shape[1] + idx[1]) * plane + flat
    return y, ind


def main():
    onnx = infer.import_onnx()
    from onnx import TensorProto, helper
    if not tap.ok(os.access(infer.cli_path(), os.X_OK),
                  "slimserve-infer is built", infer.cli_path()):
        return tap.done()
    types = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8,
             np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT}
    rng = np.random.default_rng(12)
    cases = [((2, 3, 9), [3], [2], [1], [1, 1]),
             ((2, 3, 8, 7), [3, 2], [2, 1], [1, 2], [1, 0, 1, 1]),
             ((1, 2, 5, 6, 4), [2, 3, 2], [1, 2, 2], [1, 1, 1],
              [0, 1, 0, 1, 1, 1])]
    with infer.Scratch() as s:
        for dt in (np.int8, np.uint8, np.float16, np.float32):
            for shape, k, st, dil, pads in cases:
                for order in (0, 1):
                    if dt == np.float16 or dt == np.float32:
                        x = rng.standard_normal(shape).astype(dt)
                    else:       # ties: the first in window order wins
                        info = np.iinfo(dt)
                        x = rng.integers(info.min, int(info.max) + 1, shape,
                                         dtype=dt)
                    g = helper.make_graph(
                        [helper.make_node("MaxPool", ["x"], ["y", "i"],
                                          kernel_shape=k, strides=st,
                                          dilations=dil, pads=pads,
                                          storage_order=order)], "p",
                        [helper.make_tensor_value_info("x", types[dt],
                                                       shape)],
                        [helper.make_tensor_value_info("y", types[dt], None),
                         helper.make_tensor_value_info("i", TensorProto.INT64,
                                                       None)])
                    m = helper.make_model(g, opset_imports=[
                        helper.make_opsetid("", 12)])
                    m.ir_version = 7
                    onnx.save(m, s.file("m.onnx"))
                    np.savez(s.file("in.npz"), x=x)
                    got, msg = infer.run(s.file("m.onnx"), [s.file("in.npz")],
                                         s.file("out.npz"))
                    what = "MaxPool %s %s storage_order %d" % (
                        np.dtype(dt).name, shape, order)
                    if not tap.ok(got is not None, what + ": runs", msg):
                        continue
                    wy, wi = maxpool_np(x, k, st, dil, pads, order == 1)
                    ok, detail = infer.compare(got.get("y"), wy, 0, 0)
                    tap.ok(ok, what + ": values equal numpy", detail)
                    ok, detail = infer.compare(got.get("i"), wi, 0, 0)
                    tap.ok(ok, what + ": indices equal numpy", detail)
        g = helper.make_graph(
            [helper.make_node("AveragePool", ["x"], ["y"],
                              kernel_shape=[2, 2])], "a",
            [helper.make_tensor_value_info("x", TensorProto.INT8,
                                           (1, 1, 4, 4))],
            [helper.make_tensor_value_info("y", TensorProto.INT8, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
        m.ir_version = 7
        onnx.save(m, s.file("m.onnx"))
        np.savez(s.file("in.npz"), x=np.ones((1, 1, 4, 4), np.int8))
        got, msg = infer.run(s.file("m.onnx"), [s.file("in.npz")],
                             s.file("out.npz"))
        tap.ok(got is None and "int8 is not supported" in msg,
               "AveragePool on int8 is refused with a message", msg)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
