#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch-eager peer for bench/engine.py (a separate process so that
OPENBLAS_CORETYPE, which OpenBLAS reads once at load, is set before torch
is imported; bench/engine.py sets it).

    engine_torch.py JOB.json
JOB: {"fixtures": dir, "model": "mlp"|"cnn"|"transformer", "threads": 2,
      "runs": [{"batch": b, "input": x.npy, "repeat": n, "warmup": w,
                "output": out.npy}]}
Prints one JSON line: {"<batch>": [latency_ms, ...], ...}.
"""

import json
import os
import sys
import time

import numpy as np
import torch


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(job.get("threads", 2))
    sys.path.insert(0, job["fixtures"])
    import models
    cls = models.MODELS[job["model"]][0]
    model = cls()
    state = torch.load(os.path.join(job["fixtures"], "torch",
                                    job["model"] + ".pt"))
    model.load_state_dict(state)
    model.eval()
    result = {}
    with torch.inference_mode():
        for run in job["runs"]:
            x = torch.from_numpy(np.load(run["input"]))
            for _ in range(run.get("warmup", 0)):
                y = model(x)
            lat = []
            for _ in range(run["repeat"]):
                t0 = time.perf_counter()
                y = model(x)
                lat.append((time.perf_counter() - t0) * 1e3)
            np.save(run["output"], y.numpy())
            result[str(run["batch"])] = lat
    print(json.dumps(result))


if __name__ == "__main__":
    main()
