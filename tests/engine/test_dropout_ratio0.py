#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Dropout with training_mode true and a constant ratio of 0.

torchvision 0.14's swin_t calls F.dropout(attn, p=0.0) without
training=, so torch.onnx.export writes Dropout(x, ratio=0.0,
training_mode=True) in every attention block at opset 12 and later; the
model was refused ("training-mode Dropout is not supported").  A ratio of
0 drops nothing and scales by 1/(1-0): the identity, with an all-true
mask, in training mode too (ONNX Dropout-12/13; ONNX Runtime runs it so).

Checks (opsets 12 and 13, slimserve-infer): such a node runs, y == x
bit for bit and the mask output is all true; a training-mode Dropout with
ratio 0.5 is still refused with the message naming it.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

onnx = infer.import_onnx()
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def model(opset, ratio):
    inits = [numpy_helper.from_array(np.array(ratio, np.float32), "r"),
             numpy_helper.from_array(np.array(True), "t")]
    nodes = [helper.make_node("Dropout", ["x", "r", "t"], ["d", "mask"],
                              name="drop"),
             helper.make_node("Relu", ["d"], ["y"])]
    g = helper.make_graph(
        nodes, "dropout",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["n", 5])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def main():
    x = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    with infer.Scratch() as s:
        np.savez(s.file("x.npz"), x=x)
        for opset in (12, 13):
            p = s.file("m%d.onnx" % opset)
            onnx.save(model(opset, 0.0), p)
            got, msg = infer.run(p, [s.file("x.npz")], s.file("o.npz"))
            tap.ok(got is not None, "opset %d: ratio 0, training_mode true "
                   "runs (%s)" % (opset, "" if got is not None else msg))
            if got is None:
                continue
            tap.ok(np.array_equal(got["y"], np.maximum(x, 0)),
                   "opset %d: y = relu(x) bit for bit" % opset)
            tap.ok(got["mask"].dtype == np.bool_ and got["mask"].all()
                   and got["mask"].shape == x.shape,
                   "opset %d: the mask is all true" % opset)
            onnx.save(model(opset, 0.5), p)
            got, msg = infer.run(p, [s.file("x.npz")], s.file("o.npz"))
            tap.ok(got is None and "'drop'" in msg
                   and "training_mode is true" in msg,
                   "opset %d: ratio 0.5 in training mode is refused naming "
                   "the node (%s)" % (opset, msg.strip()[-200:]))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
