# SPDX-License-Identifier: Apache-2.0
"""The response-size limit (max_response_bytes) against models whose
output size a client chooses: PyTorch exports of torch.arange(0, n)
(Range), x.expand(s0, s1) (Expand, its shape through ConstantOfShape),
torch.ones(s0, s1) (ConstantOfShape), and an outer product whose size
follows the input's width (batched).  Before the limit, Range(0, 1e8)
answered 889 MB of JSON in 70 s and the daemon held gigabytes.

Checked: a request over the limit gets 413 naming the output and its
size, quickly (the engine stops at shape inference, before folding or
running anything); a request under it gets numpy's answer; in one batch
an item over the limit fails alone while the others are served; a JSON
answer is counted at its longest text (binary then fits); a model's
config.json can raise it; the daemon's peak RSS (VmHWM) stays far below
what the refused outputs would take."""

import json
import os
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, proc_status  # noqa: E402
import kserve  # noqa: E402

try:
    import torch
except ImportError as e:     # pragma: no cover
    tap.skip_all("needs python3-torch: %s" % e)

LIMIT = 1 << 20         # --max-response-bytes of the first daemon


class Rng(torch.nn.Module):
    def forward(self, n):
        return torch.arange(0, n, dtype=torch.int64) * 2


class Exp(torch.nn.Module):
    def forward(self, x, shape):
        return x.expand(shape[0], shape[1]) + 1.0


class Ones(torch.nn.Module):
    def forward(self, shape):
        return torch.ones(shape[0], shape[1])


class Outer(torch.nn.Module):
    def forward(self, x):
        return x.unsqueeze(2) * x.unsqueeze(1)


def export(repo, name, mod, args, ins, dyn, config=None):
    d = os.path.join(repo, name, "1")
    os.makedirs(d)
    warnings.filterwarnings("ignore")
    torch.onnx.export(mod, args, os.path.join(d, "model.onnx"),
                      input_names=ins, output_names=["y"],
                      opset_version=13, dynamic_axes=dyn)
    if config is not None:
        with open(os.path.join(repo, name, "config.json"), "w") as f:
            json.dump(config, f)


def make_repo(repo):
    export(repo, "range", torch.jit.script(Rng()), (torch.tensor(5),),
           ["n"], {"y": {0: "k"}})
    export(repo, "expand", torch.jit.script(Exp()),
           (torch.ones(1, 3), torch.tensor([2, 3])), ["x", "shape"],
           {"x": {1: "d"}, "y": {0: "a", 1: "b"}})
    export(repo, "ones", torch.jit.script(Ones()), (torch.tensor([2, 3]),),
           ["shape"], {"y": {0: "a", 1: "b"}})
    # The same Range model, with its own (larger) limit in config.json.
    export(repo, "range_big", torch.jit.script(Rng()), (torch.tensor(5),),
           ["n"], {"y": {0: "k"}}, {"max_response_bytes": 8 << 20})
    # Batched: requests of one width share a batch (200 ms to gather).
    export(repo, "outer", Outer(), (torch.ones(2, 3),), ["x"],
           {"x": {0: "b", 1: "d"}, "y": {0: "b", 1: "d", 2: "d"}},
           {"max_batch_size": 8, "max_queue_delay_us": 200000})


def infer(d, model, inputs, binary=False):
    if binary:
        body, hdrs = kserve.binary_request(inputs)
    else:
        body, hdrs = kserve.json_request(inputs), None
    t0 = time.monotonic()
    st, hd, data = d.post("/v2/models/%s/infer" % model, body, headers=hdrs,
                          timeout=120)
    dt = time.monotonic() - t0
    if st != 200:
        return st, data, dt
    return st, kserve.parse_response(data, hd)[1]["y"], dt


def refused(st, data, dt, what, *words):
    body = data.decode(errors="replace") if isinstance(data, bytes) else ""
    tap.ok(st == 413 and all(w in body for w in words) and dt < 10,
           "%s: 413 naming %s in %.2f s" % (what, ", ".join(words), dt),
           "%s %s" % (st, body[:400]))


def served(st, got, want, what):
    tap.ok(st == 200 and isinstance(got, np.ndarray)
           and got.shape == want.shape and np.array_equal(got, want),
           "%s: 200 and numpy's answer" % what,
           "%s %s" % (st, got[:300] if isinstance(got, bytes) else ""))


