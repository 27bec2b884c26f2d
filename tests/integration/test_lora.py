# SPDX-License-Identifier: Apache-2.0
"""LoRA adapters (issue 14, docs/lora.md): PEFT-layout adapters on a served
model, chosen per request with "parameters": {"adapter": name}, against
PyTorch with the adapter merged: W + (alpha / r) * B @ A.

The adapters are written here by hand, as PEFT lays them out
(adapter_config.json, adapter_model.safetensors built with struct and
json: /usr/bin/python3 may not have the safetensors package).  The
reference is the fixture's own PyTorch model (tests/fixtures/torch/*.pt,
the weights the ONNX files were exported from) with each targeted
nn.Linear's weight replaced by the merged one.

Tolerance: |served - torch| <= 1e-5 * max(1, max |torch logit|) for every
logit of a request (float32; the served update x A^T B^T is summed in
another order than PyTorch's merged W + s B A: errors of 1e-5 appear on
logits near 0 whose row holds logits of ~10)."""

import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "fixtures"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
import kserve  # noqa: E402

try:
    import torch
    import models
except ImportError as e:     # pragma: no cover
    tap.skip_all("needs python3-torch: %s" % e)

from paths import FIX  # noqa: E402
RTOL = 1e-5
# The fixtures' MLP at opset 17 and its LoRA sites (in, out): the other
# LoRA suites import these with the helpers below.
MLP17 = os.path.join(FIX, "mlp_op17", "model.onnx")
SHAPES = {"fc1": (64, 128), "fc2": (128, 64), "fc3": (64, 10)}


def safetensors_bytes(tensors, meta=None):
    """tensors: [(name, float32 ndarray)] -> the file's bytes."""
    hdr = {}
    if meta:
        hdr["__metadata__"] = meta
    data = b""
    for name, a in tensors:
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        hdr[name] = {"dtype": "F32", "shape": list(a.shape),
                     "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write_adapter(model_dir, name, r, alpha, mods, targets=None,
                  raw=None, config=None):
    """mods: {module: (A [r, in], B [out, r])}."""
    d = os.path.join(model_dir, "adapters", name)
    os.makedirs(d, exist_ok=True)
    cfg = {"r": r, "lora_alpha": alpha,
           "target_modules": targets or sorted(mods),
           "lora_dropout": 0.05, "fan_in_fan_out": False, "bias": "none",
           "peft_type": "LORA", "task_type": None}
    cfg.update(config or {})
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    tensors = []
    for m, (a, b) in sorted(mods.items()):
        tensors.append(("base_model.model.%s.lora_A.weight" % m, a))
        tensors.append(("base_model.model.%s.lora_B.weight" % m, b))
    with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
        f.write(raw if raw is not None
                else safetensors_bytes(tensors, {"format": "pt"}))


def rand_mods(rng, shapes, r, scale=0.3):
    """shapes: {module: (in, out)} -> {module: (A, B)}."""
    return {m: (rng.standard_normal((r, i)).astype(np.float32) * scale,
                rng.standard_normal((o, r)).astype(np.float32) * scale)
            for m, (i, o) in shapes.items()}


class Ref:
    """The fixture's PyTorch model, with adapters merged on demand."""

    def __init__(self, kind):
        cls = models.MODELS[kind][0]
        self.model = cls()
        self.base = torch.load(os.path.join(FIX, "torch", kind + ".pt"))
        self.model.load_state_dict(self.base)
        self.model.eval()
        self.adapters = {}

    def add(self, name, r, alpha, mods):
        self.adapters[name] = (alpha / r, mods)

    def run(self, x, adapter=None):
        sd = dict(self.base)
        if adapter is not None:
            s, mods = self.adapters[adapter]
            for m, (a, b) in mods.items():
                w = sd[m + ".weight"]
                sd[m + ".weight"] = w + s * (torch.from_numpy(b) @
                                             torch.from_numpy(a))
        self.model.load_state_dict(sd)
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


def close(got, want):
    """Normwise: every |error| within RTOL of the largest |logit| (at
    least 1): float32 rounding of sums whose terms reach ~100."""
    err = np.abs(got - want)
    bound = RTOL * max(1.0, float(np.abs(want).max()))
    return bool(np.all(err <= bound)), float(err.max()) if err.size else 0.0


