#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A model whose rows mix is not batched across requests (request
isolation; docs/architecture.md, "Request path").

PyTorch exports of models that compute a row from other rows -- x -
x.mean(0), x @ x.T, x.reshape(1, -1), x * x.size(0), softmax over dim 0,
x - x[0] -- are served under a config that would batch them
(max_batch_size 8, 50 ms delay).  The daemon finds the node that mixes
(engine/plan/plan_rows.c) and serves such a model one request at a time:
checked per model, the log notice names the node's op, the config
response has max_batch_size 0 and says why ("batching_disabled"), and 8
concurrent one-row requests each get exactly their own row's answer
(PyTorch on that row alone, within 1e-5 of its largest |y|), where the
8 rows run together would have given another (checked on PyTorch too,
so the test can fail).  A row-independent encoder (attention with
view(B, S, H, D) from x.size(0), and torch's nn.MultiheadAttention on
(S, B, E)) and a CNN exported with dynamic H and W stay batched:
max_batch_size 8 in their config, 16 concurrent one-row requests in
fewer than 16 runs (the batch-size histogram), each within 1e-4 of its
own row's answer."""

import os
import sys
import tempfile
import threading
import warnings

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
N = 8


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# name -> (function of x [n, 4], the op the daemon must name)
MIXING = {
    "center": (lambda x: x - x.mean(0), "ReduceMean"),
    "gram": (lambda x: x @ x.T, "MatMul"),
    "flat": (lambda x: x.reshape(1, -1) * 2.0, "Reshape"),
    "bysize": (lambda x: x * x.size(0), "Mul"),
    "softmax0": (lambda x: torch.softmax(x, 0), "Softmax"),
    "minus_first": (lambda x: x - x[0], "Gather"),
}


class Encoder(torch.nn.Module):
    """Row-independent: every op keeps the batch's rows apart."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(27)
        self.qkv = torch.nn.Linear(8, 24)
        self.out = torch.nn.Linear(8, 8)
        self.ln = torch.nn.LayerNorm(8)
        self.mha = torch.nn.MultiheadAttention(8, 2)

    def forward(self, x):
        b, s, e = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(x).view(b, s, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        h = self.ln(x + self.out(a.transpose(1, 2).reshape(b, s, e)))
        t = h.transpose(0, 1)
        m, _ = self.mha(t, t, t, need_weights=False)
        return h + m.transpose(0, 1)


class DynCNN(torch.nn.Module):
    """Row-independent, exported with dynamic H and W (the analysis
    compiles it at a size its 7x7 stride-2 conv and pool take)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(28)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 7, stride=2, padding=3),
            torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.MaxPool2d(3, stride=2, padding=1),
            torch.nn.Conv2d(4, 4, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


def export(model, shape, path, axes=None):
    warnings.filterwarnings("ignore")
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.ones(*shape),), path,
                          input_names=["x"], output_names=["y"],
                          opset_version=14,
                          dynamic_axes={"x": axes or {0: "n"}})


def body(x):
    return {"inputs": [{"name": "x", "shape": list(x.shape),
                        "datatype": "FP32", "data": x.ravel().tolist()}]}


def ref(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def send_all(d, name, xs):
    """Each row of xs as its own request, all at once; the answers."""
    got = [None] * len(xs)

    def send(i):
        st, _, data = d.post("/v2/models/%s/infer" % name, body(xs[i]),
                             timeout=60)
        js = json_body(data) or {}
        if st == 200:
            o = js["outputs"][0]
            got[i] = np.array(o["data"], np.float32).reshape(o["shape"])

    ts = [threading.Thread(target=send, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    return got


def close(got, want, rtol):
    return (got is not None and got.shape == want.shape and
            np.max(np.abs(got - want)) <= rtol * max(np.max(np.abs(want)),
                                                     1e-3))


def main():
    tmp = tempfile.TemporaryDirectory(prefix="ss-rows-")
    root = os.path.join(tmp.name, "models")
    rng = np.random.default_rng(27)
    for name, (fn, _) in MIXING.items():
        path = os.path.join(tmp.name, name + ".onnx")
        export(Fn(fn), (2, 4), path)
        repolib.with_model(root, name, path, config=BATCHING)
    enc = Encoder()
    export(enc, (2, 5, 8), os.path.join(tmp.name, "enc.onnx"))
    repolib.with_model(root, "enc", os.path.join(tmp.name, "enc.onnx"),
                       config=BATCHING)
    cnn = DynCNN()
    export(cnn, (2, 3, 32, 32), os.path.join(tmp.name, "cnn.onnx"),
           {0: "n", 2: "h", 3: "w"})
    repolib.with_model(root, "cnn", os.path.join(tmp.name, "cnn.onnx"),
                       config=BATCHING)

    with Daemon(["--admin-insecure"], repository=root) as d:
        for name, (fn, op) in MIXING.items():
            model = Fn(fn)
            xs = [rng.standard_normal((1, 4)).astype(np.float32) + i
                  for i in range(N)]
            alone = [ref(model, x) for x in xs]
            together = ref(model, np.concatenate(xs))
            tap.ok(not all(close(together[i:i + 1], alone[i], 1e-5)
                           if together.shape[0] == N else False
                           for i in range(N)),
                   "%s: in PyTorch, the %d rows run together answer "
                   "otherwise than each alone" % (name, N))
            tap.ok(d.wait_log(r"model=%s runs each request on its own .*"
                              r"%s node" % (name, op), timeout=30),
                   "%s: not batched, and the log names its %s node"
                   % (name, op))
            st, _, data = d.get("/v2/models/%s/config" % name)
            cfg = json_body(data) or {}
            tap.ok(st == 200 and cfg.get("max_batch_size") == 0 and
                   op in cfg.get("batching_disabled", ""),
                   "%s: config says max_batch_size 0 and why" % name,
                   cfg.get("batching_disabled"))
            got = send_all(d, name, xs)
            bad = [i for i in range(N) if not close(got[i], alone[i], 1e-5)]
            tap.ok(not bad, "%s: %d concurrent one-row requests each get "
                   "their own row's answer" % (name, N),
                   "wrong: %s" % bad[:4])

        for name, model, shape in (("enc", enc, (1, 5, 8)),
                                   ("cnn", cnn, (1, 3, 40, 24))):
            st, _, data = d.get("/v2/models/%s/config" % name)
            cfg = json_body(data) or {}
            tap.ok(st == 200 and cfg.get("max_batch_size") == 8 and
                   "batching_disabled" not in cfg,
                   "%s: batched (max_batch_size 8)" % name, cfg)
            xs = [rng.standard_normal(shape).astype(np.float32)
                  for _ in range(16)]
            before = d.metric("slimserve_batch_size_count", model=name)
            rows_before = d.metric("slimserve_batch_size_sum", model=name)
            got = send_all(d, name, xs)
            runs = d.metric("slimserve_batch_size_count", model=name) - before
            rows = (d.metric("slimserve_batch_size_sum", model=name) -
                    rows_before)
            bad = [i for i in range(16)
                   if not close(got[i], ref(model, xs[i]), 1e-4)]
            tap.ok(not bad, "%s: 16 concurrent one-row requests each get "
                   "their own row's answer" % name, "wrong: %s" % bad[:4])
            tap.ok(rows == 16 and 0 < runs < 16, "%s: the 16 rows ran in "
                   "%d runs (batched)" % (name, runs))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
