#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Fused post-op chains against numpy, and nn.MultiheadAttention against
PyTorch.

oneDNN 2.6 keeps one eltwise injector per algorithm in a primitive's
post-ops, so a second eltwise of the same algorithm with other
parameters ran with the first one's: MatMul * 0.7 * 0.5 came out as
MatMul * 0.49, and nn.MultiheadAttention's scores (q / sqrt(d) before
the product, * 1 and + mask after it) were wrong by 6% of their range.
The fusion now folds a linear into the linear before it and ends a chain
before any other repeat (dnnl.h: ss_dnn_postops_add_eltwise).  Each case
is built with onnx.helper (or exported from PyTorch), run through
slimserve-infer, and compared within
    |slimserve - reference| <= 1e-5 * max|reference| + 1e-6;
the int8 case within one output quantization step.  A merged linear
chain must still be one fused step (the plan dump).
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

RNG = np.random.default_rng(27)
RTOL, ATOL = 1e-5, 1e-6

# (op, parameter): what follows the product, in order
CHAINS = [
    [("Mul", 0.7), ("Mul", 0.5)],
    [("Add", 0.7), ("Mul", 0.5), ("Sub", 0.25)],
    [("Mul", 0.7), ("Relu", None), ("Mul", 0.5)],
    [("Clip", (-5.0, 5.0)), ("Mul", 0.5), ("Clip", (-1.0, 1.0))],
    [("LeakyRelu", 0.1), ("Mul", 0.5), ("LeakyRelu", 0.3)],
    [("Mul", 0.7), ("Tanh", None), ("Mul", 0.5), ("Add", 0.1)],
    [("Div", 4.0), ("Relu", None), ("Div", 2.0), ("Relu", None)],
]


def np_op(y, op, v):
    f = np.float32
    if op == "Mul":
        return y * f(v)
    if op == "Add":
        return y + f(v)
    if op == "Sub":
        return y - f(v)
    if op == "Div":
        return y / f(v)
    if op == "Relu":
        return np.maximum(y, 0)
    if op == "LeakyRelu":
        return np.where(y > 0, y, y * f(v))
    if op == "Clip":
        return np.clip(y, f(v[0]), f(v[1]))
    if op == "Tanh":
        return np.tanh(y)
    raise ValueError(op)


def chain_nodes(src, chain, inits):
    nodes, out = [], src
    for i, (op, v) in enumerate(chain):
        ins, attrs = [out], {}
        if op in ("Mul", "Add", "Sub", "Div"):
            inits.append(("c%d" % i, np.array(v, np.float32)))
            ins.append("c%d" % i)
        elif op == "Clip":
            inits.append(("lo%d" % i, np.array(v[0], np.float32)))
            inits.append(("hi%d" % i, np.array(v[1], np.float32)))
            ins += ["lo%d" % i, "hi%d" % i]
        elif op == "LeakyRelu":
            attrs["alpha"] = v
        nodes.append(helper.make_node(op, ins, ["p%d" % i], **attrs))
        out = "p%d" % i
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    return nodes


