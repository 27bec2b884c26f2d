#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Training throughput: the C trainer vs PyTorch eager, same data, same run.

    /usr/bin/python3 bench/train.py [--build DIR] [--steps N] [--threads T]

For the MLP, CNN and transformer fixtures: batch 64 from the digits
held-out set, cross-entropy, AdamW, T threads (default 2).  Where the CPU
has AVX512_BF16 or AMX, the C trainer runs once more in bf16 mixed
precision ("precision": "bf16") and the last column is its speed over
its own f32 run.  The C side is
compress/train/train-bench (one process per model); PyTorch runs the same
model, initialized from the same state_dict, in train mode with dropout
off, with torch.set_num_threads(T).  Both report the median step time
after 5 warm-up steps; the ratio is C samples/s over PyTorch samples/s.
Needs python3-torch (Debian's 1.13); prints the CPU model and ISA, since
only ratios from one run compare.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
FIX = os.path.join(TOP, "tests", "fixtures")


def cpu():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                       "amx_tile", "amx_bf16") if f in flags]
    return model, " ".join(isa)


def torch_run(name, steps, threads, batch):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, FIX)
    import models
    cls, inp, _, _ = models.MODELS[name]
    torch.set_num_threads(threads)
    data = np.load(os.path.join(FIX, "digits", name + "_heldout.npz"))
    x, y = data[inp], data["labels"]
    m = cls()
    m.load_state_dict(torch.load(os.path.join(FIX, "torch", name + ".pt")))
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    nb = x.shape[0] // batch
    ms = []
    for s in range(-5, steps):
        r0 = ((s + 5) % nb) * batch
        xb = torch.from_numpy(x[r0:r0 + batch])
        yb = torch.from_numpy(y[r0:r0 + batch])
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(m(xb), yb)
        loss.backward()
        opt.step()
        if s >= 0:
            ms.append((time.perf_counter() - t0) * 1e3)
    med = float(np.median(ms))
    return {"ms_per_step": med, "samples_per_s": batch * 1e3 / med}


def c_run(build, name, steps, threads, batch, precision="f32"):
    exe = os.path.join(build, "compress", "train", "train-bench")
    out = subprocess.run(
        [exe, os.path.join(FIX, name + "_op17", "model.onnx"),
         os.path.join(FIX, "digits", name + "_heldout.npz"), str(batch),
         str(steps), str(threads), "adamw", precision],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("top_builddir", TOP))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    model, isa = cpu()
    bf16 = "avx512_bf16" in isa.split() or "amx_bf16" in isa.split()
    print("cpu: %s; isa: %s; threads %d, batch %d, AdamW; load average "
          "%.1f at the start" % (model, isa or "-", a.threads, a.batch,
                                 os.getloadavg()[0]))
    print("%-12s %12s %12s %8s %12s %9s" % (
        "model", "C samples/s", "torch s/s", "ratio", "C bf16 s/s",
        "bf16/f32"))
    for name in ("mlp", "cnn", "transformer"):
        c = c_run(a.build, name, a.steps, a.threads, a.batch)
        t = torch_run(name, a.steps, a.threads, a.batch)
        b = (c_run(a.build, name, a.steps, a.threads, a.batch, "bf16")
             if bf16 else None)
        print("%-12s %12.0f %12.0f %7.2fx %12s %9s" % (
            name, c["samples_per_s"], t["samples_per_s"],
            c["samples_per_s"] / t["samples_per_s"],
            "%.0f" % b["samples_per_s"] if b else "-",
            "%.2fx" % (b["samples_per_s"] / c["samples_per_s"]) if b
            else "-"))
        sys.stdout.flush()
    print("load average %.1f at the end; every column is the median step "
          "after 5 warm-up steps" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
