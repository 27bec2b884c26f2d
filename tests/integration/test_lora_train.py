# SPDX-License-Identifier: Apache-2.0
"""On-line LoRA training (issue 14, docs/lora.md): a "lora" compress job
trains A and B on the served model frozen and writes a PEFT adapter (not a
version), loaded at once; PyTorch with the same formula, W + (alpha / r)
B A, gives the served outputs; "merge": true writes a version instead.

The task is shifted: the digits rotated by 90 degrees, which the base MLP
was not trained on."""

import json
import os
import struct
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "fixtures"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "integration"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import repo as repolib  # noqa: E402

# test_lora skips the whole suite where python3-torch is missing.
from test_lora import Ref, close, infer  # noqa: E402

from paths import FIX  # noqa: E402
DIGITS = os.path.join(FIX, "digits")


def rotated(name):
    with np.load(os.path.join(DIGITS, name)) as z:
        x = np.rot90(z["input"].reshape(-1, 8, 8), 1, axes=(1, 2))
        return (np.ascontiguousarray(x.reshape(-1, 64), np.float32),
                z["labels"].astype(np.int64))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], np.frombuffer(raw[8 + n + a:8 + n + b], "<f4")
                  .reshape(v["shape"]))
    return out


def accuracy(logits, labels):
    return float((np.argmax(logits, axis=1) == labels).mean())