def model(nodes, inputs, inits, yshape, opset=13):
    g = helper.make_graph(
        nodes, "postops",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
         for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       list(yshape))],
        [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def run(m, feeds, dump=False):
    """(outputs, message, plan dump text) of slimserve-infer on feeds."""
    with infer.Scratch() as s:
        path = s.file("model.onnx")
        onnx.save(m, path)
        specs = []
        for k, v in feeds.items():
            np.save(s.file(k + ".npy"), v)
            specs.append("%s=%s" % (k, s.file(k + ".npy")))
        got, msg = infer.run(path, specs, s.file("out.npz"),
                             ("--threads", "1"))
        text = ""
        if dump:
            args = [infer.cli_path(), "--model", path, "--output",
                    s.file("o2.npz"), "--threads", "1"]
            for sp in specs:
                args += ["--input", sp]
            p = subprocess.run(args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120,
                               env=dict(os.environ, SS_ENGINE_DUMP="1"))
            text = (p.stdout + p.stderr).decode("utf-8", "replace")
    return got, msg, text


def close(name, got, want, tol=None):
    if got is None or got.shape != want.shape:
        return tap.ok(False, name, "shape %s, want %s"
                      % (None if got is None else got.shape, want.shape))
    t = tol if tol is not None else \
        RTOL * float(np.max(np.abs(want))) + ATOL
    d = float(np.max(np.abs(got.astype(np.float64) - want)))
    return tap.ok(d <= t, name, "max |diff| %.3g (tolerance %.3g)" % (d, t))


def label(chain):
    return " ".join("%s(%s)" % (op, "" if v is None else v)
                    for op, v in chain)


def producers():
    """(what, inputs, nodes, inits, feeds, reference of the product)."""
    a = RNG.standard_normal((16, 24)).astype(np.float32)
    b = RNG.standard_normal((24, 40)).astype(np.float32)
    yield ("MatMul of two inputs", [("a", a.shape), ("b", b.shape)],
           [helper.make_node("MatMul", ["a", "b"], ["s"])], [],
           {"a": a, "b": b}, a @ b)
    a3 = RNG.standard_normal((4, 16, 24)).astype(np.float32)
    b3 = RNG.standard_normal((4, 24, 16)).astype(np.float32)
    yield ("batched MatMul", [("a", a3.shape), ("b", b3.shape)],
           [helper.make_node("MatMul", ["a", "b"], ["s"])], [],
           {"a": a3, "b": b3}, a3 @ b3)
    yield ("MatMul by a constant", [("a", a.shape)],
           [helper.make_node("MatMul", ["a", "w"], ["s"])], [("w", b)],
           {"a": a}, a @ b)
    bias = RNG.standard_normal(40).astype(np.float32)
    yield ("Gemm with bias", [("a", a.shape)],
           [helper.make_node("Gemm", ["a", "w", "bias"], ["s"])],
           [("w", b), ("bias", bias)], {"a": a}, a @ b + bias)
    x = RNG.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = (RNG.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)
    yield ("Conv 3x3", [("x", x.shape)],
           [helper.make_node("Conv", ["x", "w"], ["s"], pads=[1, 1, 1, 1])],
           [("w", w)], {"x": x}, conv_ref(x, w))


def conv_ref(x, w):
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd],
                           w[:, :, i, j].astype(np.float64))
    return y.astype(np.float32)


def chains():
    for what, inputs, pnodes, pinits, feeds, prod in producers():
        for chain in CHAINS:
            inits = list(pinits)
            nodes = pnodes + chain_nodes("s", chain, inits)
            want = prod
            for op, v in chain:
                want = np_op(want, op, v)
            got, msg, _ = run(model(nodes, inputs, inits, want.shape), feeds)
            if got is None:
                tap.ok(False, "%s then %s runs" % (what, label(chain)), msg)
                continue
            close("%s then %s" % (what, label(chain)), got["y"], want)


def still_fused():
    """The merged linears stay one oneDNN step with the product."""
    a = RNG.standard_normal((16, 24)).astype(np.float32)
    b = RNG.standard_normal((24, 40)).astype(np.float32)
    inits = []
    nodes = [helper.make_node("MatMul", ["a", "b"], ["s"])] + \
        chain_nodes("s", CHAINS[1], inits)
    got, msg, text = run(model(nodes, [("a", a.shape), ("b", b.shape)],
                               inits, (16, 40)), {"a": a, "b": b},
                         dump=True)
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    tap.ok(len(steps) == 1 and " dnn " in steps[0]
           and "MatMul+Add+Mul+Sub" in steps[0],
           "MatMul + Add + Mul + Sub is one fused step", "steps: %s" % steps)


