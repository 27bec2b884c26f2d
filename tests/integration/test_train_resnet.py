# SPDX-License-Identifier: Apache-2.0
"""Training jobs on resnet- and densenet-like nets through the daemon and
slimserve-train (issue 11).

- Width students of a resnet: tests/fixtures/cnn_op13 and cnn_op17 (a
  stem Conv-BN-ReLU, a BasicBlock and a strided BasicBlock with a 1x1
  shortcut, BatchNorm nodes kept, trained: 0.992 on the 500 held-out
  digits).  distill {"width": 0.5} shrinks exactly the widths no residual
  Add reads, each block's conv1 outputs (16 -> 8, 32 -> 16), serves with
  fewer weights and within 2% (relative) of the teacher's accuracy.
- Tied exports (tests/fixtures/make_tied.py: untrained, so torch's
  exporter stores equal parameters once and reads the copies through
  Identity nodes, as an untrained torchvision resnet18/densenet121
  export does): a width student of res_tied_op13 (BN folded, its zero
  conv biases tied) is accepted at submit (it was refused: the check
  looked at the tied graph, where no conv is a layer) and made from the
  same blocks' conv1; densenet-like dense_tied_op13/op17 (pre-activation
  BatchNorms with tied statistics, Concat) train with qat and distill.
  Untrained teachers are at chance, so those jobs are held to succeeding,
  serving and their weights, not to an accuracy.
- A net where nothing can shrink (res_op13: the one hidden width is the
  residual's) is refused at submit by test_train_mbnet.py."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "integration"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
from test_train import ADMIN, methods_note  # noqa: E402
from test_train_mbnet import digits_model, run_job  # noqa: E402

TRAIN_BIN = os.path.join(os.environ.get("top_builddir", "."), "server",
                         "slimserve-train")
DRIFT = 0.02        # the trained resnet's student: relative accuracy drop
ANY = 1.0           # an untrained teacher: no accuracy bound


def pruned(res):
    return {p["layer"]: (p["channels"], p["kept"]) for p in
            ((methods_note(res, 0).get("student") or {}).get("pruned") or [])}


def test_width(d, model, epochs):
    res, src, var = run_job(d, "%s distill width 0.5" % model, [{
        "method": "distill",
        "params": {"student": {"width": 0.5}, "epochs": epochs,
                   "batch_size": 64}}], DRIFT, model)
    tap.eq(pruned(res), {"/block1/conv1/Conv": (16, 8),
                         "/block2/conv1/Conv": (32, 16)},
           "%s: each block's inner width halves, nothing an Add reads"
           % model)
    tap.ok(0 < (var.get("weight_bytes") or 1e9)
           < 0.6 * (src.get("weight_bytes") or 0),
           "%s: the student has fewer weights (%s of %s bytes)"
           % (model, var.get("weight_bytes"), src.get("weight_bytes")))


def test_tied(d):
    res, src, var = run_job(d, "tied resnet distill width 0.5", [{
        "method": "distill",
        "params": {"student": {"width": 0.5}, "epochs": 1}}], ANY, "rtied")
    cut = pruned(res)
    tap.ok(sorted(cut) == ["/blocks/blocks.0/conv1/Conv",
                           "/blocks/blocks.1/conv1/Conv"]
           and all(k * 2 == c for c, k in cut.values()),
           "tied resnet: the blocks' conv1 halve (%s)" % json.dumps(cut))
    tap.ok((var.get("weight_bytes") or 1e9) < (src.get("weight_bytes") or 0),
           "tied resnet: fewer weights")
    res, src, var = run_job(d, "tied densenet (opset 17) qat", [{
        "method": "qat", "params": {"epochs": 1, "min_steps": 0}}], ANY,
        "dtied17")
    tap.ok(len(methods_note(res, 0).get("quantized", [])) >= 10,
           "tied densenet: every conv and the Linear int8 (%d layers)"
           % len(methods_note(res, 0).get("quantized", [])))
    res, src, var = run_job(d, "tied densenet (opset 13) distill width 0.5",
                            [{"method": "distill",
                              "params": {"student": {"width": 0.5},
                                         "epochs": 1}}], ANY, "dtied13")
    tap.ok(len(pruned(res)) >= 4, "tied densenet: the dense layers' inner "
           "widths cut (%d)" % len(pruned(res)))


def test_offline(tmp, mdir):
    """qat and distill of the tied densenet by slimserve-train."""
    for n, m in enumerate(({"method": "qat",
                            "params": {"epochs": 1, "min_steps": 0}},
                           {"method": "distill",
                            "params": {"student": {"width": 0.5},
                                       "epochs": 1}})):
        p = os.path.join(tmp, "job%d.json" % n)
        with open(p, "w") as f:
            json.dump({"source_version": 1, "methods": [m],
                       "calibration": {"file": "calib.npz"},
                       "training": {"file": "train.npz"},
                       "validation": {"file": "val.npz"},
                       "gate": {"max_accuracy_drop": ANY}}, f)
        r = subprocess.run([TRAIN_BIN, p, "--model-dir", mdir, "--threads",
                            "1", "--latency-runs", "1"],
                           capture_output=True, timeout=900)
        tap.eq(r.returncode, 0, "slimserve-train %s on the tied densenet "
               "(%s)" % (m["method"], r.stderr.decode()[-300:]))
        tap.ok(os.path.isfile(os.path.join(mdir, str(n + 2), "model.onnx")),
               "slimserve-train %s: version %d written" % (m["method"], n + 2))


def main():
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    for name, fixture in (("cnn13", "cnn_op13"), ("cnn17", "cnn_op17"),
                          ("rtied", "res_tied_op13"),
                          ("dtied13", "dense_tied_op13"),
                          ("dtied17", "dense_tied_op17")):
        digits_model(root, name, fixture)
    off = digits_model(os.path.join(tmp, "offline"), "d", "dense_tied_op17")
    try:
        with Daemon(ADMIN, repository=root) as d:
            test_width(d, "cnn13", 5)
            test_width(d, "cnn17", 5)
            test_tied(d)
            tap.eq(d.stop(), 0, "clean exit")
        test_offline(tmp, off)
    finally:
        shutil.rmtree(tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
