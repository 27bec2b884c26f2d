#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""PTQ of models exported at opset 11 and 12 (engine/ir/export.c).

The int8 variant has per-output-channel weight scales, which
QuantizeLinear/DequantizeLinear take only from opset 13, so the variant of
an older graph is written at 13.  That was allowed only when no node's op
version changed by 13; but version 13 of nearly every op (Relu, Add, Gemm,
Flatten, Concat, ...) only added bfloat16, so ptq of every torchvision
classifier exported with opset_version 11 or 12 failed after the whole
calibration ("per-axis quantization needs opset 13, and this opset 12
graph has ops whose meaning changed by 13").  Now a node is raised when
its op's versions up to 13 only widened types or allowed negative axes;
Squeeze, Unsqueeze, ReduceSum (axes) and Split (sizes) are written in
13's form with the attribute as an int64 input, and Softmax is raised
only when its axis is the last one (before 13 it coerced its input to
2-D at the axis), its rank derived from the producers (engine/ir/rank.c:
here a Reshape whose shape is Concat(Unsqueeze(Gather(Shape))), as
torch writes attention's heads).

Checks, with slimserve-train (the daemon's job code without the daemon):
  - the same network built at opsets 11, 12 and 13 (attributes vs inputs)
    quantizes at each; the variants of 11 and 12 are written at opset 13,
    pass onnx.checker, carry the moved attributes as inputs, and give
    the 13 variant's outputs (|diff| <= 1e-6 * max) -- same meaning --
    within 0.1 of the f32 numpy reference (it is the network);
  - the same Softmax over an axis that is not the last one at opset 12
    fails the job with a message naming that node.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

onnx = infer.import_onnx()
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TRAIN = os.path.join(os.environ.get("top_builddir", "."), "server",
                     "slimserve-train")
RNG = np.random.default_rng(28)
W1 = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3
B1 = RNG.standard_normal(8).astype(np.float32) * 0.1
W2 = RNG.standard_normal((10, 40)).astype(np.float32) * 0.3
X = RNG.standard_normal((64, 4, 6, 6)).astype(np.float32)


def ints(name, v):
    return numpy_helper.from_array(np.array(v, np.int64), name)


def build(opset, bad_softmax=False):
    """Conv -> Relu -> MaxPool 2x2 (11 -> 12 added int8 only) ->
    ReduceSum(axes 3) -> Squeeze(3) -> Unsqueeze(1) ->
    Split(axis 2, [3, 5]) -> Concat(b, a) -> Flatten -> Gemm -> Softmax:
    the axes and sizes as attributes below 13, as inputs at 13."""
    new = opset >= 13
    inits = [numpy_helper.from_array(W1, "w1"),
             numpy_helper.from_array(B1, "b1"),
             numpy_helper.from_array(W2, "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["h"], kernel_shape=[2, 2])]

    def axes_op(op, src, dst, key, vals, **kw):
        if new:
            inits.append(ints(dst[0] + "_" + key, vals))
            nodes.append(helper.make_node(op, [src, dst[0] + "_" + key],
                                          dst, **kw))
        else:
            kw[key] = vals
            nodes.append(helper.make_node(op, [src], dst, **kw))

    axes_op("ReduceSum", "h", ["s"], "axes", [3], keepdims=1)
    axes_op("Squeeze", "s", ["q"], "axes", [3])
    axes_op("Unsqueeze", "q", ["u"], "axes", [1])
    axes_op("Split", "u", ["a", "b"], "split", [3, 5], axis=2)
    nodes += [helper.make_node("Concat", ["b", "a"], ["k"], axis=2),
              helper.make_node("Flatten", ["k"], ["f"], axis=1),
              helper.make_node("Gemm", ["f", "w2"], ["g"], transB=1)]
    # Softmax over the last axis of a [n, 2, 5] view whose shape is
    # computed as exporters write it (Shape -> Gather -> Unsqueeze ->
    # Concat): its rank is derived (engine/ir/rank.c); axis 1 is not the
    # last one and must stay refused.
    inits += [ints("zero", 0), ints("two_five", [2, 5])]
    nodes += [helper.make_node("Shape", ["g"], ["gs"]),
              helper.make_node("Gather", ["gs", "zero"], ["gn"], axis=0)]
    axes_op("Unsqueeze", "gn", ["gn1"], "axes", [0])
    nodes += [helper.make_node("Concat", ["gn1", "two_five"], ["shape3"],
                               axis=0),
              helper.make_node("Reshape", ["g", "shape3"], ["g3"]),
              helper.make_node("Softmax", ["g3"], ["p3"],
                               axis=1 if bad_softmax else 2, name="sm"),
              helper.make_node("Flatten", ["p3"], ["y"], axis=1)]
    yshape = ["n", 10]
    g = helper.make_graph(
        nodes, "old_opset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       ["n", 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, yshape)],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def reference(x):
    """The network in float64 numpy."""
    n = x.shape[0]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    c = np.zeros((n, 8, 6, 6))
    for i in range(3):
        for j in range(3):
            c += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 6, j:j + 6],
                           W1[:, :, i, j].astype(np.float64))
    r = np.maximum(c + B1.reshape(1, 8, 1, 1), 0)
    h = np.maximum.reduce([r[:, :, i:i + 5, j:j + 5]
                           for i in (0, 1) for j in (0, 1)])
    u = h.sum(3)[:, None]                       # [n, 1, 8, 5]
    k = np.concatenate([u[:, :, 3:], u[:, :, :3]], axis=2)
    g = (k.reshape(n, 40) @ W2.T.astype(np.float64)).reshape(n, 2, 5)
    e = np.exp(g - g.max(2, keepdims=True))
    return (e / e.sum(2, keepdims=True)).reshape(n, 10)


def ptq(tmp, model, tag):
    """slimserve-train ptq on model: (exit code, stderr, variant path)."""
    mdir = os.path.join(tmp, tag)
    os.makedirs(os.path.join(mdir, "1"))
    onnx.save(model, os.path.join(mdir, "1", "model.onnx"))
    np.savez(os.path.join(mdir, "cal.npz"), x=X)
    job = os.path.join(tmp, tag + ".json")
    with open(job, "w") as f:
        json.dump({"methods": ["ptq"], "calibration": {"file": "cal.npz"},
                   "gate": {"max_relative_error": 1.0}}, f)
    r = subprocess.run([TRAIN, job, "--model-dir", mdir, "--threads", "1",
                        "--latency-runs", "1"], capture_output=True,
                       timeout=infer.TIMEOUT)
    return (r.returncode, r.stderr.decode("utf-8", "replace"),
            os.path.join(mdir, "2", "model.onnx"))


def run(tmp, path):
    xp = os.path.join(tmp, "x.npz")
    np.savez(xp, x=X[:7])
    got, msg = infer.run(path, [xp], os.path.join(tmp, "out.npz"),
                         ("--threads", "1"))
    if got is None:
        tap.diag(msg)
        return None
    return got["y"]


def main():
    if not tap.ok(os.access(TRAIN, os.X_OK), "slimserve-train is built",
                  TRAIN):
        return tap.done()
    tmp = tempfile.mkdtemp(prefix="ss-ptq-opset.")
    try:
        rc, err, v13 = ptq(tmp, build(13), "op13")
        tap.eq(rc, 0, "opset 13: ptq succeeds (%s)" % err.strip()[-200:])
        want = run(tmp, v13) if rc == 0 else None
        ref = reference(X[:7])
        tap.ok(want is not None and np.abs(want - ref).max() <= 0.1,
               "opset 13 variant within 0.1 of numpy (%s)"
               % (None if want is None else np.abs(want - ref).max()))
        for opset in (11, 12):
            rc, err, v = ptq(tmp, build(opset), "op%d" % opset)
            tap.eq(rc, 0, "opset %d: ptq succeeds (%s)"
                   % (opset, err.strip()[-300:]))
            if rc != 0:
                continue
            m = onnx.load(v)
            tap.eq([o.version for o in m.opset_import if o.domain == ""],
                   [13], "opset %d: the variant is written at 13" % opset)
            try:
                onnx.checker.check_model(m, full_check=True)
                checked = "ok"
            except Exception as e:  # report, go on
                checked = str(e)[:300]
            tap.eq(checked, "ok", "opset %d: the variant passes "
                   "onnx.checker" % opset)
            moved = {n.op_type: (len(n.input),
                                 sorted(a.name for a in n.attribute))
                     for n in m.graph.node
                     if n.op_type in ("ReduceSum", "Squeeze", "Unsqueeze",
                                      "Split")}
            tap.eq(moved, {"ReduceSum": (2, ["keepdims"]),
                           "Squeeze": (2, []), "Unsqueeze": (2, []),
                           "Split": (2, ["axis"])},
                   "opset %d: axes and sizes written as inputs" % opset)
            got = run(tmp, v)
            scale = np.abs(want).max() if want is not None else 1.0
            tap.ok(got is not None and want is not None
                   and got.shape == want.shape
                   and np.abs(got - want).max() <= 1e-6 * scale,
                   "opset %d variant = opset 13 variant (max |diff| %s)"
                   % (opset, None if got is None or want is None
                      or got.shape != want.shape
                      else np.abs(got - want).max()))
        rc, err, v = ptq(tmp, build(12, bad_softmax=True), "softmax")
        tap.ok(rc != 0 and "'sm'" in err and "Softmax" in err,
               "opset 12 Softmax over a middle axis: the job fails naming "
               "the node (exit %d: %s)" % (rc, err.strip()[-300:]))
        tap.ok(not os.path.exists(v), "and writes no version")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
