# SPDX-License-Identifier: Apache-2.0
"""LoRA adapters (docs/lora.md): what adapters cost a batch.

Serves the fixtures' MLP and transformer (and, with --write, an
MNIST-sized MLP 784-512-256-10 exported from PyTorch here: the size the
issue's targets name; the fixture MLP is so small that an r = 16 update
is 43% of its multiply-adds) three ways from one daemon:
  <m>_plain   no adapters/ folder: the model as before (fully fused)
  <m>         an adapters/ folder with 8 adapters, r = 16, on every
              Gemm/MatMul site
and measures the executor's compute time per batch
(slimserve_compute_duration_seconds: gather, plan, run, split; no HTTP,
no JSON) for:
  batch 64 = 8 concurrent requests of 8 rows: plain; tapped model without
             adapters; each request with another of the 8 adapters
  batch 1:   plain; one adapter
Cases alternate round by round (R rounds of N batches each) so load
drifts hit all alike; per case the median over rounds of the mean compute
per batch is printed, with ratios to plain and the load average.

    /usr/bin/python3 bench/lora.py --build BUILD [--rounds 7 --batches 40]

The same without HTTP, in one process (quieter on a loaded machine):

    /usr/bin/python3 bench/lora.py --write /tmp/lora-repo
    BUILD/bench/lora_bench /tmp/lora-repo/mlp 3000
    BUILD/bench/lora_bench /tmp/lora-repo/tf 300
    BUILD/bench/lora_bench /tmp/lora-repo/mnist 1000
    BUILD/bench/lora_bench /tmp/lora-repo/encoder 100
    BUILD/bench/lora_bench /tmp/lora-repo/mnist100 2000 cache 15

--write also writes the encoder (d_model 256, 4 heads, FFN 1024, 2
layers, 32 tokens: write_encoder says why) and prints what 100 adapters
r = 8 cost on the MNIST-sized MLP against the model when all are
resident (issue 14's memory target is met with a residency budget:
mnist100 holds those 100 adapters for lora_bench's "cache" mode, which
prints the memory they hold under adapter_resident_bytes and what a miss
costs against a hit; docs/lora.md).
"""

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


def safetensors_bytes(tensors):
    hdr, data = {}, b""
    for name, a in tensors:
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        hdr[name] = {"dtype": "F32", "shape": list(a.shape),
                     "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write_adapters(model_dir, sites, n, r, rng):
    for i in range(n):
        d = os.path.join(model_dir, "adapters", "a%d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"r": r, "lora_alpha": 2 * r, "bias": "none",
                       "target_modules": sorted(sites)}, f)
        ts = []
        for m, (fin, fout) in sorted(sites.items()):
            ts.append(("base_model.model.%s.lora_A.weight" % m,
                       rng.standard_normal((r, fin)) * 0.1))
            ts.append(("base_model.model.%s.lora_B.weight" % m,
                       rng.standard_normal((fout, r)) * 0.1))
        with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
            f.write(safetensors_bytes(ts))