def prescaled_scores():
    """Attention scores as exporters write them: (q / c) k^T * s + m,
    the prescale moved onto the product as its first linear."""
    q = RNG.standard_normal((8, 7, 8)).astype(np.float32)
    k = RNG.standard_normal((8, 8, 7)).astype(np.float32)
    mask = RNG.standard_normal((8, 1, 7)).astype(np.float32)
    inits = [("c", np.array(2.828427, np.float32)),
             ("s", np.array(0.7, np.float32))]
    nodes = [helper.make_node("Div", ["q", "c"], ["qs"]),
             helper.make_node("MatMul", ["qs", "k"], ["p"]),
             helper.make_node("Mul", ["p", "s"], ["ps"]),
             helper.make_node("Add", ["ps", "m"], ["y"])]
    want = (q / np.float32(2.828427)) @ k * np.float32(0.7) + mask
    got, msg, _ = run(model(nodes, [("q", q.shape), ("k", k.shape),
                                    ("m", mask.shape)], inits, want.shape),
                      {"q": q, "k": k, "m": mask})
    if got is None:
        return tap.ok(False, "prescaled scores run", msg)
    close("(q / c) k * s + mask", got["y"], want)


def windowed_bias():
    """Windowed attention's scores as swin writes them: q k^T * s + a
    relative-position bias [1, heads, T, T] over [windows, heads, T, T].
    oneDNN 2.6's brgemm matmul has no such binary post-op: with the bias
    fused it ran its reference matmul, ~100x slower (swin_t at 112x112:
    85% of a run); the bias must run as its own step, no step on oneDNN's
    reference code (the plan dump's impl)."""
    q = RNG.standard_normal((8, 3, 49, 32)).astype(np.float32)
    k = RNG.standard_normal((8, 3, 32, 49)).astype(np.float32)
    bias = RNG.standard_normal((1, 3, 49, 49)).astype(np.float32)
    inits = [("s", np.array(0.17677, np.float32)), ("bias", bias)]
    nodes = [helper.make_node("MatMul", ["q", "k"], ["p"]),
             helper.make_node("Mul", ["p", "s"], ["ps"]),
             helper.make_node("Add", ["ps", "bias"], ["y"])]
    want = (q.astype(np.float64) @ k * np.float32(0.17677) + bias)
    got, msg, text = run(model(nodes, [("q", q.shape), ("k", k.shape)],
                               inits, want.shape), {"q": q, "k": k},
                         dump=True)
    if got is None:
        return tap.ok(False, "windowed scores with a bias run", msg)
    close("q k^T * s + bias [1, heads, T, T]", got["y"], want)
    impls = re.findall(r"impl (\S+)", text)
    tap.ok(bool(impls) and not any(i.startswith("ref") for i in impls),
           "no step of it on oneDNN's reference code", "impls: %s" % impls)


def window_mask():
    """swin's shifted-window mask: [1, windows, 1, T, T] added to the 5-D
    scores [B, windows, heads, T, T].  oneDNN 2.6 has only its reference
    binary kernel for that broadcast (20 ms here where the engine's own
    Add takes 0.12): no step of it on oneDNN's reference code."""
    x = RNG.standard_normal((2, 16, 3, 49, 49)).astype(np.float32)
    mask = RNG.standard_normal((1, 16, 1, 49, 49)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "mask"], ["y"])]
    got, msg, text = run(model(nodes, [("x", x.shape)], [("mask", mask)],
                               x.shape), {"x": x}, dump=True)
    if got is None:
        return tap.ok(False, "the window mask's Add runs", msg)
    close("x + mask [1, windows, 1, T, T]", got["y"], x + mask)
    impls = re.findall(r"impl (\S+)", text)
    tap.ok(not any(i.startswith("ref") for i in impls),
           "the mask's Add not on oneDNN's reference code",
           "impls: %s" % impls)