def main():
    tmp = tempfile.TemporaryDirectory(prefix="ss-lora-train-")
    root = os.path.join(tmp.name, "models")
    xtr, ytr = rotated("mlp_train.npz")
    xva, yva = rotated("mlp_heldout.npz")
    repolib.with_model(root, "mlp", os.path.join(FIX, "mlp_op17",
                                                 "model.onnx"))
    mdir = os.path.join(root, "mlp")
    # an adapters/ folder, empty: the version serves adapters
    os.makedirs(os.path.join(mdir, "adapters"))
    np.savez(os.path.join(mdir, "rot_train.npz"), input=xtr, labels=ytr)
    np.savez(os.path.join(mdir, "rot_val.npz"), input=xva, labels=yva)
    ref = Ref("mlp")
    base_acc = accuracy(ref.run(xva), yva)

    def body(params, **kw):
        b = {"methods": [{"method": "lora", "params": params}],
             "training": {"file": "rot_train.npz"},
             "validation": {"file": "rot_val.npz"}}
        b.update(kw)
        return json.dumps(b)

    with Daemon(["--admin-insecure", "--job-threads=1"],
                repository=root) as d:
        # Bad bodies: 400 naming what is wrong, no job.
        for params, want in (
                ({"rank": 8}, "adapter"),
                ({"adapter": "../x"}, "adapter must be a name"),
                ({"adapter": "a", "targets": [1]}, "targets"),
                ({"adapter": "a", "targets": "fc["}, "regular expression"),
                ({"adapter": "a", "rank": 0}, "rank")):
            st, _, data = d.post("/admin/models/mlp/compress", body(params),
                                 admin=True)
            tap.ok(st == 400 and want in data.decode(errors="replace"),
                   "lora %s: 400 naming %s (%d %s)" % (
                       json.dumps(params), want, st, data[:120]))
        st, _, data = d.post("/admin/models/mlp/compress", json.dumps({
            "methods": ["prune", {"method": "lora",
                                  "params": {"adapter": "a"}}],
            "training": {"file": "rot_train.npz"},
            "validation": {"file": "rot_val.npz"}}), admin=True)
        tap.ok(st == 400 and b"lora must be the first" in data,
               "lora after another method: 400 (%d %s)" % (st, data[:120]))

        # A target that is no module of the model fails the job, naming it.
        st, _, data = d.post("/admin/models/mlp/compress", body(
            {"adapter": "typo", "targets": ["fc1", "fc7"], "epochs": 1}),
            admin=True)
        j = d.wait_job((json_body(data) or {}).get("job", 0), timeout=120)
        tap.ok(j.get("state") == "failed" and "fc7" in j.get("error", ""),
               "unknown target: the job fails naming it (%s: %s)" % (
                   j.get("state"), j.get("error")))

        # The adapter: rank 8, alpha 16 on fc1 and fc2, three epochs.
        st, _, data = d.post("/admin/models/mlp/compress", body(
            {"adapter": "rot", "rank": 8, "alpha": 16,
             "targets": ["fc1", "fc2"], "epochs": 3, "seed": 7,
             "optimizer": {"lr": 0.01}}), admin=True)
        tap.ok(st == 202 or st == 200, "lora job accepted (%d)" % st)
        j = d.wait_job((json_body(data) or {}).get("job", 0), timeout=180)
        res = j.get("result") or {}
        tap.ok(j.get("state") == "succeeded" and res.get("adapter") == "rot"
               and res.get("loaded") is True and "version" not in res,
               "the job writes adapter 'rot' and loads it, no version "
               "(%s, %s)" % (j.get("state"), j.get("error")))
        tap.ok(repolib.versions_on_disk(root) == [1],
               "no version folder written (%s)"
               % repolib.versions_on_disk(root))
        note = ((res.get("details") or {}).get("methods") or [{}])[0]
        tap.ok(note.get("modules") == ["fc1", "fc2"]
               and note.get("trainable_params") == 8 * (64 + 128) * 2,
               "trainable: A and B of fc1 and fc2 only (%s, %s params, "
               "%.3f of the model)" % (note.get("modules"),
                                       note.get("trainable_params"),
                                       note.get("trainable_fraction", -1)))

        adir = os.path.join(mdir, "adapters", "rot")
        with open(os.path.join(adir, "adapter_config.json")) as f:
            cfg = json.load(f)
        tap.ok(cfg.get("r") == 8 and cfg.get("lora_alpha") == 16
               and cfg.get("target_modules") == ["fc1", "fc2"]
               and cfg.get("bias") == "none" and cfg.get("peft_type")
               == "LORA", "adapter_config.json is PEFT's (%s)" % cfg)
        st_t = read_safetensors(os.path.join(adir,
                                             "adapter_model.safetensors"))
        shapes = {k: (v[0], list(v[1].shape)) for k, v in st_t.items()}
        want = {"base_model.model.fc1.lora_A.weight": ("F32", [8, 64]),
                "base_model.model.fc1.lora_B.weight": ("F32", [128, 8]),
                "base_model.model.fc2.lora_A.weight": ("F32", [8, 128]),
                "base_model.model.fc2.lora_B.weight": ("F32", [64, 8])}
        tap.ok(shapes == want, "adapter_model.safetensors: PEFT's keys "
               "and shapes (%s)" % shapes)
        tap.ok(not any(n.startswith(".") for n in
                       os.listdir(os.path.join(mdir, "adapters"))),
               "no temporary folder left in adapters/")
        b_nonzero = all(np.abs(st_t["base_model.model.%s.lora_B.weight"
                                    % m][1]).max() > 0 for m in ("fc1", "fc2"))
        tap.ok(b_nonzero, "B was trained (it starts at zero)")

        # PyTorch with W + (alpha / r) B A gives the served outputs.
        ref.add("rot", 8, 16, {m: (st_t["base_model.model.%s.lora_A.weight"
                                        % m][1].copy(),
                                   st_t["base_model.model.%s.lora_B.weight"
                                        % m][1].copy())
                               for m in ("fc1", "fc2")})
        x = xva[:32]
        for binary in (False, True):
            st, got = infer(d, "mlp", x, "input", adapter="rot",
                            binary=binary)
            ok, err = close(np.asarray(got), ref.run(x, "rot")) \
                if st == 200 else (False, -1)
            tap.ok(ok, "served with the trained adapter (%s) = PyTorch "
                   "W + (alpha/r) B A (max err %.2g)"
                   % ("binary" if binary else "JSON", err))
        st, got = infer(d, "mlp", x, "input")
        ok, err = close(np.asarray(got), ref.run(x)) if st == 200 \
            else (False, -1)
        tap.ok(ok, "the base model is unchanged (max err %.2g)" % err)
        lora_acc = accuracy(ref.run(xva, "rot"), yva)
        tap.ok(lora_acc > base_acc + 0.3,
               "rotated digits: base %.3f, with the adapter %.3f"
               % (base_acc, lora_acc))
        tap.diag("rotated digits accuracy: base %.3f, adapter r=8 %.3f "
                 "(job's validation: %s)" % (
                     base_acc, lora_acc,
                     (res.get("variant") or {}).get("accuracy")))

        # A string is a regular expression over whole module names, as in
        # PEFT (and as the server reads an adapter's target_modules).
        st, _, data = d.post("/admin/models/mlp/compress", body(
            {"adapter": "re", "targets": "fc[13]", "epochs": 1}),
            admin=True)
        j = d.wait_job((json_body(data) or {}).get("job", 0), timeout=180)
        note = (((j.get("result") or {}).get("details") or {})
                .get("methods") or [{}])[0]
        tap.ok(j.get("state") == "succeeded"
               and note.get("modules") == ["fc1", "fc3"],
               "targets \"fc[13]\" is a pattern: fc1 and fc3 (%s %s %s)"
               % (j.get("state"), note.get("modules"), j.get("error")))
        st, _, data = d.post("/admin/models/mlp/compress", body(
            {"adapter": "re2", "targets": "c1", "epochs": 1}), admin=True)
        j = d.wait_job((json_body(data) or {}).get("job", 0), timeout=120)
        tap.ok(j.get("state") == "failed" and "c1" in j.get("error", ""),
               "targets \"c1\" matches no whole name: the job fails (%s: "
               "%s)" % (j.get("state"), j.get("error")))

        # "merge": true: a version with the update folded, through the gate.
        st, _, data = d.post("/admin/models/mlp/compress", body(
            {"merge": True, "rank": 4, "targets": "fc2", "epochs": 1}),
            admin=True)
        j = d.wait_job((json_body(data) or {}).get("job", 0), timeout=180)
        res = j.get("result") or {}
        tap.ok(j.get("state") == "succeeded" and res.get("version") == 2
               and "adapter" not in res
               and repolib.versions_on_disk(root) == [1, 2],
               "merge: true writes version 2, no adapter (%s, %s, %s)" % (
                   j.get("state"), res.get("version"), j.get("error")))
    tmp.cleanup()
    tap.done()


main()
