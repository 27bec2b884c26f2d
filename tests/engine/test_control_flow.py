#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""If and Loop as PyTorch exports them (torch.jit.script, then
torch.onnx.export at opsets 13 and 17), run through slimserve-infer and
compared with PyTorch's own outputs (issue 12: "control flow where
exporters emit it").

  branch     `if x.sum() > 0:` -- a condition computed from data: the If
             runs as a step choosing a branch plan at run time; run on an
             input of each sign, so both branches are checked
  shape_if   `if x.size(0) == 1:` -- a condition folded from shapes: the
             branch taken is inlined at compile time (checked in the plan
             dump: no control step left), at batch 1 and batch 3
  loop_n     `for i in range(n):` with n a graph input, a Linear + tanh
             body reading an outer weight, and the index in the sum: the
             trip count is known only at run time (n = 0, 1, 4)
  loop_cols  `for i in range(x.size(1)):` slicing column i: the trip
             count folds from shapes, the body's Slice depends on i (one
             body plan per iteration)
  while_     `while y.abs().sum() > t:` -- the condition is computed in
             the body at run time
  nested     a data-dependent If inside the body of a loop over x.size(0)

Each exported model is checked to hold the If/Loop nodes meant (through
python3-onnx, when installed): an exporter that unrolled or folded them
would leave nothing to test.

Each output: |got - want| <= 1e-5 * max|want| + 1e-6 per element (the
engine's kernels are the same float32 arithmetic; reductions may sum in
another order).
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

RTOL = 1e-5
ATOL = 1e-6


def models():
    import torch
    import torch.nn as nn

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            if x.sum() > 0:
                y = self.fc(x)
            else:
                y = torch.relu(x) * 2.0 - x
            return y

    class ShapeIf(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            if x.size(0) == 1:
                y = self.fc(x) * 3.0
            else:
                y = torch.sigmoid(self.fc(x))
            return y

    class LoopN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x, n: torch.Tensor):
            y = x
            for i in range(int(n)):
                y = torch.tanh(self.fc(y)) + float(i)
            return y

    class LoopCols(nn.Module):
        def forward(self, x):
            acc = torch.zeros_like(x[:, 0:1])
            for i in range(x.size(1)):
                acc = acc * 0.5 + x[:, i:i + 1]
            return acc

    class While(nn.Module):
        def forward(self, x, t: torch.Tensor):
            y = x
            while y.abs().sum() > t:
                y = y * 0.5
            return y

    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = x
            for i in range(x.size(0)):
                if y.mean() > 0:
                    y = self.fc(y) - 0.25
                else:
                    y = torch.abs(y) + 0.1 * float(i)
            return y

    g = torch.Generator().manual_seed(5)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    pos = rnd(2, 8).abs() + 0.1
    neg = -(rnd(2, 8).abs() + 0.1)
    n = lambda k: torch.tensor(k, dtype=torch.int64)  # noqa: E731
    thr = torch.tensor(0.5)
    return [
        # name, module, example args, input names, runs [(args...)]
        ("branch", Branch, (pos,), ["x"], [(pos,), (neg,)]),
        ("shape_if", ShapeIf, (rnd(3, 8),), ["x"],
         [(rnd(1, 8),), (rnd(3, 8),)]),
        ("loop_n", LoopN, (rnd(2, 8), n(2)), ["x", "n"],
         [(rnd(2, 8), n(0)), (rnd(2, 8), n(1)), (rnd(2, 8), n(4))]),
        ("loop_cols", LoopCols, (rnd(3, 5),), ["x"],
         [(rnd(3, 5),), (rnd(2, 7),)]),
        ("while", While, (rnd(2, 8) * 4, thr), ["x", "t"],
         [(rnd(2, 8) * 4, thr), (rnd(2, 8) * 0.01, thr)]),
        ("nested", Nested, (pos,), ["x"],
         [(pos,), (neg,), (rnd(5, 8),), (rnd(1, 8),)]),
    ]


# The control-flow ops each model must hold ("Loop/If": an If in a Loop's
# body).
WANT_OPS = {"branch": {"If"}, "shape_if": {"If"}, "loop_n": {"Loop"},
            "loop_cols": {"Loop"}, "while": {"Loop"},
            "nested": {"Loop", "Loop/If"}}


def dynamic_axes(name, inputs):
    if name in ("shape_if", "loop_cols", "nested"):
        return {"x": {0: "n", 1: "c"}, "y": {0: "n"}}
    return None


def control_ops(path):
    """The If/Loop/Scan nodes of the model, "Loop/If" for nested ones;
    None without python3-onnx."""
    try:
        import onnx
    except ImportError:
        return None
    found = set()

    def walk(g, prefix):
        for n in g.node:
            if n.op_type in ("If", "Loop", "Scan"):
                found.add(prefix + n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, prefix + n.op_type + "/")
    walk(onnx.load(path).graph, "")
    return found


def plan_dump(path, npz):
    env = dict(os.environ, SS_ENGINE_DUMP="1")
    p = subprocess.run([infer.cli_path(), "--model", path, "--input", npz,
                        "--repeat", "1", "--threads", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=infer.TIMEOUT)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    with infer.Scratch() as s:
        for name, cls, example, in_names, runs in models():
            torch.manual_seed(len(name))
            m = torch.jit.script(cls().eval())
            for opset in (13, 17):
                path = s.file("%s_%d.onnx" % (name, opset))
                try:
                    torch.onnx.export(m, example, path,
                                      input_names=in_names,
                                      output_names=["y"],
                                      opset_version=opset,
                                      dynamic_axes=dynamic_axes(name,
                                                                in_names))
                except Exception as e:  # noqa: BLE001
                    tap.ok(False, "%s opset %d exports" % (name, opset),
                           str(e)[-400:])
                    continue
                ops = control_ops(path)
                if ops is not None:
                    tap.ok(WANT_OPS[name] <= ops, "%s opset %d holds %s"
                           % (name, opset, sorted(WANT_OPS[name])),
                           "found %s" % sorted(ops))
                for r, args in enumerate(runs):
                    with torch.no_grad():
                        want = m(*args).numpy()
                    npz = s.file("in.npz")
                    np.savez(npz, **{k: a.numpy()
                                     for k, a in zip(in_names, args)})
                    out = s.file("out.npz")
                    got, msg = infer.run(path, [npz], out,
                                         ("--threads", "1"))
                    what = "%s opset %d run %d" % (name, opset, r)
                    if not tap.ok(got is not None, what + " runs", msg):
                        continue
                    ok, detail = infer.compare(got.get("y"), want, RTOL,
                                               ATOL)
                    tap.ok(ok, "%s matches PyTorch (rtol %g)" % (what, RTOL),
                           detail)
                    if name == "shape_if":
                        rc, text = plan_dump(path, npz)
                        steps = re.findall(r"^\s+\d+ (\w+) ", text, re.M)
                        tap.ok(rc == 0 and steps and "ctrl" not in steps,
                               "%s: the If is folded (%d steps, none a "
                               "control step)" % (what, len(steps)),
                               text[-600:])
                    if name == "branch" and r == 0:
                        rc, text = plan_dump(path, npz)
                        tap.ok(rc == 0 and re.search(r"^\s+\d+ ctrl ", text,
                                                     re.M) is not None,
                               "%s: the If is a control step" % what,
                               text[-600:])
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
