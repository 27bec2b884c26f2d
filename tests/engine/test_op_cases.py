#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Every single-op case in tests/fixtures/ops through slimserve-infer.

Each case (made by tests/fixtures/make_op_cases.py, described in
tests/fixtures/ops/cases.json) is a tiny ONNX model whose expected outputs
numpy computed in float64 from the op's spec.  Every output must have the
expected shape and dtype; floats must match per element within
    |slimserve - numpy| <= 1e-5 * max|numpy| + 1e-6
and integers exactly.  One TAP line per case, naming the op and variant.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

RTOL = 1e-5
ATOL = 1e-6


def run_case(d, name, doc):
    with np.load(os.path.join(d, "expected.npz")) as z:
        want = {k: z[k] for k in z.files}
    with infer.Scratch() as s:
        got, msg = infer.run(os.path.join(d, "model.onnx"),
                             [os.path.join(d, "inputs.npz")],
                             s.file("out.npz"))
    desc = "%s: %s" % (name, doc)
    if got is None:
        return tap.ok(False, desc, msg)
    details = []
    good = True
    for k, w in sorted(want.items()):
        g_ok, detail = infer.compare(got.get(k), w, RTOL, ATOL)
        good = good and g_ok
        details.append("%s: %s" % (k, detail))
    extra = sorted(set(got) - set(want))
    if extra:
        good = False
        details.append("unexpected outputs %s" % extra)
    return tap.ok(good, desc, "\n".join(details))


def main():
    cli = infer.cli_path()
    if not tap.ok(os.access(cli, os.X_OK), "slimserve-infer is built",
                  "%s is missing or not executable" % cli):
        return tap.done()
    root = os.path.join(infer.fixtures_dir(), "ops")
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    tap.ok(len(cases) >= 150, "%d op cases listed" % len(cases))
    failed = []
    for name in sorted(cases):
        if not run_case(os.path.join(root, name), name, cases[name]["doc"]):
            failed.append(name)
    if failed:
        tap.diag("%d of %d cases failed: %s" % (len(failed), len(cases),
                                                " ".join(failed)))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
