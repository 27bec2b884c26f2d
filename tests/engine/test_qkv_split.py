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

RNG = np.random.default_rng(29)
RTOL, ATOL = 1e-5, 1e-6


def i64(*v):
    return np.array(v, dtype=np.int64)


def run(nodes, inputs, inits, outputs, feeds):
    """(outputs, message, plan dump lines) of slimserve-infer."""
    g = helper.make_graph(
        nodes, "qkv",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
         for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
         for n, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(m, path)
        specs = []
        for k, v in feeds.items():
            np.save(s.file(k + ".npy"), v)
            specs.append("%s=%s" % (k, s.file(k + ".npy")))
        got, msg = infer.run(path, specs, s.file("out.npz"),
                             ("--threads", "1"))
        args = [infer.cli_path(), "--model", path, "--output",
                s.file("o2.npz"), "--threads", "1"]
        for sp in specs:
            args += ["--input", sp]
        p = subprocess.run(args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120,
                           env=dict(os.environ, SS_ENGINE_DUMP="1"))
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    return got, msg, steps


def close(name, got, want):
    if got is None or got.shape != want.shape:
        return tap.ok(False, name, "shape %s, want %s"
                      % (None if got is None else got.shape, want.shape))
    t = RTOL * float(np.max(np.abs(want))) + ATOL
    d = float(np.max(np.abs(got.astype(np.float64) - want)))
    return tap.ok(d <= t, name, "max |diff| %.3g (tolerance %.3g)" % (d, t))


def count(steps, kind, what):
    return sum(1 for ln in steps
               if re.match(r"\s+\d+ %s\s+%s\s" % (kind, re.escape(what)), ln))


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
        got, msg, steps = run(nodes, ins, inits, [("y", want.shape)],
                              feeds)
        if got is None:
            tap.ok(False, "q/k/v split, %s, runs" % what, msg)
            continue
        close("q/k/v split, %s: attention output" % what, got["y"], want)
        tap.ok(count(steps, "dnn", "Slice+Transpose") == 3
               and count(steps, "ref", "Slice") == 0,
               "q/k/v split, %s: three Slice+Transpose reorders, no Slice"
               % what, "\n".join(steps))


def kept_cases():
    """Where the reorder must not read through the Slice: its output has
    another reader (q's Slice also a graph output; k's Slice read by an
    Add too), a negative step, or a Reshape whose dims do not refine the
    slice's ([192, 96] as [128, 144]).  The Slice stays a reference step,
    the Transpose a plain reorder of its copy, and the answers are right."""
    nodes, ins, inits, feeds, want = attention(128, 1, 128, 4)
    got, msg, steps = run(nodes, ins, inits,
                          [("y", want.shape), ("qs", (128, 1, 128))], feeds)
    x = feeds["x"].astype(np.float64)
    w = dict(inits)["w"]
    if got is None:
        tap.ok(False, "q Slice as a graph output runs", msg)
    else:
        close("q Slice as a graph output: attention output", got["y"], want)
        close("q Slice as a graph output: the slice", got["qs"],
              (x @ w)[:, :, :128])
        tap.ok(count(steps, "dnn", "Slice+Transpose") == 2
               and count(steps, "ref", "Slice") == 1,
               "q Slice as a graph output: kept, k and v fused",
               "\n".join(steps))

    nodes, ins, inits, feeds, want = attention(128, 1, 128, 4)
    nodes.append(helper.make_node("Add", ["ks", "ks"], ["k2"]))
    got, msg, steps = run(nodes, ins, inits,
                          [("y", want.shape), ("k2", (128, 1, 128))], feeds)
    if got is None:
        tap.ok(False, "k Slice read twice runs", msg)
    else:
        close("k Slice read twice: attention output", got["y"], want)
        close("k Slice read twice: its other reader", got["k2"],
              2 * (feeds["x"].astype(np.float64) @ dict(inits)["w"])
              [:, :, 128:256])
        tap.ok(count(steps, "dnn", "Slice+Transpose") == 2
               and count(steps, "ref", "Slice") == 1,
               "k Slice read twice: kept, q and v fused", "\n".join(steps))

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
        got, msg, steps = run(nodes, [("x", x.shape)], inits,
                              [("y", ref.shape)], {"x": x})
        if got is None:
            tap.ok(False, "Slice with %s runs" % what, msg)
            continue
        close("Slice with %s: output" % what, got["y"], ref)
        tap.ok(count(steps, "dnn", "Slice+Transpose") == 0
               and count(steps, "ref", "Slice") == 1,
               "Slice with %s: kept" % what, "\n".join(steps))


def main():
    fused_cases()
    kept_cases()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
