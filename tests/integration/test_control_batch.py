#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A model with control flow is not batched across requests (request
isolation; docs/architecture.md, "Request path").

PyTorch's scripted `if x.sum() > 0: 2x else: -x` exports as an If whose
condition reads every row of the run: batched with another client's
rows, a request would take the branch their sum decides.  The daemon
runs such a model one request at a time (max_batch_size 0, with a notice
naming the node), so each answer is its own branch's, however the
requests arrive.  Checked: 24 concurrent one-row requests of both signs
under a config that would batch them (max_batch_size 8, 50 ms delay)
each get their own branch; a request of two rows is one run (the sum
over both rows decides, as in PyTorch); the fixture MLP beside it still
batches (its batch-size histogram sees runs of more than one row)."""

import os
import sys
import tempfile
import threading

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import repo as repolib  # noqa: E402

try:
    import torch
except ImportError as e:     # pragma: no cover
    tap.skip_all("needs python3-torch: %s" % e)

BATCHING = {"max_batch_size": 8, "max_queue_delay_us": 50000}


def export_branch(path):
    class Branch(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                y = x * 2.0
            else:
                y = -x
            return y

    import warnings
    warnings.filterwarnings("ignore")
    torch.onnx.export(torch.jit.script(Branch()), (torch.ones(1, 4),), path,
                      input_names=["x"], output_names=["y"],
                      opset_version=13,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})


def body(name, x):
    return {"inputs": [{"name": name, "shape": list(x.shape),
                        "datatype": "FP32", "data": x.ravel().tolist()}]}


def want(x):
    return x * 2.0 if x.sum() > 0 else -x


def main():
    tmp = tempfile.TemporaryDirectory(prefix="ss-ctrl-batch-")
    root = os.path.join(tmp.name, "models")
    onnx = os.path.join(tmp.name, "branch.onnx")
    export_branch(onnx)
    repolib.with_model(root, "branch", onnx, config=BATCHING)
    repolib.with_model(root, "mlp", config=BATCHING)
    rng = np.random.default_rng(26)
    # Rows of both signs whose sums are far from 0.
    xs = [np.abs(rng.standard_normal((1, 4))).astype(np.float32) + 0.5
          for _ in range(24)]
    for i in range(0, 24, 2):
        xs[i] = -xs[i] * (1 + i)
    with Daemon(["--admin-insecure"], repository=root) as d:
        tap.ok(d.wait_log(r"model=branch runs each request on its own .*If "
                          r"node", timeout=30),
               "the If model is not batched, and the log says why")
        got = [None] * len(xs)

        def send(i):
            st, _, data = d.post("/v2/models/branch/infer",
                                 body("x", xs[i]), timeout=30)
            js = json_body(data) or {}
            if st == 200:
                got[i] = np.array(js["outputs"][0]["data"],
                                  np.float32).reshape(1, 4)

        ts = [threading.Thread(target=send, args=(i,)) for i in
              range(len(xs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        bad = [i for i in range(len(xs)) if got[i] is None or
               not np.allclose(got[i], want(xs[i]), rtol=1e-6, atol=1e-6)]
        tap.ok(not bad, "24 concurrent one-row requests of both signs: each "
               "gets its own branch", "wrong: %s" % bad[:6])
        two = np.concatenate([xs[0], xs[1]])       # negative sum dominates
        st, _, data = d.post("/v2/models/branch/infer", body("x", two))
        js = json_body(data) or {}
        tap.ok(st == 200 and np.allclose(
            np.array(js["outputs"][0]["data"], np.float32).reshape(2, 4),
            want(two), rtol=1e-6), "a two-row request is one run: the sum "
            "over both rows decides, as in PyTorch", js)

        x = rng.standard_normal((1, 64)).astype(np.float32)
        before = d.metric("slimserve_batch_size_count", model="mlp")
        rows_before = d.metric("slimserve_batch_size_sum", model="mlp")
        ts = [threading.Thread(target=d.post, args=(
            "/v2/models/mlp/infer", body("input", x))) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        runs = d.metric("slimserve_batch_size_count", model="mlp") - before
        rows = d.metric("slimserve_batch_size_sum", model="mlp") - rows_before
        tap.ok(rows == 16 and 0 < runs < 16, "the MLP beside it still batches "
               "(16 rows in %d runs)" % runs)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
