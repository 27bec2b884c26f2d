#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Scan beyond the node suite's two cases (which scan forward only):
reversed scan inputs and outputs, version 8's batch axis, two scan
inputs, and a body reading an outer graph input, built with
onnx.helper and compared with a numpy loop written from the spec.

The body: s_out = s_in + x_t * w (+ u_t when there is a second scan
input), y_t = s_out; w is the outer graph's input, read by name from the
body.  Every case: exact float32 sums in the same order, compared within
1e-6 relative.  Skipped without python3-onnx.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def build(opset, in_rev, out_rev, batch, two):
    from onnx import TensorProto, helper
    f = TensorProto.FLOAT
    body_in = [helper.make_tensor_value_info("s_in", f, [2]),
               helper.make_tensor_value_info("x_t", f, [2])]
    nodes = [helper.make_node("Mul", ["x_t", "w"], ["m"]),
             helper.make_node("Add", ["s_in", "m"], ["s_out"]
                              if not two else ["s_mid"])]
    if two:
        body_in.append(helper.make_tensor_value_info("u_t", f, [2]))
        nodes.append(helper.make_node("Add", ["s_mid", "u_t"], ["s_out"]))
    nodes.append(helper.make_node("Identity", ["s_out"], ["y_t"]))
    body = helper.make_graph(
        nodes, "body", body_in,
        [helper.make_tensor_value_info("s_out", f, [2]),
         helper.make_tensor_value_info("y_t", f, [2])])
    m = 2 if two else 1
    attrs = {"body": body, "num_scan_inputs": m}
    lead = [2] if batch else []
    ins = ["", "s0", "x"] if batch else ["s0", "x"]
    graph_in = [helper.make_tensor_value_info("s0", f, lead + [2]),
                helper.make_tensor_value_info("x", f, lead + [5, 2]),
                helper.make_tensor_value_info("w", f, [2])]
    if two:
        ins.append("u")
        graph_in.append(helper.make_tensor_value_info("u", f,
                                                      lead + [5, 2]))
    if batch:
        attrs["directions"] = [in_rev] * m
    else:
        attrs["scan_input_directions"] = [in_rev] * m
        attrs["scan_output_directions"] = [out_rev]
    node = helper.make_node("Scan", ins, ["s", "y"], **attrs)
    graph = helper.make_graph(
        [node], "scan", graph_in,
        [helper.make_tensor_value_info("s", f, lead + [2]),
         helper.make_tensor_value_info("y", f, lead + [5, 2])])
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", opset)])


def reference(s0, x, w, u, in_rev, out_rev):
    """One sequence: s0 [2], x and u [T, 2]."""
    steps = x.shape[0]
    s = s0.copy()
    y = np.zeros_like(x)
    for i in range(steps):
        t = steps - 1 - i if in_rev else i
        s = s + x[t] * w
        if u is not None:
            s = s + u[t]
        y[steps - 1 - i if out_rev else i] = s
    return s, y


def main():
    try:
        import onnx
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    if not tap.ok(os.access(infer.cli_path(), os.X_OK),
                  "slimserve-infer is built", infer.cli_path()):
        return tap.done()
    rng = np.random.default_rng(8)
    cases = [(11, 1, 0, False, False), (11, 0, 1, False, False),
             (16, 1, 1, False, True), (9, 0, 0, False, True),
             (8, 1, 0, True, False), (8, 0, 0, True, True)]
    with infer.Scratch() as sc:
        for opset, in_rev, out_rev, batch, two in cases:
            what = "Scan opset %d, in %s, out %s%s%s" % (
                opset, "reversed" if in_rev else "forward",
                "reversed" if out_rev else "forward",
                ", batch 2 (version 8)" if batch else "",
                ", two scan inputs" if two else "")
            path = sc.file("scan.onnx")
            onnx.save(build(opset, in_rev, out_rev, batch, two), path)
            lead = (2,) if batch else ()
            feeds = {"s0": rng.standard_normal(lead + (2,)),
                     "x": rng.standard_normal(lead + (5, 2)),
                     "w": rng.standard_normal(2)}
            if two:
                feeds["u"] = rng.standard_normal(lead + (5, 2))
            feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
            np.savez(sc.file("in.npz"), **feeds)
            got, msg = infer.run(path, [sc.file("in.npz")],
                                 sc.file("out.npz"))
            if not tap.ok(got is not None, what + ": runs", msg):
                continue
            seqs = range(2) if batch else [None]
            ws, wy = [], []
            for b in seqs:
                pick = (lambda a: a[b]) if batch else (lambda a: a)
                s, y = reference(pick(feeds["s0"]), pick(feeds["x"]),
                                 feeds["w"], pick(feeds["u"]) if two
                                 else None, in_rev, out_rev)
                ws.append(s)
                wy.append(y)
            want_s = np.stack(ws) if batch else ws[0]
            want_y = np.stack(wy) if batch else wy[0]
            for name, want in (("s", want_s), ("y", want_y)):
                ok, detail = infer.compare(got.get(name), want, 1e-6, 1e-7)
                tap.ok(ok, "%s: %s matches numpy" % (what, name), detail)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
