# SPDX-License-Identifier: Apache-2.0
"""Training jobs on a mobilenet_v2-like net through the daemon: ReLU6
exported as Clip (min/max inputs, opset 13), depthwise and 1x1 convs,
inverted residuals, GAP (tests/fixtures/make_mbv2.py: 0.938 on the 500
held-out digits, BatchNorm folded as torchvision exports are).  A distill
job (student width 0.5) and a qat job each produce a version that passes
the gate, is activated and serves: accuracy measured by inference
against the labels.  A width student of a net whose every hidden width
reaches a residual Add (tests/fixtures/res_op13) is refused at submit
(400, naming the reason), and no job exists."""

import json
import os
import shutil
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "integration"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
from paths import FIX  # noqa: E402
from test_train import (ADMIN, DIGITS, methods_note, served,  # noqa: E402
                        submit, wait_job)

SHAPE = (1, 8, 8)


def digits_model(root, name, fixture, calib_only=False):
    """Model folder root/name: version 1 the fixture's model.onnx, and the
    digits as [N, 1, 8, 8] in calib.npz, val.npz (with labels) and, unless
    calib_only, train.npz."""
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(os.path.join(FIX, fixture, "model.onnx"),
                os.path.join(d, "1", "model.onnx"))
    for src, dst, labels in (("mlp_calib", "calib", False),
                             ("mlp_heldout", "val", True),
                             ("mlp_train", "train", False)):
        if calib_only and dst == "train":
            continue
        with np.load(os.path.join(DIGITS, src + ".npz")) as z:
            arrays = {"input": z["input"].reshape((-1,) + SHAPE)}
            if labels:
                arrays["labels"] = z["labels"]
            np.savez(os.path.join(d, dst + ".npz"), **arrays)
    return d


def make_repo(root):
    digits_model(root, "mbv2", "mbv2_op13")
    digits_model(root, "res", "res_op13", calib_only=True)
    return root


def test_refused(d):
    st, js = submit(d, {
        "source_version": 1, "methods": [{
            "method": "distill",
            "params": {"student": {"width": 0.5}, "epochs": 1}}],
        "calibration": {"file": "calib.npz"},
        "validation": {"file": "val.npz"}}, "res")
    tap.eq(st, 400, "a width student of a residual-only net: 400")
    tap.ok("no hidden width" in json.dumps(js) and "job" not in js,
           "the answer names the reason, and no job exists (%s)"
           % json.dumps(js)[:300])


def run_job(d, name, methods, drop, model="mbv2", timeout=600):
    """Submits methods on model with the digits, waits, checks that the
    version serves within drop of the source: (result, source, variant)."""
    st, js = submit(d, {
        "source_version": 1, "methods": methods,
        "calibration": {"file": "calib.npz"},
        "training": {"file": "train.npz"},
        "validation": {"file": "val.npz"},
        "gate": {"max_accuracy_drop": drop}, "activate": True}, model)
    tap.eq(st, 202, "%s: accepted (%s)" % (name, js.get("error", "")))
    j = wait_job(d, js.get("job", 0), timeout=timeout)
    tap.eq(j.get("state"), "succeeded", "%s succeeds (%s)"
           % (name, j.get("error", "")))
    res = j.get("result") or {}
    src, var = res.get("source") or {}, res.get("variant") or {}
    tap.diag("%s: %.4f -> %.4f, weights %s -> %s" % (
        name, src.get("accuracy") or 0, var.get("accuracy") or 0,
        src.get("weight_bytes"), var.get("weight_bytes")))
    v, acc = served(d, model, SHAPE)
    tap.eq(v, str(res.get("version")), "%s: the new version serves" % name)
    acc0 = src.get("accuracy") or 1
    tap.ok(acc >= (1 - drop) * acc0, "%s: served accuracy %.4f within "
           "%.0f%% of the source's %.4f" % (name, acc, 100 * drop, acc0))
    return res, src, var


def main():
    tmp = tempfile.mkdtemp()
    root = make_repo(os.path.join(tmp, "m"))
    try:
        with Daemon(ADMIN, repository=root) as d:
            test_refused(d)
            res, src, var = run_job(d, "distill width 0.5", [{
                "method": "distill",
                "params": {"student": {"width": 0.5}, "epochs": 10,
                           "batch_size": 64}}], 0.05)
            tap.eq((methods_note(res, 0).get("student") or {})
                   .get("width"), 0.5, "the details name the student")
            tap.ok((var.get("weight_bytes") or 1e9) * 2
                   < (src.get("weight_bytes") or 0),
                   "the student has under half the weights")
            res, src, var = run_job(d, "qat", [{
                "method": "qat", "params": {"epochs": 2}}], 0.02)
            tap.ok(len(methods_note(res, 0).get("quantized", [])) >= 8,
                   "every conv and the Linear int8 (%d layers)"
                   % len(methods_note(res, 0).get("quantized", [])))
            tap.ok((var.get("weight_bytes") or 1e9) * 2
                   < (src.get("weight_bytes") or 0), "int8 weights")
            tap.eq(d.stop(), 0, "clean exit")
    finally:
        shutil.rmtree(tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
