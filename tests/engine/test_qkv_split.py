#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Attention's q/k/v split as one strided reorder (plan_fuse_move.c).

torchvision's attention computes q, k and v in one in_proj MatMul, cuts
them apart with three Slices, splits each into heads with a Reshape (a
view) and moves the heads forward with a Transpose.  The plan runs each
Slice + Reshape + Transpose as one oneDNN reorder that reads the MatMul's
output in place (an offset and strides); the Slice's copy goes.  Each
case is built with onnx.helper, run through slimserve-infer and compared
with float64 numpy within
    |slimserve - reference| <= 1e-5 * max|reference| + 1e-6;
the plan dump says which steps fused: three "Slice+Transpose" steps and
no reference Slice where the pattern applies, the Slice kept where it
must be (its output read by another step too, or a graph output; a
negative step; a Reshape whose axes do not refine the slice's).
"""

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# test_postops's runner and tolerance (it skips the run without onnx)
from test_postops import (TensorProto, close, helper, numpy_helper,  # noqa
                          onnx, run, tap)

RNG = np.random.default_rng(29)


def i64(*v):
    return np.array(v, dtype=np.int64)


def check(what, nodes, inputs, inits, feeds, outs, n_fused, n_slices):
    """Runs the graph (outs: name -> float64 reference) and checks each
    output within 1e-5 and the plan's Slice+Transpose and Slice steps."""
    g = helper.make_graph(
        nodes, "qkv",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(sh))
         for n, sh in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(r.shape))
         for n, r in outs.items()],
        [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    got, msg, text = run(m, feeds, dump=True)
    if got is None:
        return tap.ok(False, "%s runs" % what, msg)
    for n, ref in outs.items():
        close("%s: %s" % (what, n), got[n], ref)
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    fused = sum(1 for ln in steps if re.match(r"\s+\d+ dnn\s+Slice\+", ln))
    kept = sum(1 for ln in steps if re.match(r"\s+\d+ ref\s+Slice\s", ln))
    return tap.ok(fused == n_fused and kept == n_slices,
                  "%s: %d Slice+Transpose reorders, %d Slices left"
                  % (what, n_fused, n_slices), "\n".join(steps))


def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(t, b, c, heads, step=1):
    """torchvision's self-attention core on x [T, B, C]: qkv = x W, q/k/v
    Slices (of `step`), Reshape [T, B*H, D], Transposes (1,0,2) and
    (1,2,0) for k, softmax(q k^T) v.  Slice steps of 2 read every other
    column of a 6C-wide product."""
    d = c // heads
    width = 3 * c * step
    x = RNG.standard_normal((t, b, c)).astype(np.float32)
    w = (RNG.standard_normal((c, width)) / np.sqrt(c)).astype(np.float32)
    inits = [("w", w), ("shape", i64(t, b * heads, d)),
             ("st", i64(0)), ("st1", i64(c * step)), ("st2", i64(2 * c * step)),
             ("en", i64(c * step)), ("en1", i64(2 * c * step)),
             ("en2", i64(3 * c * step)), ("ax", i64(2)), ("sp", i64(step))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"])]
    for i, (nm, perm) in enumerate((("q", (1, 0, 2)), ("k", (1, 2, 0)),
                                    ("v", (1, 0, 2)))):
        sfx = "" if i == 0 else str(i)
        nodes += [helper.make_node("Slice", ["qkv", "st" + sfx, "en" + sfx,
                                             "ax", "sp"], [nm + "s"]),
                  helper.make_node("Reshape", [nm + "s", "shape"],
                                   [nm + "r"]),
                  helper.make_node("Transpose", [nm + "r"], [nm + "t"],
                                   perm=list(perm))]
    nodes += [helper.make_node("MatMul", ["qt", "kt"], ["sc"]),
              helper.make_node("Softmax", ["sc"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vt"], ["y"])]
    qkv = x.astype(np.float64) @ w
    cut = [qkv[:, :, i * c * step:(i + 1) * c * step:step]
           .reshape(t, b * heads, d) for i in range(3)]
    q, k, v = (z.transpose(1, 0, 2) for z in cut)
    want = softmax(q @ k.transpose(0, 2, 1)) @ v
    return nodes, [("x", x.shape)], inits, {"x": x}, want


def fused_cases():
    """Batch 1 and 2 (where the Reshape merges batch and heads: the
    reorder runs over [T, B, H, D]) and a Slice of step 2: three fused
    steps, no Slice left, within 1e-5 of float64 numpy."""
    for what, (t, b, c, h, step) in (
            ("batch 1", (128, 1, 128, 4, 1)),
            ("batch 2 (batch and heads merged)", (64, 2, 128, 4, 1)),
            ("Slice step 2", (128, 1, 128, 4, 2))):
        nodes, ins, inits, feeds, want = attention(t, b, c, h, step)
        check("q/k/v split, " + what, nodes, ins, inits, feeds,
              {"y": want}, 3, 0)


def kept_cases():
    """Where the reorder must not read through the Slice: its output has
    another reader (q's Slice also a graph output; k's Slice read by an
    Add too), a negative step, or a Reshape whose dims do not refine the
    slice's ([192, 96] as [128, 144]).  The Slice stays a reference step,
    the Transpose a plain reorder of its copy, and the answers are right."""
    nodes, ins, inits, feeds, want = attention(128, 1, 128, 4)
    xw = feeds["x"].astype(np.float64) @ dict(inits)["w"]
    check("q Slice as a graph output", nodes, ins, inits, feeds,
          {"y": want, "qs": xw[:, :, :128]}, 2, 1)
    nodes.append(helper.make_node("Add", ["ks", "ks"], ["k2"]))
    check("k Slice read twice", nodes, ins, inits, feeds,
          {"y": want, "k2": 2 * xw[:, :, 128:256]}, 2, 1)

    # a negative step and a Reshape that does not refine: one Slice each
    x = RNG.standard_normal((192, 64)).astype(np.float32)
    w = (RNG.standard_normal((64, 288)) / 8).astype(np.float32)
    xw = x.astype(np.float64) @ w
    for what, (st, en, sp), shape, ref in (
            ("a negative step", (287, 95, -1), (192, 48, 4),
             xw[:, 287:95:-1][:, :192].reshape(192, 48, 4)
             .transpose(1, 0, 2)),
            ("a Reshape that does not refine the slice", (96, 192, 1),
             (128, 144, 1), xw[:, 96:192].reshape(128, 144, 1)
             .transpose(1, 0, 2))):
        inits = [("w", w), ("st", i64(st)), ("en", i64(en)), ("ax", i64(1)),
                 ("sp", i64(sp)), ("shape", i64(*shape))]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
                 helper.make_node("Slice", ["m", "st", "en", "ax", "sp"],
                                  ["s"]),
                 helper.make_node("Reshape", ["s", "shape"], ["r"]),
                 helper.make_node("Transpose", ["r"], ["y"],
                                  perm=[1, 0, 2])]
        check("Slice with " + what, nodes, [("x", x.shape)], inits,
              {"x": x}, {"y": ref}, 0, 1)


def main():
    fused_cases()
    kept_cases()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
