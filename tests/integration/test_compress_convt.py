#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compression of a net with a ConvTranspose (a decoder's upsampling, now
on oneDNN's deconvolution) through slimserve-train: each method works
and is right, or is refused with its reason (issue 12).

The net: Conv2d(3->16, 3, pads 1) - ReLU - Conv2d(16->16, 3, stride 2,
pads 1) - ReLU - ConvTranspose2d(16->8, 2, stride 2) - ReLU - Conv2d(8->2,
1), random weights, opset 13, dynamic batch; calibration and validation
rows random normals.

  ptq     written; the variant (the convs int8, the ConvTranspose f32)
          against PyTorch: max |diff| <= 5e-2 * max|y|
  bf16    written; the variant against PyTorch: <= 2e-2 * max|y|
  prune   structured 50%: a ConvTranspose's weights are [in, out/group,
          ...], so the conv feeding it must keep its channels and the
          ConvTranspose must come through unchanged; the first conv loses
          channels.  The variant is rebuilt in PyTorch from its own
          weights (widths read from the file) and must equal what the
          engine serves: <= 1e-5 * max|y| + 1e-6.
  lowrank rejected with its reason (random 3x3 convs of 16 channels
          factor into nothing that pays).
The jobs run as test_compress_3d.py's (each_method).
"""

import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_compress_3d as c3  # noqa: E402  (job, run, paths, tap, infer)

tap = c3.tap
infer = c3.infer
SHAPE = (3, 12, 12)


def net(torch):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
                         nn.ConvTranspose2d(16, 8, 2, 2), nn.ReLU(),
                         nn.Conv2d(8, 2, 1)).eval()


def weights(path):
    """The variant's (weight, bias) per Conv / ConvTranspose node, in
    graph order: [(op, w, b)]."""
    import onnx
    from onnx import numpy_helper
    g = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [(n.op_type, inits[n.input[1]], inits[n.input[2]])
            for n in g.node if n.op_type in ("Conv", "ConvTranspose")]


def test_prune(torch, src, d, tmp, x):
    import torch.nn as nn
    rc, out, errs, new = c3.job(d, {"method": "prune", "params": {
        "kind": "structured", "sparsity": 0.5}})
    if not tap.ok(rc == 0 and new, "prune: a version is written",
                  (out + errs)[-400:]):
        return
    ws, w0 = weights(new), weights(src)
    ops = [o for o, _, _ in ws]
    ok = ops == ["Conv", "Conv", "ConvTranspose", "Conv"]
    tap.ok(ok and ws[0][1].shape[0] < 16
           and np.array_equal(ws[2][1], w0[2][1])
           and np.array_equal(ws[2][2], w0[2][2]),
           "prune: the first conv loses channels, the ConvTranspose and "
           "the conv feeding it are kept whole",
           "ops %s, shapes %s" % (ops, [w.shape for _, w, _ in ws]))
    if not ok:
        return
    m = nn.Sequential(nn.Conv2d(3, ws[0][1].shape[0], 3, 1, 1), nn.ReLU(),
                      nn.Conv2d(ws[1][1].shape[1], 16, 3, 2, 1), nn.ReLU(),
                      nn.ConvTranspose2d(16, 8, 2, 2), nn.ReLU(),
                      nn.Conv2d(8, 2, 1)).eval()
    convs = [mod for mod in m if isinstance(mod, (nn.Conv2d,
                                                  nn.ConvTranspose2d))]
    with torch.no_grad():
        for mod, (_, w, b) in zip(convs, ws):
            mod.weight.copy_(torch.from_numpy(w))
            mod.bias.copy_(torch.from_numpy(b))
        want = m(torch.from_numpy(x)).numpy()
    got, msg = c3.run(new, x, tmp)
    ok, detail = infer.compare(got, want, 1e-5, 1e-6)
    tap.ok(ok, "prune: the served variant equals PyTorch on its weights",
           detail or msg)


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    if not tap.ok(os.access(c3.TRAIN_BIN, os.X_OK),
                  "slimserve-train is built", c3.TRAIN_BIN):
        return tap.done()
    infer.import_onnx()
    torch.manual_seed(5)
    m = net(torch)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3,) + SHAPE).astype(np.float32)
    tmp = tempfile.mkdtemp(prefix="ss-cct-")
    try:
        c3.each_method(torch, m, SHAPE, rng, x, tmp,
                       lambda d, src: test_prune(torch, src, d, tmp, x),
                       lambda name, new: None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()

if __name__ == "__main__":
    sys.exit(main())
