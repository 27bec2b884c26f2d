#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Einsum through slimserve-infer against numpy.einsum, beyond the node
suite's five cases: implicit output (letters appearing once, in ASCII
order, uppercase first), traces and diagonals, ellipses of different ranks
broadcasting, integer inputs, a full contraction to a scalar.  Models are
made at test time with python3-onnx (skipped without it).  Floats must
match within |got - want| <= 1e-5 * max|want| + 1e-5, integers exactly."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

CASES = [
    ("ij,jk", [(3, 4), (4, 5)], np.float32),
    ("ii", [(4, 4)], np.float32),
    ("ii->i", [(4, 4)], np.float64),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)], np.float32),
    ("bij,bkj->bik", [(2, 3, 4), (2, 5, 4)], np.int64),
    ("ba,ab", [(3, 2), (2, 3)], np.float32),
    ("Ab,bA->", [(3, 2), (2, 3)], np.float32),
    ("i,j->ij", [(3,), (4,)], np.int32),
    ("...i->...", [(2, 3, 4)], np.float32),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)], np.float32),
]


def main():
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    types = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
             np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}
    rng = np.random.default_rng(12)
    with infer.Scratch() as s:
        for eq, shapes, dt in CASES:
            arrs = [(rng.standard_normal(sh) * 3).astype(dt)
                    for sh in shapes]
            names = ["x%d" % i for i in range(len(arrs))]
            g = helper.make_graph(
                [helper.make_node("Einsum", names, ["y"], equation=eq)], "e",
                [helper.make_tensor_value_info(n, types[dt], a.shape)
                 for n, a in zip(names, arrs)],
                [helper.make_tensor_value_info("y", types[dt], None)])
            m = helper.make_model(g, opset_imports=[
                helper.make_opsetid("", 12)])
            m.ir_version = 7
            onnx.save(m, s.file("m.onnx"))
            np.savez(s.file("in.npz"), **dict(zip(names, arrs)))
            got, msg = infer.run(s.file("m.onnx"), [s.file("in.npz")],
                                 s.file("out.npz"))
            if not tap.ok(got is not None, "%s runs" % eq, msg):
                continue
            ok, detail = infer.compare(got.get("y"), np.einsum(eq, *arrs),
                                       1e-5, 1e-5)
            tap.ok(ok, "%s equals numpy.einsum" % eq, detail)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
