#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""GridSample with grids far outside [-1, 1], through slimserve-infer,
against PyTorch's grid_sample.

A flow field warps from outside the image wherever it points off it, and
a random RAFT (torchvision raft_small, exported at opset 17) sends grid
values past 1e6: the kernel refused such values ("grid value out of
range") because they would overflow the integer casts of the sampling
coordinates.  Every finite value has a defined answer: 0 under zeros
padding, the edge under border padding.  Each mode (bilinear, nearest,
bicubic) and padding mode, align_corners 0 and 1, with a grid mixing
values in range, a little out (up to 3) and far out (1e4 to 1e30 of
either sign; reflection: up to 7), must equal PyTorch's float64
grid_sample within 1e-5 * max|want| + 1e-6.  PyTorch's own kernel casts
the far values to integers too, so its reference is computed on the grid
clamped to [-50, 50], which every far value is equivalent to (all taps
beyond the edge by more than the bicubic support).  A NaN grid value has
no place to sample and is refused with a message, not a crash."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def grid_of(rng, far):
    g = rng.uniform(-1.2, 1.2, (2, 5, 6, 2))
    g[0, 0, :3] = rng.uniform(-3, 3, (3, 2))
    if far:
        vals = np.array([1e4, -1e6, 3e7, -2e12, 5e18, -1e30])
        g[0, 1, :, 0] = vals
        g[1, 2, :, 1] = -vals
        g[1, 3, :, :] = vals[:, None]
    else:
        g[1, 3, :, 0] = [4.5, -5.2, 6.9, -7, 2.2, -3.3]
    return g.astype(np.float32)


def main():
    onnx = infer.import_onnx()
    from onnx import TensorProto as TP, helper as h
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    import torch.nn.functional as F
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    with infer.Scratch() as s:
        mp, ip, op = s.file("m.onnx"), s.file("in.npz"), s.file("out.npz")
        for mode in ("bilinear", "nearest", "bicubic"):
            for pad in ("zeros", "border", "reflection"):
                for align in (0, 1):
                    g = h.make_graph(
                        [h.make_node("GridSample", ["x", "g"], ["y"],
                                     mode=mode, padding_mode=pad,
                                     align_corners=align)], "gs",
                        [h.make_tensor_value_info("x", TP.FLOAT, x.shape),
                         h.make_tensor_value_info("g", TP.FLOAT, None)],
                        [h.make_tensor_value_info("y", TP.FLOAT, None)])
                    m = h.make_model(g, opset_imports=[
                        h.make_opsetid("", 16)])
                    m.ir_version = 8
                    onnx.save(m, mp)
                    grid = grid_of(rng, pad != "reflection")
                    want = F.grid_sample(
                        torch.from_numpy(x).double(),
                        torch.from_numpy(grid).double().clamp(-50, 50),
                        mode=mode, padding_mode=pad,
                        align_corners=bool(align)).float().numpy()
                    np.savez(ip, x=x, g=grid)
                    got, msg = infer.run(mp, [ip], op)
                    what = "GridSample %s %s align_corners %d, grid %s" % (
                        mode, pad, align, "to 1e30" if pad != "reflection"
                        else "to 7")
                    if not tap.ok(got is not None, what + ": runs", msg):
                        continue
                    ok, detail = infer.compare(got["y"], want, 1e-5, 1e-6)
                    tap.ok(ok, what + ": equals PyTorch", detail)
        grid = grid_of(rng, False)
        grid[1, 0, 0, 1] = np.nan
        np.savez(ip, x=x, g=grid)
        got, msg = infer.run(mp, [ip], op)
        tap.ok(got is None and "is not finite" in msg
               and "exit status 1" in msg, "a NaN grid value is refused",
               msg)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
