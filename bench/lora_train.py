# SPDX-License-Identifier: Apache-2.0
"""LoRA fine-tuning against a full fine-tune (issue 14's target: >= 95% of
full fine-tune accuracy with <= 5% trainable parameters), on a shifted
task: the digits rotated by 90 degrees, which the fixtures' MLP
(64-128-64-10) was not trained on.

slimserve trains adapters through the daemon (a "lora" compress job per
rank, every Gemm site targeted, the job's validation accuracy of the base
model with the adapter); PyTorch fine-tunes every weight of the same
model with the same loss (cross-entropy), optimizer (AdamW), epochs and
batch size.  Prints accuracies, the ratio, trainable fractions and the
load average.

    /usr/bin/python3 bench/lora_train.py --build BUILD [--epochs 20]
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
FIX = os.path.join(TOP, "tests", "fixtures")


def rotated(name):
    with np.load(os.path.join(FIX, "digits", name)) as z:
        x = np.rot90(z["input"].reshape(-1, 8, 8), 1, axes=(1, 2))
        return (np.ascontiguousarray(x.reshape(-1, 64), np.float32),
                z["labels"].astype(np.int64))


def full_finetune(xtr, ytr, xva, yva, epochs, lr, bs, seed):
    import torch
    import models

    torch.manual_seed(seed)
    m = models.MODELS["mlp"][0]()
    m.load_state_dict(torch.load(os.path.join(FIX, "torch", "mlp.pt")))
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * (len(xtr) // bs))
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(epochs):
        m.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i:i + bs]
            loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    m.eval()
    with torch.no_grad():
        pred = m(torch.from_numpy(xva)).argmax(1).numpy()
    n = sum(p.numel() for p in m.parameters())
    return float((pred == yva).mean()), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--ranks", default="2,8")
    args = ap.parse_args()
    os.environ["top_builddir"] = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
    sys.path.insert(0, FIX)
    from daemon import Daemon, json_body
    import repo as repolib

    xtr, ytr = rotated("mlp_train.npz")
    xva, yva = rotated("mlp_heldout.npz")
    tmp = tempfile.TemporaryDirectory(prefix="ss-bench-lora-train-")
    root = os.path.join(tmp.name, "models")
    repolib.with_model(root, "mlp", os.path.join(FIX, "mlp_op17",
                                                 "model.onnx"))
    mdir = os.path.join(root, "mlp")
    np.savez(os.path.join(mdir, "t.npz"), input=xtr, labels=ytr)
    np.savez(os.path.join(mdir, "v.npz"), input=xva, labels=yva)
    full, n_params = full_finetune(xtr, ytr, xva, yva, args.epochs, 1e-3,
                                   64, 0)
    print("# load average: %s" % open("/proc/loadavg").read().split()[:3])
    print("full fine-tune (PyTorch, AdamW 1e-3, %d epochs): accuracy %.3f, "
          "%d trainable parameters" % (args.epochs, full, n_params))
    with Daemon(["--admin-insecure", "--job-threads=1"],
                repository=root) as d:
        for r in [int(k) for k in args.ranks.split(",")]:
            body = {"methods": [{"method": "lora", "params": {
                "adapter": "r%d" % r, "rank": r, "alpha": 2 * r,
                "epochs": args.epochs, "optimizer": {"lr": args.lr}}}],
                "training": {"file": "t.npz"},
                "validation": {"file": "v.npz"},
                "gate": {"max_accuracy_drop": 1.0}}
            st, _, data = d.post("/admin/models/mlp/compress",
                                 json.dumps(body), admin=True)
            j = d.wait_job((json_body(data) or {}).get("job", 0),
                           timeout=1200)
            res = j.get("result") or {}
            note = ((res.get("details") or {}).get("methods") or [{}])[0]
            acc = (res.get("variant") or {}).get("accuracy") or 0.0
            base = (res.get("source") or {}).get("accuracy") or 0.0
            print("lora r=%d alpha=%d (slimserve, lr %g): base %.3f -> "
                  "%.3f = %.1f%% of full, trainable %d (%.1f%%) [%s]"
                  % (r, 2 * r, args.lr, base, acc, 100 * acc / full,
                     note.get("trainable_params", 0),
                     100 * note.get("trainable_fraction", 0),
                     j.get("state")))
    tmp.cleanup()


main()