def infer(d, model, x, in_name, adapter=None, binary=False):
    if binary:
        body, headers = kserve.binary_request({in_name: x})
        if adapter is not None:
            hl = int(headers["Inference-Header-Content-Length"])
            head = json.loads(body[:hl])
            head["parameters"]["adapter"] = adapter
            h = json.dumps(head).encode()
            body = h + body[hl:]
            headers["Inference-Header-Content-Length"] = str(len(h))
    else:
        req = json.loads(kserve.json_request({in_name: x}))
        if adapter is not None:
            req["parameters"] = {"adapter": adapter}
        body, headers = json.dumps(req).encode(), {
            "Content-Type": "application/json"}
    st, hd, data = d.post("/v2/models/%s/infer" % model, body=body,
                          headers=headers)
    if st != 200:
        return st, data
    return st, kserve.parse_response(data, hd)[1]["logits"]


def main():
    rng = np.random.default_rng(14)
    tmp = tempfile.TemporaryDirectory(prefix="ss-lora-")
    repo = os.path.join(tmp.name, "models")
    mlp_dir = os.path.join(repo, "mlp")
    tf_dir = os.path.join(repo, "tf")
    for d, src in ((mlp_dir, "mlp_op17"), (tf_dir, "transformer_op17")):
        os.makedirs(os.path.join(d, "1"))
        shutil.copy(os.path.join(FIX, src, "model.onnx"),
                    os.path.join(d, "1", "model.onnx"))
        # Batches form over 20 ms so concurrent requests share them.
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"max_batch_size": 64, "max_queue_delay_us": 20000}, f)

    mlp = Ref("mlp")
    shapes = {"fc1": (64, 128), "fc2": (128, 64), "fc3": (64, 10)}
    names = []
    for i in range(8):
        r = [4, 8, 16, 2][i % 4]
        alpha = [8, 16, 16, 1][i % 4]
        pick = [["fc1"], ["fc2", "fc3"], ["fc1", "fc2", "fc3"],
                ["fc1", "fc3"]][i % 4]
        mods = rand_mods(rng, {m: shapes[m] for m in pick}, r)
        write_adapter(mlp_dir, "a%d" % i, r, alpha, mods)
        mlp.add("a%d" % i, r, alpha, mods)
        names.append("a%d" % i)
    # PEFT's other spellings: a list of suffixes, rsLoRA.
    mods = rand_mods(rng, {"fc2": (128, 64)}, 8)
    write_adapter(mlp_dir, "rs", 8, 16, mods, config={"use_rslora": True})
    mlp.adapters["rs"] = (16 / np.sqrt(8), mods)
    # Mismatches, refused at load with the first mismatch named.
    write_adapter(mlp_dir, "badshape", 4, 8,
                  rand_mods(rng, {"fc1": (64, 127)}, 4))
    write_adapter(mlp_dir, "badmodule", 4, 8,
                  rand_mods(rng, {"fc9": (64, 128)}, 4))
    write_adapter(mlp_dir, "badrank", 4, 8,
                  rand_mods(rng, {"fc1": (64, 128)}, 5))
    write_adapter(mlp_dir, "badfile", 4, 8, {}, raw=b"\xff" * 8 + b"{}")
    # A FIFO as the config must not stall the loading thread.
    write_adapter(mlp_dir, "fifo", 4, 8,
                  rand_mods(rng, {"fc1": (64, 128)}, 4))
    fifo = os.path.join(mlp_dir, "adapters", "fifo", "adapter_config.json")
    os.unlink(fifo)
    os.mkfifo(fifo)
    write_adapter(mlp_dir, "untargeted", 4, 8,
                  rand_mods(rng, {"fc1": (64, 128)}, 4), targets=["fc2"])

    tf = Ref("transformer")
    tshapes = {"layers.0.attn.qkv": (32, 96), "layers.1.ff1": (32, 64),
               "layers.1.attn.out": (32, 32), "head": (32, 10)}
    tmods = rand_mods(rng, tshapes, 8, scale=0.2)
    write_adapter(tf_dir, "t1", 8, 16, tmods,
                  targets=["qkv", "ff1", "out", "head"])
    tf.add("t1", 8, 16, tmods)
    tmods2 = rand_mods(rng, {"layers.0.ff2": (64, 32),
                             "layers.1.attn.qkv": (32, 96)}, 16, scale=0.2)
    write_adapter(tf_dir, "t2", 16, 8, tmods2)
    tf.add("t2", 16, 8, tmods2)
    # Eight more on the transformer, over the sites an activation (ff1:
    # GELU) or a residual Add (out, ff2) follows, for batches that mix
    # the base model, one adapter and eight.
    tall = {"layers.%d.%s" % (layer, m): sh for layer in (0, 1)
            for m, sh in (("attn.qkv", (32, 96)), ("attn.out", (32, 32)),
                          ("ff1", (32, 64)), ("ff2", (64, 32)))}
    tall["head"] = (32, 10)
    tnames = []
    for i in range(8):
        r = [4, 8, 16, 2][i % 4]
        pick = sorted(tall)[i % 3::1 + i % 2]
        mods = rand_mods(rng, {m: tall[m] for m in pick}, r, scale=0.2)
        write_adapter(tf_dir, "q%d" % i, r, 2 * r, mods, targets=pick)
        tf.add("q%d" % i, r, 2 * r, mods)
        tnames.append("q%d" % i)

    # Tapped GEMMs run in row chunks (engine.h, taps) when their rows
    # pass a cache's worth; these models are too small for that, so the
    # chunks are made 7 rows here: every batch below runs chunked, with
    # requests' rows split across chunks (the plans are dumped to check).
    with Daemon(["--admin-insecure"], repository=repo,
                env={"SS_ENGINE_TAP_CHUNK_ROWS": "7",
                     "SS_ENGINE_DUMP": "1"}) as d:
        x = (rng.integers(0, 17, (5, 64)) / 16).astype(np.float32)
        st, base = infer(d, "mlp", x, "input")
        good, e = close(base, mlp.run(x)) if st == 200 else (False, -1)
        tap.ok(good, "base model, no adapter: PyTorch's outputs "
               "(max err %.2g)" % e)

        for name in names + ["rs"]:
            for binary in (False, True):
                st, got = infer(d, "mlp", x, "input", name, binary)
                good, e = close(got, mlp.run(x, name)) if st == 200 \
                    else (False, -1)
                tap.ok(good, "adapter %s, %s request: PyTorch with W + "
                       "(alpha/r) B A merged (max err %.2g)"
                       % (name, "binary" if binary else "JSON", e),
                       None if st == 200 else got)
        st, got = infer(d, "mlp", x, "input", "a2")
        tap.ok(st == 200 and not np.allclose(got, base, atol=1e-3),
               "an adapter changes the outputs")

        st, _, data = d.get("/v2/models/mlp")
        md = json.loads(data) if st == 200 else {}
        tap.ok(md.get("adapters") == sorted(names + ["rs"]),
               "model metadata lists the loaded adapters")
        st, data = infer(d, "mlp", x, "input", "nosuch")
        tap.ok(st == 404 and b"nosuch" in data,
               "an unknown adapter is 404 naming it: %s" % data[:120])
        logs = d.logs()
        for bad, what in (("badshape", "lora_A is [4, 64]"),
                          ("badmodule", "module 'fc9'"),
                          ("badrank", "[5, 64]"),
                          ("badfile", "header length"),
                          ("untargeted", "not in target_modules"),
                          ("fifo", "not a regular file")):
            st, data = infer(d, "mlp", x, "input", bad)
            tap.ok(st == 404 and ("adapter '%s'" % bad) in logs and
                   what in logs.split("adapter '%s'" % bad, 1)[1]
                   .split("\n", 1)[0],
                   "mismatching adapter %s refused at load naming '%s'"
                   % (bad, what))

        # Mixed batches: 48 concurrent requests of 1-3 rows over the
        # base model and the eight adapters.
        before = d.metric("slimserve_execution_count_total", model="mlp")
        results = [None] * 48
        xs = [(rng.integers(0, 17, (1 + i % 3, 64)) / 16).astype(np.float32)
              for i in range(48)]
        choice = [None if i % 9 == 8 else names[i % 9] for i in range(48)]

        def worker(i):
            results[i] = infer(d, "mlp", xs[i], "input", choice[i],
                               binary=bool(i % 2))

        threads = [threading.Thread(target=worker, args=(i,))
                   for i in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        execs = d.metric("slimserve_execution_count_total",
                         model="mlp") - before
        bad = []
        worst = 0.0
        for i in range(48):
            st, got = results[i] or (0, None)
            good, e = close(got, mlp.run(xs[i], choice[i])) \
                if st == 200 else (False, -1)
            worst = max(worst, e)
            if not good:
                bad.append((i, choice[i], st, e))
        tap.ok(not bad, "48 concurrent requests over 0 and 8 adapters: "
               "each as PyTorch (max err %.2g; %s)"
               % (worst, bad[:4] or "all match"))
        tap.ok(0 < execs < 48, "they shared batches: %d batches for 48 "
               "requests" % execs)

        # Admin: the list, unload under load, load at run time.
        st, _, data = d.get("/admin/models/mlp/adapters", admin=True)
        listed = json.loads(data) if st == 200 else {}
        tap.ok(st == 200 and [a["name"] for a in listed["adapters"]] ==
               sorted(names + ["rs"]) and listed["sites"] == 3 and
               listed["adapters"][0]["r"] == 4 and
               listed["adapters"][0]["modules"] == ["fc1"],
               "GET /admin/models/mlp/adapters lists the 9 loaded adapters "
               "with r and modules")
        stop = threading.Event()
        seen = []

        def hammer():
            while not stop.is_set():
                st, got = infer(d, "mlp", x, "input", "a1")
                seen.append(st == 404 or
                            (st == 200 and close(got, mlp.run(x, "a1"))[0]))
                if st == 404:
                    return
        hs = [threading.Thread(target=hammer) for _ in range(4)]
        for t in hs:
            t.start()
        deadline = time.monotonic() + 20
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        st, _, data = d.post("/admin/models/mlp/adapters/a1/unload",
                             admin=True)
        for t in hs:
            t.join(30)
        stop.set()
        tap.ok(st == 200 and all(seen) and len(seen) >= 20,
               "unload under load: %d requests, each a right answer or 404 "
               "after the unload (%s)" % (len(seen), data[:60]))
        st, data = infer(d, "mlp", x, "input", "a1")
        tap.ok(st == 404, "after unload the adapter is 404")
        st, _, data = d.post("/admin/models/mlp/adapters/a1/unload",
                             admin=True)
        tap.ok(st == 404, "unloading it again is 404")

        mods = rand_mods(rng, {"fc1": (64, 128), "fc3": (64, 10)}, 6)
        write_adapter(mlp_dir, "late", 6, 3, mods)
        mlp.add("late", 6, 3, mods)
        st, _, data = d.post("/admin/models/mlp/adapters/late/load",
                             admin=True)
        tap.ok(st == 200, "POST .../adapters/late/load (%s)" % data[:80])
        st, got = infer(d, "mlp", x, "input", "late", binary=True)
        good, e = close(got, mlp.run(x, "late")) if st == 200 \
            else (False, -1)
        tap.ok(good, "an adapter loaded at run time serves PyTorch's "
               "outputs (max err %.2g)" % e)
        st, _, data = d.post("/admin/models/mlp/adapters/a1/load",
                             admin=True)
        st2, got = infer(d, "mlp", x, "input", "a1")
        tap.ok(st == 200 and st2 == 200 and close(got, mlp.run(x, "a1"))[0],
               "an unloaded adapter loads again")
        st, _, data = d.post("/admin/models/mlp/adapters/badshape/load",
                             admin=True)
        tap.ok(st == 400 and b"lora_A is [4, 64]" in data,
               "loading a mismatching adapter is 400 naming the mismatch: "
               "%s" % data[:160])
        st, _, data = d.post("/admin/models/mlp/adapters/..%2f1/load",
                             admin=True)
        tap.ok(st in (400, 404), "a path as adapter name is refused (%d)"
               % st)
        st, _, data = d.get("/admin/models/nosuch/adapters", admin=True)
        tap.ok(st == 404, "adapters of an unknown model: 404")
        st, _, data = d.post("/v2/models/mlp/infer", body={
            "parameters": {"adapter": 7}, "inputs": [
                {"name": "input", "shape": [1, 64], "datatype": "FP32",
                 "data": [0.0] * 64}]})
        tap.ok(st == 400, "a non-string adapter parameter is 400")

        ids = rng.integers(0, 17, (3, 64)).astype(np.int64)
        st, got = infer(d, "tf", ids, "input_ids", "t1")
        good, e = close(got, tf.run(ids, "t1")) if st == 200 else (False, -1)
        tap.ok(good, "transformer: adapter on MatMul (transposed weight) "
               "and Gemm sites, 3-D rows: PyTorch (max err %.2g)" % e)
        st, got = infer(d, "tf", ids, "input_ids")
        good, e = close(got, tf.run(ids)) if st == 200 else (False, -1)
        tap.ok(good, "transformer base model unchanged (max err %.2g)" % e)
        # Long runs (blocks of eight rows, then four, then one): 8
        # samples of 64 rows alone (contiguous), and 6 concurrent
        # requests of 5 samples over t1, t2 and the base model (runs of
        # 320 rows, one after the other: the next one's prefetch).
        ids8 = rng.integers(0, 17, (8, 64)).astype(np.int64)
        st, got = infer(d, "tf", ids8, "input_ids", "t2", binary=True)
        good, e = close(got, tf.run(ids8, "t2")) if st == 200 \
            else (False, -1)
        tap.ok(good, "transformer, 512 rows of one adapter (a long run): "
               "PyTorch (max err %.2g)" % e)
        tids = [rng.integers(0, 17, (5, 64)).astype(np.int64)
                for _ in range(6)]
        tch = ["t1", None, "t2", "t1", "t2", None]
        tres = [None] * 6

        def tworker(i):
            tres[i] = infer(d, "tf", tids[i], "input_ids", tch[i])
        ts = [threading.Thread(target=tworker, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        errs = [close(tres[i][1], tf.run(tids[i], tch[i]))
                if tres[i] and tres[i][0] == 200 else (False, -1)
                for i in range(6)]
        tap.ok(all(g for g, _ in errs), "transformer, 6 concurrent requests "
               "over t1, t2 and the base (gathered rows): PyTorch (max err "
               "%.2g)" % max(e for _, e in errs))

        # Batches mixing 0, 1 and 8 adapters on the transformer (its
        # ff1 has a GELU after it, out and ff2 a residual Add): the base
        # alone, the base with one adapter, then 18 concurrent requests
        # of 1-3 samples over the base model and q0..q7; each answer
        # against PyTorch with that adapter's W + (alpha/r) B A merged.
        tap.ok("in chunks of 7 of" in d.logs(),
               "tapped plans run the sites in chunks of 7 rows")
        for group in ([None], [None, "q3"],
                      [None if i % 9 == 8 else tnames[i % 9]
                       for i in range(18)]):
            n = len(group)
            gids = [rng.integers(0, 17, (1 + i % 3, 64)).astype(np.int64)
                    for i in range(n)]
            gres = [None] * n

            def gworker(i):
                gres[i] = infer(d, "tf", gids[i], "input_ids", group[i],
                                binary=bool(i % 2))
            gts = [threading.Thread(target=gworker, args=(i,))
                   for i in range(n)]
            for t in gts:
                t.start()
            for t in gts:
                t.join(60)
            errs = [close(gres[i][1], tf.run(gids[i], group[i]))
                    if gres[i] and gres[i][0] == 200 else (False, -1)
                    for i in range(n)]
            tap.ok(all(g for g, _ in errs),
                   "transformer, %d concurrent request(s) over %d "
                   "adapter(s) and the base: PyTorch merged (max err %.2g)"
                   % (n, len(set(group) - {None}),
                      max(e for _, e in errs)))
    tmp.cleanup()
    tap.done()


if __name__ == "__main__":
    main()
