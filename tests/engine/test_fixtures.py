#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Every trained fixture through slimserve-infer, against PyTorch.

For each tests/fixtures/<model>_op<opset>/ case (MLP, residual CNN with
BatchNorm, transformer encoder; opsets 13 and 17) and batch sizes 1, 7 and
64, the CLI's logits must match PyTorch's per element within
    |slimserve - torch| <= 1e-4 * max|torch| + 1e-5
(max|torch| taken over the whole batch's logits), and the predicted class
(argmax) must agree on every sample.  The batch-7 run also passes its input
as `name=file.npy` instead of an .npz, the CLI's other input form, and the
batch-1 run is repeated with --repeat 3 --threads 1 (same answer).  Last,
all 500 held-out digits go through in one batch of 500: slimserve's accuracy
must be PyTorch's (meta.json) within one sample (0.002).

A missing CLI is a failure, not a skip: this is the engine's main test.
"""

import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

RTOL = 1e-4
ATOL = 1e-5


def check(case, meta, b, got, msg, want, what):
    name = "%s batch %d%s" % (case, b, what)
    if not tap.ok(got is not None, name + ": slimserve-infer ran", msg):
        return
    out = got.get(meta["output"])
    good, detail = infer.compare(out, want, RTOL, ATOL)
    tap.ok(good, name + ": logits match torch", detail)
    if out is not None and out.shape == want.shape:
        agree = int((out.argmax(-1) == want.argmax(-1)).sum())
        tap.ok(agree == b, name + ": argmax agrees on %d/%d" % (agree, b))


def main():
    cli = infer.cli_path()
    if not tap.ok(os.access(cli, os.X_OK), "slimserve-infer is built",
                  "%s is missing or not executable" % cli):
        return tap.done()
    root = infer.fixtures_dir()
    cases = sorted(glob.glob(os.path.join(root, "*_op*", "meta.json")))
    tap.ok(len(cases) == 6, "6 fixtures found (3 models x 2 opsets)",
           "found %d under %s" % (len(cases), root))
    for mpath in cases:
        d = os.path.dirname(mpath)
        case = os.path.basename(d)
        with open(mpath) as f:
            meta = json.load(f)
        model = os.path.join(d, "model.onnx")
        for b in (1, 7, 64):
            with np.load(os.path.join(d, "expected%d.npz" % b)) as z:
                want = z[meta["output"]]
            npz = os.path.join(d, "batch%d.npz" % b)
            with infer.Scratch() as s:
                got, msg = infer.run(model, [npz], s.file("out.npz"))
                check(case, meta, b, got, msg, want, "")
                if b == 7:
                    with np.load(npz) as z:
                        np.save(s.file("x.npy"), z[meta["input"]])
                    got, msg = infer.run(
                        model, ["%s=%s" % (meta["input"], s.file("x.npy"))],
                        s.file("out2.npz"))
                    check(case, meta, b, got, msg, want, " (name=x.npy)")
                if b == 1:
                    got, msg = infer.run(model, [npz], s.file("out3.npz"),
                                         ["--repeat", "3", "--threads", "1"])
                    check(case, meta, b, got, msg, want,
                          " (--repeat 3 --threads 1)")
        with infer.Scratch() as s:
            held = os.path.join(root, "digits", meta["model"] + "_heldout.npz")
            with np.load(held) as z:
                labels = z["labels"]
                np.savez(s.file("x.npz"), **{meta["input"]: z[meta["input"]]})
            got, msg = infer.run(model, [s.file("x.npz")], s.file("out.npz"))
            if tap.ok(got is not None, case + " held-out batch of %d ran"
                      % len(labels), msg):
                out = got.get(meta["output"])
                acc = float((out.argmax(-1) == labels).mean()) \
                    if out is not None and out.shape[0] == len(labels) else -1
                want = meta["heldout_accuracy"]
                tap.ok(abs(acc - want) <= 0.002 + 1e-9,
                       case + " held-out accuracy %.3f (torch %.3f)"
                       % (acc, want))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
