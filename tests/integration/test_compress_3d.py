#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compression of a 3-D conv net (rank-5 tensors) through slimserve-train:
each method works and is right, or is refused with its reason (issue 12).

The net: Conv3d(2->8, 3, pads 1) - ReLU - Conv3d(8->16, 3, pads 1) - ReLU
- Conv3d(16->3, 1), plain torch with random weights, opset 13, dynamic
batch; calibration and validation rows are random normals.

  ptq     the int8 variant against PyTorch: max |diff| <= 5e-2 * max|y|
          (measured ~1.5e-2); its plan runs all three 3-D convs as fused
          int8 steps (SS_ENGINE_DUMP "int8 Conv")
  bf16    the bf16 variant against PyTorch: max |diff| <= 2e-2 * max|y|
          (bf16 keeps 8 bits: ~4e-3 per rounding); its plan runs all three
          3-D convs as bf16 steps ("bf16 Conv").  Before session 30 a 3-D
          conv had no bf16 (or int8) kernel and the job was rejected
  prune   structured 50%: the variant keeps some output channels of the
          first two convs.  Which ones is read back from its weights (each
          kept row is an original row, restricted to the kept inputs); a
          next conv's bias may take the cut channels' calibration means
          times their summed 3x3x3 taps (checked for the second conv: its
          8 kept rows' bias change lies in the span of the 4 cut columns'
          tap sums); the reference is PyTorch's net with the other channels'
          weights and biases zeroed (ReLU(0) = 0: a cut channel then
          contributes nothing) and the variant's biases, and the variant
          must equal it: <= 1e-5 * max|y| + 1e-6.
  lowrank no 2-D layer to factor: rejected, saying why (exit 1, nothing
          written).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
TOP_BUILD = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "engine"))
import infer  # noqa: E402
import tap  # noqa: E402

TRAIN_BIN = os.path.join(TOP_BUILD, "server", "slimserve-train")
SHAPE = (2, 6, 10, 10)


def net(torch):
    import torch.nn as nn

    return nn.Sequential(nn.Conv3d(2, 8, 3, 1, 1), nn.ReLU(),
                         nn.Conv3d(8, 16, 3, 1, 1), nn.ReLU(),
                         nn.Conv3d(16, 3, 1)).eval()


def job(d, method):
    """-> (exit code, stdout, stderr, path of a new version or None)."""
    with open(os.path.join(d, "job.json"), "w") as f:
        json.dump({"source_version": 1, "methods": [method],
                   "calibration": {"file": "calib.npz"},
                   "validation": {"file": "val.npz"},
                   "gate": {"min_agreement": 0.0}}, f)
    p = subprocess.run([TRAIN_BIN, os.path.join(d, "job.json"),
                        "--model-dir", d, "--threads", "1",
                        "--latency-runs", "1"], capture_output=True,
                       text=True, timeout=infer.TIMEOUT)
    vers = sorted(int(v) for v in os.listdir(d) if v.isdigit())
    new = os.path.join(d, str(vers[-1]), "model.onnx") \
        if vers[-1] > 1 else None
    return p.returncode, p.stdout, p.stderr, new


def run(model, x, tmp):
    np.savez(os.path.join(tmp, "x.npz"), x=x)
    got, msg = infer.run(model, [os.path.join(tmp, "x.npz")],
                         os.path.join(tmp, "y.npz"), ("--threads", "1"))
    return (None, msg) if got is None else (got["y"], msg)


def plan_steps(model, tmp):
    """The plan's step lines (SS_ENGINE_DUMP) of a run on x.npz."""
    p = subprocess.run([infer.cli_path(), "--model", model, "--input",
                        os.path.join(tmp, "x.npz"), "--repeat", "1",
                        "--threads", "1"],
                       capture_output=True, text=True, timeout=infer.TIMEOUT,
                       env=dict(os.environ, SS_ENGINE_DUMP="1"))
    return [ln for ln in (p.stdout + p.stderr).splitlines()
            if re.match(r"\s+\d+ (ref|dnn) ", ln)]


def kept_rows(w, wv):
    """The original output channels of w whose rows (restricted to the kept
    inputs already) are wv's rows, in order, or None."""
    rows = []
    for r in wv:
        hit = [o for o in range(w.shape[0])
               if w[o].shape == r.shape and np.array_equal(w[o], r)]
        if len(hit) != 1:
            return None
        rows.append(hit[0])
    return rows