def int8_requant():
    """A scalar Mul between an int8 MatMul and its QuantizeLinear: the
    Mul's linear and the requantization's are one post-op."""
    x = RNG.uniform(-1, 1, (16, 32)).astype(np.float32)
    w = RNG.uniform(-1, 1, (32, 24)).astype(np.float32)
    sx, sw, sy = np.float32(1 / 127), np.float32(1 / 127), np.float32(0.05)
    wq = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
    inits = [("sx", np.array(sx)), ("zx", np.array(0, np.int8)),
             ("wq", wq), ("sw", np.array(sw)),
             ("half", np.array(0.5, np.float32)), ("sy", np.array(sy)),
             ("zy", np.array(0, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"],
                              ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["p"]),
             helper.make_node("Mul", ["p", "half"], ["ph"]),
             helper.make_node("QuantizeLinear", ["ph", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    g = helper.make_graph(
        nodes, "q8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 24])],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    xd = np.clip(np.round(x / sx), -128, 127) * sx
    p = (xd.astype(np.float64) @ (wq.astype(np.float64) * sw)) * 0.5
    want = (np.clip(np.round(p / sy), -128, 127) * sy).astype(np.float32)
    got, msg, _ = run(m, {"x": x})
    if got is None:
        return tap.ok(False, "int8 MatMul * 0.5 requantized runs", msg)
    # rounding of values on a half step may go either way: one step
    close("int8 MatMul * 0.5 requantized (within one step)", got["y"],
          want, tol=float(sy) * 1.001)


def gelu_nodes(form, x, inits):
    """GELU of x written out as exporters write it; output "y"."""
    c = {"half": 0.5, "one": 1.0, "three": 3.0, "k": 0.044715,
         "beta": 0.7978845608028654, "sqrt2": 1.4142135381698608,
         "rsqrt2": 0.7071067690849304, "kbad": 0.04}
    inits += [(n, np.array(v, np.float32)) for n, v in c.items()]

    def mk(op, ins, out):
        return helper.make_node(op, ins, [out])
    if form == "tanh":          # PyTorch 1.13, approximate='tanh'
        return [mk("Mul", [x, x], "t0"), mk("Mul", [x, "t0"], "t1"),
                mk("Mul", ["k", "t1"], "t2"), mk("Add", [x, "t2"], "t3"),
                mk("Mul", ["beta", "t3"], "t4"), mk("Tanh", ["t4"], "t5"),
                mk("Add", ["one", "t5"], "t6"), mk("Mul", [x, "t6"], "t7"),
                mk("Mul", ["half", "t7"], "y")]
    if form in ("tanh-pow", "tanh-bad"):   # x^3 as Pow, 0.5 x first
        k = "k" if form == "tanh-pow" else "kbad"
        return [mk("Pow", [x, "three"], "t0"), mk("Mul", ["t0", k], "t1"),
                mk("Add", ["t1", x], "t2"), mk("Mul", ["t2", "beta"], "t3"),
                mk("Tanh", ["t3"], "t4"), mk("Add", ["t4", "one"], "t5"),
                mk("Mul", [x, "half"], "t6"), mk("Mul", ["t6", "t5"], "y")]
    if form == "erf":           # PyTorch, nn.GELU()
        return [mk("Div", [x, "sqrt2"], "t0"), mk("Erf", ["t0"], "t1"),
                mk("Add", ["t1", "one"], "t2"), mk("Mul", [x, "t2"], "t3"),
                mk("Mul", ["t3", "half"], "y")]
    # erf by Mul 1/sqrt 2, 0.5 on x first
    return [mk("Mul", [x, "rsqrt2"], "t0"), mk("Erf", ["t0"], "t1"),
            mk("Add", ["one", "t1"], "t2"), mk("Mul", ["half", x], "t3"),
            mk("Mul", ["t3", "t2"], "y")]


def gelu_ref(form, h):
    h = h.astype(np.float64)
    if form.startswith("tanh"):
        k = 0.04 if form == "tanh-bad" else 0.044715
        return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + k * h ** 3)))
    from math import erf
    return 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))