def limited(d):
    i64 = np.int64
    # Range: 2 * arange(n), INT64.  1 MiB of binary is 131072 elements;
    # JSON counts 21 bytes each (20 digits and a comma).
    st, y, dt = infer(d, "range", {"n": np.array(1000, i64)})
    served(st, y, 2 * np.arange(1000, dtype=i64), "Range(0, 1000) as JSON")
    st, y, dt = infer(d, "range", {"n": np.array(100000, i64)}, True)
    served(st, y, 2 * np.arange(100000, dtype=i64),
           "Range(0, 100000) binary (800 KB)")
    st, y, dt = infer(d, "range", {"n": np.array(100000, i64)})
    refused(st, y, dt, "Range(0, 100000) as JSON (up to 2.1 MB of text)",
            "output 'y'", "100000 INT64 elements", str(LIMIT))
    st, y, dt = infer(d, "range", {"n": np.array(10 ** 8, i64)}, True)
    refused(st, y, dt, "Range(0, 1e8) (800 MB, folded at compile)",
            "(Range)", "800000000 bytes", str(LIMIT))
    st, y, dt = infer(d, "range", {"n": np.array(2 ** 62, i64)}, True)
    tap.ok(st in (400, 413), "Range(0, 2^62): %d in %.2f s" % (st, dt),
           y[:300] if isinstance(y, bytes) else "")
    # Expand of a [1, 3] row to a client's shape; its shape goes through
    # ConstantOfShape and Where in the export.
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    st, y, dt = infer(d, "expand", {"x": x, "shape": np.array([5, 3], i64)})
    served(st, y, np.broadcast_to(x, (5, 3)) + 1, "Expand to [5, 3]")
    st, y, dt = infer(d, "expand",
                      {"x": x, "shape": np.array([10 ** 8, 3], i64)}, True)
    refused(st, y, dt, "Expand to [1e8, 3] (1.2 GB)", "output 'y'",
            "1200000000 bytes")
    # ConstantOfShape: torch.ones(s0, s1).
    st, y, dt = infer(d, "ones", {"shape": np.array([4, 7], i64)})
    served(st, y, np.ones((4, 7), np.float32), "ones(4, 7)")
    st, y, dt = infer(d, "ones", {"shape": np.array([30000, 30000], i64)},
                      True)
    refused(st, y, dt, "ones(30000, 30000) (3.6 GB)", "output 'y'",
            "3600000000 bytes")
    # The model's own limit (8 MiB) over the daemon's.
    st, y, dt = infer(d, "range_big", {"n": np.array(500000, i64)}, True)
    served(st, y, 2 * np.arange(500000, dtype=i64),
           "range_big (config.json 8 MiB): Range(0, 500000) binary")
    st, y, dt = infer(d, "range_big", {"n": np.array(2000000, i64)}, True)
    refused(st, y, dt, "range_big: Range(0, 2e6) (16 MB)", str(8 << 20))


def batched(d):
    """Outer products of width 400: 640 KB a row in binary.  One row fits
    1 MiB, two rows do not; JSON of one row (up to 2.7 MB) does not."""
    results = []
    lock = threading.Lock()

    def client(k):
        rows = 2 if k % 3 == 0 else 1
        x = np.linspace(-1, 1, rows * 400, dtype=np.float32).reshape(
            rows, 400) * (k + 1)
        st, y, dt = infer(d, "outer", {"x": x}, True)
        want = x[:, :, None] * x[:, None, :]
        with lock:
            results.append((k, rows, st, y, want))

    ths = [threading.Thread(target=client, args=(k,)) for k in range(9)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    ok1 = [r for r in results if r[1] == 1]
    ok2 = [r for r in results if r[1] == 2]
    tap.ok(len(ok1) == 6 and all(r[2] == 200 and np.array_equal(r[3], r[4])
                                 for r in ok1),
           "batched: 6 one-row requests served right next to over-limit "
           "ones", [(r[0], r[2]) for r in ok1])
    tap.ok(len(ok2) == 3 and all(r[2] == 413 and b"output 'y'" in r[3]
                                 for r in ok2),
           "batched: 3 two-row requests (1.28 MB) get 413 alone",
           [(r[0], r[2], r[3][:200]) for r in ok2])
    batches = d.metric("slimserve_batch_size_count", model="outer")
    tap.ok(batches is not None,
           "batch metrics present (%s batches formed)" % batches)
    x = np.full((1, 400), 3, np.float32)
    st, y, dt = infer(d, "outer", {"x": x})
    refused(st, y, dt, "batched: one row as JSON (up to 2.7 MB of text)",
            "FP32 elements as JSON")
    x = np.full((1, 8000), 3, np.float32)
    st, y, dt = infer(d, "outer", {"x": x}, True)
    refused(st, y, dt, "batched: width 8000 (256 MB a row)", "per row")


def main():
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    tmp = tempfile.mkdtemp(prefix="ss-resp-limit.")
    make_repo(tmp)
    with Daemon(["--admin-insecure", "--max-response-bytes=%d" % LIMIT],
                repository=tmp) as d:
        limited(d)
        batched(d)
        hwm = proc_status(d.proc.pid, "VmHWM")
        tap.ok(0 < hwm < 200 << 10,
               "peak RSS %d MB, under 200 MB (the refused outputs: 0.8 to "
               "3.6 GB)" % (hwm >> 10))
        tap.eq(d.stop(), 0, "clean exit")
    # The default: 4 x max_body_bytes (256 MiB).  Range(0, 1e8) is 800 MB.
    with Daemon(["--admin-insecure"], repository=tmp) as d:
        st, y, dt = infer(d, "range", {"n": np.array(10 ** 8, np.int64)})
        refused(st, y, dt, "default limit: Range(0, 1e8)", str(256 << 20))
        st, y, dt = infer(d, "range", {"n": np.array(10 ** 6, np.int64)},
                          True)
        served(st, y, 2 * np.arange(10 ** 6, dtype=np.int64),
               "default limit: Range(0, 1e6) binary (8 MB)")
        tap.eq(d.stop(), 0, "clean exit")
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
