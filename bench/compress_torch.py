#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer for bench/compress.py: the fixture models in f32 and after
torch.quantization.quantize_dynamic (int8 weights for every nn.Linear,
activations quantized per batch at run time; convolutions, embeddings,
layer norms and attention matmuls stay f32 -- that is what dynamic
quantization covers).  A separate process so that OPENBLAS_CORETYPE, which
OpenBLAS reads once at load, is set before torch is imported
(bench/compress.py sets it).

    compress_torch.py JOB.json
JOB: {"fixtures": dir, "models": ["mlp", ...], "threads": 1,
      "repeat": n, "warmup": w, "rounds": r, "batches": [1, 32],
      "wide": {"weights": w.npz, "data": x.npz}}   (optional)
Prints one JSON line: {model: {"f32"|"int8": {"accuracy": a,
"latency_ms": {batch: median}}}, "quantized_engine": "fbgemm"}.  Latency is the median over the runs of
every round (rounds interleave f32 and int8 so drift hits both alike).
"""

import json
import os
import statistics
import sys
import time

import numpy as np
import torch


def load(fixtures, name):
    import models
    model = models.MODELS[name][0]()
    model.load_state_dict(torch.load(os.path.join(fixtures, "torch",
                                                  name + ".pt")))
    return model.eval()


def wide(path):
    """The wide MLP of bench/compress.py: w0, b0, w1, ... in an npz."""
    with np.load(path) as z:
        n = len(z.files) // 2
        layers = []
        for k in range(n):
            w = torch.from_numpy(z["w%d" % k])
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            lin.weight.data.copy_(w)
            lin.bias.data.copy_(torch.from_numpy(z["b%d" % k]))
            layers += [lin] + ([torch.nn.ReLU()] if k < n - 1 else [])
    return torch.nn.Sequential(*layers).eval()


def timed(model, x, repeat, warmup):
    for _ in range(warmup):
        model(x)
    lat = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model(x)
        lat.append((time.perf_counter() - t0) * 1e3)
    return lat


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    sys.path.insert(0, job["fixtures"])
    cases = [(name, lambda name=name: load(job["fixtures"], name),
              os.path.join(job["fixtures"], "digits",
                           name + "_heldout.npz")) for name in job["models"]]
    if job.get("wide"):
        cases.append(("wide", lambda: wide(job["wide"]["weights"]),
                      job["wide"]["data"]))
    out = {"quantized_engine": torch.backends.quantized.engine}
    with torch.inference_mode():
        for name, make, data in cases:
            f32 = make()
            int8 = torch.quantization.quantize_dynamic(
                make(), {torch.nn.Linear}, dtype=torch.qint8)
            with np.load(data) as z:
                labels = z["labels"]
                x = torch.from_numpy(z[[k for k in z.files
                                        if k != "labels"][0]])
            variants = {"f32": f32, "int8": int8}
            res = {k: {"latency_ms": {}} for k in variants}
            for k, m in variants.items():
                pred = m(x).argmax(dim=1).numpy()
                res[k]["accuracy"] = float(np.mean(pred == labels))
            for b in job["batches"]:
                lat = {k: [] for k in variants}
                for _ in range(job["rounds"]):
                    for k, m in variants.items():
                        lat[k] += timed(m, x[:b], job["repeat"],
                                        job["warmup"])
                for k in variants:
                    res[k]["latency_ms"][str(b)] = statistics.median(lat[k])
            out[name] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
