#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Weights served from the model file's mapping (issue 12,
common/filemap.h): a served version's weights are read-only file pages,
dropped from the resident set once its plans have packed them.  Every
later reader faults them back in: compression jobs that read the served
version (PTQ, structured pruning), and the version served again after
two hot swaps away from it.

1. The daemon maps the version's weights: /proc/PID/maps shows
   model.onnx, or the unlinked realigned copy in the same folder.
2. PTQ (activated) and structured pruning (activated) of version 1
   succeed, and each variant agrees with version 1 on the held-out
   digits (a job that read zeroes or garbage instead of the released
   weights would not).
3. Version 1 activated again answers bit-identically to its first
   answers.
"""

import os
import shutil
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

from paths import CALIB, HELD  # noqa: E402
N = 32


def infer(d):
    """(served version, logits) for the first N held-out digits."""
    with np.load(HELD) as z:
        x = {"input": z["input"][:N]}
    body, headers = kserve.binary_request(x)
    st, hd, data = d.post("/v2/models/mlp/infer", body, headers=headers)
    if st != 200:
        return None, None
    head, outs = kserve.parse_response(data, hd)
    return head.get("model_version"), next(iter(outs.values()))


def mapped_paths(pid, folder):
    """Files under folder that the process maps."""
    found = set()
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip().startswith(folder):
                found.add(parts[5].strip())
    return found


def compress(d, body, what):
    st, _, data = d.post("/admin/models/mlp/compress", body, admin=True)
    js = json_body(data) or {}
    tap.eq(st, 202, "%s: job accepted" % what)
    job = d.wait_job(js.get("job", 0))
    tap.eq(job.get("state"), "succeeded", "%s: job succeeded (%s)"
           % (what, job.get("error", "")))
    return (job.get("result") or {}).get("version")


def agree(what, y, y1):
    if y is None or y1 is None or y.shape != y1.shape:
        tap.ok(False, "%s answers" % what)
        return
    same = float(np.mean(np.argmax(y, 1) == np.argmax(y1, 1)))
    tap.ok(same >= 0.9, "%s agrees with version 1 on %d digits" % (what, N),
           "argmax agreement %.2f" % same)


def main():
    tmp = tempfile.mkdtemp()
    root = repo.with_model(os.path.join(tmp, "m"),
                           files={"calib.npz": CALIB, "val.npz": HELD})
    try:
        with Daemon(["--admin-insecure", "--job-threads=1"],
                    repository=root) as d:
            v, y1 = infer(d)
            tap.eq(v, "1", "version 1 serves")
            folder = os.path.realpath(os.path.join(root, "mlp", "1"))
            maps = mapped_paths(d.proc.pid, folder)
            tap.ok(len(maps) > 0, "the daemon maps version 1's weights",
                   "mapped: %s" % sorted(maps))
            tap.diag("mapped: %s" % sorted(maps))
            ptq = compress(d, {"methods": ["ptq"], "source_version": 1,
                               "calibration": {"file": "calib.npz"},
                               "validation": {"file": "val.npz"},
                               "gate": {"max_accuracy_drop": 0.05},
                               "activate": True}, "PTQ")
            v, y = infer(d)
            tap.eq(v, str(ptq), "the PTQ variant serves")
            agree("the PTQ variant", y, y1)
            pr = compress(d, {"methods": [{"method": "prune",
                                           "params": {"kind": "structured",
                                                      "sparsity": 0.3}}],
                              "source_version": 1,
                              "calibration": {"file": "calib.npz"},
                              "validation": {"file": "val.npz"},
                              "gate": {"max_accuracy_drop": 0.1},
                              "activate": True}, "structured prune")
            v, y = infer(d)
            tap.eq(v, str(pr), "the pruned variant serves")
            agree("the pruned variant", y, y1)
            st, _, _ = d.post("/admin/models/mlp/versions/1/activate", {},
                              admin=True)
            tap.eq(st, 200, "version 1 activated again")
            v, y = infer(d)
            tap.eq(v, "1", "version 1 serves again")
            tap.ok(y is not None and y1 is not None
                   and np.array_equal(y, y1),
                   "version 1 answers bit-identically after the swaps")
            tap.eq(d.stop(), 0, "clean exit")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