def write_mnist_mlp(repo, rng):
    """An MNIST-sized MLP (784-512-256-10, GELU, random weights: only the
    timing matters) exported as torch.onnx.export writes nn.Linear
    (Gemm, fc1.weight...), with 8 adapters r = 16 on its three sites."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class MnistMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 512)
            self.fc2 = nn.Linear(512, 256)
            self.fc3 = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))

    torch.manual_seed(0)
    d = os.path.join(repo, "mnist")
    os.makedirs(os.path.join(d, "1"))
    torch.onnx.export(MnistMLP().eval(), (torch.zeros(1, 784),),
                      os.path.join(d, "1", "model.onnx"), opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"},
                                    "logits": {0: "batch"}})
    sites = {"fc1": (784, 512), "fc2": (512, 256), "fc3": (256, 10)}
    write_adapters(d, sites, 8, 16, rng)
    # issue 14's memory case: 100 adapters r = 8 on every layer, served
    # with a residency budget (lora_bench DIR/mnist100 RUNS cache)
    d100 = os.path.join(repo, "mnist100")
    os.makedirs(os.path.join(d100, "1"))
    shutil.copy(os.path.join(d, "1", "model.onnx"),
                os.path.join(d100, "1", "model.onnx"))
    write_adapters(d100, sites, 100, 8, rng)


def write_encoder(repo, rng):
    """A transformer encoder of a realistic size for LoRA: 2 pre-norm
    layers of BERT-mini's width (d_model 256, 4 heads, FFN 1024; BERT-mini
    has 4 such layers), 32 tokens of a 1,000-word vocabulary, mean-pooled
    into a 10-way head: 1.6 M weights (6.4 MB), the fixture encoder's
    layers written out the way most exported encoders are
    (tests/fixtures/models.py: Linear qkv/out/ff1/ff2, MatMul attention).
    The fixture transformer (d 32, 80 KB) is so small that one r = 16
    adapter is 64% of it, no fair case for "a transformer encoder".
    8 adapters r = 16 on its nine sites."""
    import torch
    import torch.nn as nn
    sys.path.insert(0, os.path.join(TOP, "tests", "fixtures"))
    import models

    d, heads, ff, layers, seq, vocab = 256, 4, 1024, 2, 32, 1000

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
            self.layers = nn.ModuleList(
                [models.EncoderLayer(d, heads, ff) for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, 10)

        def forward(self, ids):
            x = self.tok(ids) + self.pos
            for layer in self.layers:
                x = layer(x)
            return self.head(self.ln(x).mean(dim=1))

    torch.manual_seed(0)
    path = os.path.join(repo, "encoder")
    os.makedirs(os.path.join(path, "1"))
    torch.onnx.export(Encoder().eval(),
                      (torch.zeros(1, seq, dtype=torch.int64),),
                      os.path.join(path, "1", "model.onnx"),
                      opset_version=17, input_names=["input_ids"],
                      output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch"},
                                    "logits": {0: "batch"}})
    sites = {"head": (d, 10)}
    for i in range(layers):
        sites["layers.%d.attn.qkv" % i] = (d, 3 * d)
        sites["layers.%d.attn.out" % i] = (d, d)
        sites["layers.%d.ff1" % i] = (d, ff)
        sites["layers.%d.ff2" % i] = (ff, d)
    write_adapters(path, sites, 8, 16, rng)


def memory_table():
    """Issue 14's memory target (100 adapters r = 8 on the MNIST-sized MLP
    <= 15% of the base model), in bytes: f32 as slimserve holds them
    (A [r, in] and B [out, r] per module, what PEFT stores), against the
    base's weights and biases."""
    layers = [("fc1", 784, 512), ("fc2", 512, 256), ("fc3", 256, 10)]
    base = 4 * sum(i * o + o for _, i, o in layers)
    print("# memory, MNIST-sized MLP 784-512-256-10: base %d bytes "
          "(%d parameters)" % (base, base // 4))
    for r, mods in ((8, ("fc1", "fc2", "fc3")), (8, ("fc3",)),
                    (1, ("fc1", "fc2", "fc3"))):
        one = 4 * sum(r * (i + o) for m, i, o in layers if m in mods)
        print("#   r = %d on %-13s one adapter %7d bytes (%.2f%%), 100 "
              "adapters %9d bytes = %.1f%% of the base (target 15%%)"
              % (r, "+".join(mods), one, 100.0 * one / base, 100 * one,
                 100.0 * 100 * one / base))
    print("#   100 adapters within 15%% leave %d bytes (%d floats) each: "
          "less than r = 8 on fc3 alone needs, so all resident cannot "
          "meet it; a residency budget does (lora_bench DIR/mnist100 RUNS "
          "cache)" % (base * 15 // 10000, base * 15 // 40000))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build")
    ap.add_argument("--write", metavar="DIR",
                    help="only write the repository into DIR (for "
                    "bench/lora_bench DIR/mlp and DIR/tf) and exit")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    if not args.build and not args.write:
        ap.error("--build or --write is needed")
    os.environ["top_builddir"] = os.path.abspath(args.build or ".")
    sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
    from daemon import Daemon
    import kserve
    sys.path.insert(0, HERE)
    from pool import cpu_line

    rng = np.random.default_rng(1)
    tmp = tempfile.TemporaryDirectory(prefix="ss-bench-lora-")
    repo = args.write or os.path.join(tmp.name, "models")
    fx = os.path.join(TOP, "tests", "fixtures")
    sites = {
        "mlp": {"fc1": (64, 128), "fc2": (128, 64), "fc3": (64, 10)},
        "tf": dict([("layers.%d.attn.qkv" % i, (32, 96)) for i in (0, 1)] +
                   [("layers.%d.attn.out" % i, (32, 32)) for i in (0, 1)] +
                   [("layers.%d.ff1" % i, (32, 64)) for i in (0, 1)] +
                   [("layers.%d.ff2" % i, (64, 32)) for i in (0, 1)] +
                   [("head", (32, 10))]),
    }
    src = {"mlp": "mlp_op17", "tf": "transformer_op17"}
    for m in ("mlp", "tf"):
        for name in (m, m + "_plain"):
            d = os.path.join(repo, name)
            os.makedirs(os.path.join(d, "1"))
            shutil.copy(os.path.join(fx, src[m], "model.onnx"),
                        os.path.join(d, "1", "model.onnx"))
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"max_batch_size": 64,
                           "max_queue_delay_us": 50000,
                           "warmup": "all",
                           "preferred_batch_sizes": [64]}, f)
        write_adapters(os.path.join(repo, m), sites[m], 8, 16, rng)
    if args.write:
        write_mnist_mlp(repo, rng)
        write_encoder(repo, rng)
        memory_table()
        print(repo)
        return

    def body(m, rows, adapter):
        if m == "mlp":
            x = {"input": (rng.integers(0, 17, (rows, 64)) / 16)
                 .astype(np.float32)}
        else:
            x = {"input_ids": rng.integers(0, 17, (rows, 64))
                 .astype(np.int64)}
        b, h = kserve.binary_request(x)
        if adapter is not None:
            hl = int(h["Inference-Header-Content-Length"])
            head = json.loads(b[:hl])
            head["parameters"]["adapter"] = adapter
            hb = json.dumps(head).encode()
            b = hb + b[hl:]
            h["Inference-Header-Content-Length"] = str(len(hb))
        return b, h

    with Daemon(["--threads=1", "--admin-insecure"], repository=repo) as d:
        def compute(model):
            s = c = 0.0
            for (n, lv), v in d.metrics().items():
                if ("model", model) not in lv:
                    continue
                if n == "slimserve_compute_duration_seconds_sum":
                    s += v
                elif n == "slimserve_compute_duration_seconds_count":
                    c += v
            return s, c

        def one_batch(model, reqs):
            out = [None] * len(reqs)

            def go(i):
                out[i] = d.post("/v2/models/%s/infer" % model,
                                body=reqs[i][0], headers=reqs[i][1])[0]
            ts = [threading.Thread(target=go, args=(i,))
                  for i in range(len(reqs))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert all(s == 200 for s in out), out

        cases = []
        for m in ("mlp", "tf"):
            cases += [
                (m, "batch 64, no adapters folder", m + "_plain",
                 [body(m, 8, None) for _ in range(8)]),
                (m, "batch 64, tapped, no adapter", m,
                 [body(m, 8, None) for _ in range(8)]),
                (m, "batch 64 over 8 adapters r=16", m,
                 [body(m, 8, "a%d" % i) for i in range(8)]),
                (m, "batch 1, no adapters folder", m + "_plain",
                 [body(m, 1, None)]),
                (m, "batch 1, one adapter r=16", m, [body(m, 1, "a3")]),
            ]
        res = {i: [] for i in range(len(cases))}
        for _ in range(3):      # warm every plan and connection path
            for c in cases:
                one_batch(c[2], c[3])
        for _ in range(args.rounds):
            for i, c in enumerate(cases):
                s0, n0 = compute(c[2])
                for _ in range(args.batches):
                    one_batch(c[2], c[3])
                s1, n1 = compute(c[2])
                res[i].append((s1 - s0) / max(1, n1 - n0))
        print("# " + cpu_line())
        memory_table()
        print("# load average: %s" % open("/proc/loadavg").read().split()[:3])
        print("%-4s %-32s %12s %8s" % ("", "case", "us/batch", "ratio"))
        base = {}
        for i, c in enumerate(cases):
            med = statistics.median(res[i]) * 1e6
            key = (c[0], c[1].split(" ")[1].rstrip(","))
            if "no adapters folder" in c[1]:
                base[key] = med
            print("%-4s %-32s %12.1f %8.2f" % (c[0], c[1], med,
                                               med / base[key]))
    tmp.cleanup()


main()