def gelu_forms():
    """Every GELU decomposition engine/ir/gelu_pat.h knows becomes the
    Linear's gelu_erf / gelu_tanh post-op: one oneDNN step, within
    1e-5 of float64 numpy; a near-GELU (0.04 for 0.044715) is left to
    the reference kernels."""
    x = RNG.standard_normal((2, 16, 24)).astype(np.float32)
    w = (RNG.standard_normal((24, 40)) * 0.4).astype(np.float32)
    b = RNG.standard_normal(40).astype(np.float32)
    want_step = {"tanh": "MatMul+GeluTanh", "tanh-pow": "MatMul+GeluTanh",
                 "erf": "MatMul+GeluErf", "erf-mul": "MatMul+GeluErf",
                 "tanh-bad": None}
    for form, what in want_step.items():
        inits = [("w", w), ("b", b)]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["h"])] + \
            gelu_nodes(form, "h", inits)
        want = gelu_ref(form, x @ w + b)
        got, msg, text = run(model(nodes, [("x", x.shape)], inits,
                                   want.shape), {"x": x}, dump=True)
        if got is None:
            tap.ok(False, "MatMul + GELU (%s) runs" % form, msg)
            continue
        close("MatMul + bias + GELU (%s)" % form, got["y"], want)
        steps = [ln for ln in text.splitlines()
                 if re.match(r"\s+\d+ (ref|dnn) ", ln)]
        if what is None:
            tap.ok(len(steps) > 1 and "Gelu" not in text,
                   "GELU (%s): not GELU, not fused" % form,
                   "steps: %s" % steps)
        else:
            tap.ok(len(steps) == 1 and " dnn " in steps[0]
                   and what in steps[0], "GELU (%s) is one fused step %s"
                   % (form, what), "steps: %s" % steps)


def residual_sums():
    """A Linear's residual Add is its SUM post-op (plan_fuse_scale.c):
    z = sigmoid(r) W1 + b + r with r = tanh(a W0) dead after the Add adds
    into r's own bytes (y = sigmoid(z)).  The run copies r into z first
    where r is read again later (y = z * r) or is the GEMM's source too
    (z = r W1 + b + r: in place it would read rows already added into).
    Within 1e-5 of float64 numpy each way."""
    a = RNG.standard_normal((2, 16, 24)).astype(np.float32)
    w0 = (RNG.standard_normal((24, 40)) * 0.3).astype(np.float32)
    w1 = (RNG.standard_normal((40, 40)) * 0.3).astype(np.float32)
    b = RNG.standard_normal(40).astype(np.float32)
    r = np.tanh(a.astype(np.float64) @ w0)

    def sig(v):
        return 1 / (1 + np.exp(-v))
    for case, where in (("dead", "in place"), ("later", "copied first"),
                        ("source", "copied first")):
        src = "r" if case == "source" else "s"
        z = (r if case == "source" else sig(r)) @ w1 + b + r
        want = z * r if case == "later" else sig(z)
        nodes = [helper.make_node("MatMul", ["a", "w0"], ["m0"]),
                 helper.make_node("Tanh", ["m0"], ["r"]),
                 helper.make_node("Sigmoid", ["r"], ["s"]),
                 helper.make_node("MatMul", [src, "w1"], ["m1"]),
                 helper.make_node("Add", ["m1", "b"], ["h"]),
                 helper.make_node("Add", ["h", "r"], ["z"])]
        nodes.append(helper.make_node("Mul", ["z", "r"], ["y"])
                     if case == "later"
                     else helper.make_node("Sigmoid", ["z"], ["y"]))
        if case == "source":
            nodes = nodes[:2] + nodes[3:]
        got, msg, text = run(model(nodes, [("a", a.shape)],
                                   [("w0", w0), ("w1", w1), ("b", b)],
                                   want.shape), {"a": a}, dump=True)
        if got is None:
            tap.ok(False, "residual Add (%s) runs" % case, msg)
            continue
        close("MatMul + bias + residual (%s)" % case, got["y"], want)
        lines = text.splitlines()
        at = [i for i, ln in enumerate(lines) if "MatMul+Add " in ln]
        tap.ok(len(at) == 1 and at[0] + 2 < len(lines)
               and "adds its residual " + where in lines[at[0] + 2],
               "residual (%s): the GEMM's SUM, %s" % (case, where),
               "\n".join(lines[:14]))

