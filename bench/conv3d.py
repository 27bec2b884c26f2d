#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""3-D conv nets: slimserve vs PyTorch (and an older slimserve-infer).

The nets of tests/engine/test_conv3d.py (random weights): r3d (r3d_18's
shape, two stages, input 3x8x56x56) and unet3d (a 3-D U-Net block,
2x8x16x16), and of tests/engine/test_convt.py: unet2d (a small 2-D U-Net,
two levels of 16/32/64 channels, ConvTranspose2d up, skip Concats, input
3x128x128), exported at opset 13 with a dynamic batch.  Per batch, in
one run and interleaved (rounds x runs): slimserve-infer (this build),
PyTorch (eager, no_grad) and, with --base CLI, another slimserve-infer
(e.g. one whose 3-D steps ran on the C reference kernels).  Medians of
per-run CPU ms; ratios only of figures from the same run.  Prints CPU
model, oneDNN ISA and load.

  bench/conv3d.py [--cli PATH] [--base PATH] [--batches 1,3]
                  [--rounds 3] [--runs 5] [--threads 1]
                  [--nets r3d,unet3d,unet2d]
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "engine"))
import engine  # noqa: E402  (find_cli, run_slimserve, cpu_model, ...)


def torch_cpu_ms(torch, m, x, n):
    out = []
    with torch.no_grad():
        m(x)
        for _ in range(n):
            t = time.process_time()
            m(x)
            out.append((time.process_time() - t) * 1e3)
    return out


def main():
    ap = engine.ab_options(__doc__, "1,3", 3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nets", default="r3d,unet3d,unet2d")
    a = ap.parse_args()
    cli = engine.ab_cli(a, "conv3d")
    import torch
    import test_conv3d
    import test_convt

    torch.set_num_threads(a.threads)
    nets = {n: (c, s) for n, c, s in test_conv3d.models() + test_convt.models()
            if n in a.nets.split(",")}
    print("conv3d: %s, %d thread(s), load %s"
          % (engine.cpu_model(), a.threads, engine.loadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "y.npz")
        isa = None
        for name, (cls, shape) in nets.items():
            torch.manual_seed(len(name))
            m = cls().eval()
            path = os.path.join(tmp, name + ".onnx")
            torch.onnx.export(m, (torch.randn(1, *shape),), path,
                              input_names=["x"], output_names=["y"],
                              opset_version=13,
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
            for b in (int(v) for v in a.batches.split(",")):
                x = torch.randn(b, *shape)
                xf = os.path.join(tmp, "x.npy")
                np.save(xf, x.numpy())
                if isa is None:
                    isa = engine.onednn_isa(cli, path, xf, "x")
                    print("oneDNN ISA: %s" % isa)
                cpu = {"slimserve": [], "torch": []}
                if a.base:
                    cpu["base"] = []
                with torch.no_grad():
                    want = m(x).numpy()
                for _ in range(a.rounds):
                    _, _, y = engine.run_slimserve(cli, path, xf, "x", out,
                                                   a.runs, 1, a.threads, "y")
                    cpu["slimserve"] += engine.CPU_MS[cli]
                    cpu["torch"] += torch_cpu_ms(torch, m, x, a.runs)
                    if a.base:
                        engine.run_slimserve(a.base, path, xf, "x", out,
                                             a.runs, 1, a.threads, "y")
                        cpu["base"] += engine.CPU_MS[a.base]
                med = {k: statistics.median(v) for k, v in cpu.items()}
                line = "%-7s batch %d  cpu ms median: %s | torch/slimserve " \
                       "%.2fx" % (name, b, "  ".join(
                           "%s %.1f" % kv for kv in med.items()),
                           med["torch"] / med["slimserve"])
                if a.base:
                    line += "  base/slimserve %.1fx" % (
                        med["base"] / med["slimserve"])
                print(line + "  (max rel diff vs torch %.1e)  load %s" % (
                    engine.rel_diff(y, want.astype(np.float64)),
                    engine.loadavg()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