def test_prune(torch, m, d, tmp, x):
    import onnx
    from onnx import numpy_helper

    rc, out, errs, new = job(d, {"method": "prune", "params": {
        "kind": "structured", "sparsity": 0.5}})
    if not tap.ok(rc == 0 and new, "prune: a version is written",
                  (out + errs)[-400:]):
        return
    g = onnx.load(new).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    ws = [inits[c.input[1]] for c in convs]
    bs = [inits[c.input[2]] for c in convs]
    tap.ok(len(ws) == 3 and ws[0].shape[0] < 8 and ws[1].shape[0] < 16,
           "prune: the first two convs lose output channels",
           "%s" % [w.shape for w in ws])
    if len(ws) != 3:
        return
    w1, w2, w3 = (m[i].weight.detach().numpy() for i in (0, 2, 4))
    k1 = kept_rows(w1, ws[0])
    k2 = None if k1 is None else kept_rows(w2[:, k1], ws[1])
    ok = k1 is not None and k2 is not None and np.array_equal(
        ws[2], w3[:, k2])
    if not tap.ok(ok, "prune: every kept row is an original row (%s, %s)"
                  % (k1, k2)):
        return
    # A B conv's bias may carry the cut channels' calibration means
    # (prune_cut.c): b' = b + sum_c m_c sum_taps W_B[:, c], over all 27
    # taps of the 3x3x3 kernel: the second conv's change (8 kept rows)
    # must lie in the span of its 4 cut columns' tap sums.
    cut = [c for c in range(8) if c not in k1]
    delta = bs[1].astype(np.float64) - m[2].bias.detach().numpy()[k2]
    a = w2[k2][:, cut].reshape(len(k2), len(cut), -1).sum(axis=2)
    coef = np.linalg.lstsq(a.astype(np.float64), delta, rcond=None)[0]
    res = float(np.abs(a @ coef - delta).max())
    tap.ok(res <= 1e-5 * float(np.abs(delta).max()) + 1e-7,
           "prune: conv 2's bias change is the cut channels' means times "
           "their summed taps (residual %.2g, |change| %.2g)"
           % (res, float(np.abs(delta).max())))
    ref = net(torch)
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        for conv, keep in ((ref[0], k1), (ref[2], k2)):
            cut = [o for o in range(conv.weight.shape[0]) if o not in keep]
            conv.weight[cut] = 0
            conv.bias[cut] = 0
        # the variant's biases of the B convs (the means folded in)
        ref[2].bias[k2] = torch.from_numpy(bs[1])
        ref[4].bias[:] = torch.from_numpy(bs[2])
        want = ref(torch.from_numpy(x)).numpy()
    tap.ok(np.array_equal(bs[0], m[0].bias.detach().numpy()[k1]),
           "prune: the first conv's kept biases are the originals")
    got, msg = run(new, x, tmp)
    if not tap.ok(got is not None, "prune: the variant runs", msg):
        return
    d_ = float(np.abs(got - want).max())
    tol = 1e-5 * float(np.abs(want).max()) + 1e-6
    tap.ok(d_ <= tol, "prune: the variant equals the net without the cut "
           "channels (max |diff| %.3g <= %.3g)" % (d_, tol))


def each_method(torch, m, shape, rng, x, tmp, prune, after):
    """Exports m (opset 13, dynamic batch) and runs ptq, bf16, prune and
    lowrank jobs on it, each in its own model dir under tmp with random
    calibration and validation rows of shape: a ptq/bf16 variant must be
    written and match PyTorch on x (5e-2 / 2e-2 of max|y|), then
    after(name, path) checks more; lowrank must be rejected with its
    reason; prune(d, src) runs the prune checks in dir d."""
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    src = os.path.join(tmp, "src.onnx")
    torch.onnx.export(m, (torch.from_numpy(x),), src,
                      input_names=["x"], output_names=["y"],
                      opset_version=13,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    for name, method, rtol in (("ptq", "ptq", 5e-2),
                               ("bf16", "bf16", 2e-2),
                               ("prune", None, None),
                               ("lowrank", {"method": "lowrank",
                                            "params": {"ratio": 0.5}},
                                None)):
        d = os.path.join(tmp, name)
        os.makedirs(os.path.join(d, "1"))
        shutil.copy(src, os.path.join(d, "1", "model.onnx"))
        np.savez(os.path.join(d, "calib.npz"),
                 x=rng.standard_normal((16,) + shape).astype(np.float32))
        np.savez(os.path.join(d, "val.npz"),
                 x=rng.standard_normal((8,) + shape).astype(np.float32))
        if name == "prune":
            prune(d, src)
            continue
        rc, out, errs, new = job(d, method)
        if name == "lowrank":
            tap.ok(rc == 1 and new is None
                   and "changed nothing" in errs,
                   "%s: rejected with its reason" % name,
                   (out + errs)[-400:])
            tap.diag("%s: %s" % (name, errs.strip().splitlines()[-1]))
            continue
        if not tap.ok(rc == 0 and new, "%s: a version is written" % name,
                      (out + errs)[-400:]):
            continue
        got, msg = run(new, x, tmp)
        if not tap.ok(got is not None, "%s: the variant runs" % name,
                      msg):
            continue
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        tap.ok(rel <= rtol, "%s: the variant matches PyTorch (max rel "
               "%.2e <= %g)" % (name, rel, rtol))
        after(name, new)


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    if not tap.ok(os.access(TRAIN_BIN, os.X_OK), "slimserve-train is built",
                  TRAIN_BIN):
        return tap.done()
    infer.import_onnx()     # the prune check reads the variant's file
    m = net(torch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3,) + SHAPE).astype(np.float32)
    tmp = tempfile.mkdtemp(prefix="ss-c3d-")

    def steps3(name, new):
        steps = plan_steps(new, tmp)
        kind = "int8 Conv" if name == "ptq" else "bf16 Conv"
        tap.ok(sum(kind in ln for ln in steps) == 3,
               "%s: the plan runs the 3 convs as %s steps" % (name, kind),
               "\n".join(steps))

    try:
        each_method(torch, m, SHAPE, rng, x, tmp,
                    lambda d, src: test_prune(torch, m, d, tmp, x), steps3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()

if __name__ == "__main__":
    sys.exit(main())