def residual_through_views():
    """torchvision's out-projection: a Gemm's [T, C] rows, Reshape [T, B,
    C], Transpose (1, 0, 2) to [B, T, C] -- a view at B = 1 (it moves a
    dim of 1) -- then the residual Add.  At B = 1 the Add is the Gemm's
    SUM through the views; not when the view is also read by another step,
    nor at B = 2 (a real Transpose between them).  Within 1e-5 of float64
    numpy each way."""
    c = 48
    w = (RNG.standard_normal((c, c)) * 0.3).astype(np.float32)
    bias = RNG.standard_normal(c).astype(np.float32)
    for b, other, fused in ((1, False, True), (1, True, False),
                            (2, False, False)):
        t = 20
        a = RNG.standard_normal((t * b, c)).astype(np.float32)
        r = RNG.standard_normal((b, t, c)).astype(np.float32)
        h = (a.astype(np.float64) @ w.T + bias).reshape(t, b, c) \
            .transpose(1, 0, 2)
        want = 1 / (1 + np.exp(-(h + r)))
        nodes = [helper.make_node("Gemm", ["a", "w", "bias"], ["g"],
                                  transB=1),
                 helper.make_node("Reshape", ["g", "shape"], ["g3"]),
                 helper.make_node("Transpose", ["g3"], ["gt"],
                                  perm=[1, 0, 2]),
                 helper.make_node("Add", ["gt", "r"], ["z"]),
                 helper.make_node("Sigmoid", ["z"], ["y"])]
        if other:
            want = want * h
            nodes[-1].output[0] = "y0"
            nodes.append(helper.make_node("Mul", ["y0", "gt"], ["y"]))
        inits = [("w", w), ("bias", bias),
                 ("shape", np.array([t, b, c], dtype=np.int64))]
        got, msg, text = run(model(nodes, [("a", a.shape), ("r", r.shape)],
                                   inits, want.shape),
                             {"a": a, "r": r}, dump=True)
        what = "batch %d%s" % (b, ", the view read twice" if other else "")
        if got is None:
            tap.ok(False, "out-projection residual (%s) runs" % what, msg)
            continue
        close("out-projection residual (%s)" % what, got["y"], want)
        tap.ok(("Gemm+Add " in text) == fused,
               "out-projection residual (%s): %s" % (
                   what, "the Gemm's SUM" if fused else "a separate Add"),
               "\n".join(text.splitlines()[:14]))


def multihead_attention():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.skip("nn.MultiheadAttention: no python3-torch")
    import torch.nn as nn

    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = nn.MultiheadAttention(32, 4, batch_first=True)
            self.n = nn.LayerNorm(32)

        def forward(self, x, pad):
            y, w = self.m(x, x, x, key_padding_mask=pad)
            return self.n(x + y), w

    torch.manual_seed(27)
    m = MHA().eval()
    x = torch.randn(2, 7, 32)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    with torch.no_grad():
        want = [t.numpy() for t in m(x, pad)]
    with infer.Scratch() as s:
        np.savez(s.file("x.npz"), x=x.numpy(), pad=pad.numpy())
        for opset in (13, 17):
            path = s.file("mha_%d.onnx" % opset)
            torch.onnx.export(m, (x, pad), path, input_names=["x", "pad"],
                              output_names=["y", "w"], opset_version=opset)
            got, msg = infer.run(path, [s.file("x.npz")], s.file("o.npz"),
                                 ("--threads", "1"))
            if got is None:
                tap.ok(False, "nn.MultiheadAttention opset %d runs" % opset,
                       msg)
                continue
            close("nn.MultiheadAttention with a padding mask, opset %d: "
                  "output" % opset, got["y"], want[0])
            close("nn.MultiheadAttention opset %d: attention weights"
                  % opset, got["w"], want[1])


def main():
    chains()
    still_fused()
    prescaled_scores()
    windowed_bias()
    window_mask()
    int8_requant()
    gelu_forms()
    residual_sums()
    residual_through_views()
    multihead_attention()
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
