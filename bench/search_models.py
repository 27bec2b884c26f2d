#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The models bench/search.py searches: large enough that a combination
of methods can matter (the test fixtures are so small that int8 alone
takes every gain), trained here with PyTorch on the digits set the
fixtures use (sklearn's copy, the fixtures' split: 500 held out, the
rest for training, its first 256 rows the calibration set).

  mlp784       784-512-256-10 MLP (ReLU) on the 8x8 digits resized to
               28x28 (bilinear): MNIST-sized layers
  cnn_wide     Conv 1->64 -> BN/ReLU -> Conv 64->128 stride 2 -> BN/ReLU
               -> Conv 128->128 -> ReLU -> global average -> 128-256-10
  transformer128  pre-norm encoder, d_model 128, 4 heads, FFN 512,
               2 layers, the pixel values as 64 tokens (models.py's)

    /usr/bin/python3 bench/search_models.py OUTDIR

writes OUTDIR/<name>/{model.onnx, train.npz, calib.npz, val.npz} and
prints each model's held-out accuracy; an existing OUTDIR/<name> is kept
(delete it to retrain).  Deterministic: seeded, one thread.
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fixtures"))
import models  # noqa: E402

HELDOUT, CALIB, SEED = 500, 256, 0


class MLP784(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class WideCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.c2 = nn.Conv2d(64, 128, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.c3 = nn.Conv2d(128, 128, 3, 1, 1)
        self.fc1 = nn.Linear(128, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.relu(self.bn2(self.c2(x)))
        x = F.relu(self.c3(x)).mean(dim=(2, 3))
        return self.fc2(F.relu(self.fc1(x)))


def transformer():
    m = models.Transformer(d=128, heads=4, ff=512, layers=2)
    # Positions from a small random start: from zeros (models.py's, for
    # the fixture) they take tens of epochs to learn at this width.
    nn.init.normal_(m.pos, std=0.1)
    return m


# name -> (constructor, input name, epochs, lr, weight decay)
MODELS = {
    "mlp784": (MLP784, "input", 20, 2e-3, 1e-4),
    "cnn_wide": (WideCNN, "input", 20, 3e-3, 1e-4),
    "transformer128": (lambda: transformer(), "input_ids", 12, 5e-3, 1e-2),
}


def inputs(name, images):
    n = len(images)
    if name == "transformer128":
        return images.reshape(n, 64).astype(np.int64)
    x = torch.from_numpy(images.astype(np.float32) / np.float32(16.0))
    x = x.reshape(n, 1, 8, 8)
    if name == "mlp784":
        x = F.interpolate(x, size=(28, 28), mode="bilinear",
                          align_corners=False).reshape(n, 784)
    return x.numpy()


def train(name, x, y):
    torch.manual_seed(SEED)
    ctor, _, epochs, lr, wd = MODELS[name]
    return models.fit(ctor(), x, y, epochs, lr, wd, seed=SEED)


def make(outdir, name):
    from sklearn.datasets import load_digits
    d = os.path.join(outdir, name)
    if os.path.exists(os.path.join(d, "model.onnx")):
        return d
    os.makedirs(d, exist_ok=True)
    torch.set_num_threads(1)
    dg = load_digits()
    images = dg.images.astype(np.uint8)
    labels = dg.target.astype(np.int64)
    perm = np.random.RandomState(SEED).permutation(len(labels))
    te, tr = perm[:HELDOUT], perm[HELDOUT:]
    xtr, xte = inputs(name, images[tr]), inputs(name, images[te])
    ytr, yte = labels[tr], labels[te]
    model = train(name, xtr, ytr)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xte)).argmax(1).numpy()
                     == yte).mean())
    in_name = MODELS[name][1]
    torch.onnx.export(model, (torch.from_numpy(xte[:2]),),
                      os.path.join(d, "model.onnx"), opset_version=13,
                      input_names=[in_name], output_names=["logits"],
                      dynamic_axes={in_name: {0: "batch"},
                                    "logits": {0: "batch"}},
                      do_constant_folding=True)
    np.savez(os.path.join(d, "train.npz"), **{in_name: xtr, "labels": ytr})
    np.savez(os.path.join(d, "calib.npz"),
             **{in_name: xtr[:CALIB], "labels": ytr[:CALIB]})
    np.savez(os.path.join(d, "val.npz"), **{in_name: xte, "labels": yte})
    print("%-15s held-out accuracy %.4f" % (name, acc), flush=True)
    return d


def main():
    out = sys.argv[1]
    for name in MODELS:
        make(out, name)


if __name__ == "__main__":
    main()
