#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Sparse mixture-of-experts dispatch against the dense graph and PyTorch.

Each case of tests/fixtures/moe/ (make_moe.py: top-1 and top-2 of 4, 8 and
16 experts, renormalised gates, mixed expert depths, a [N, 5, 16] input,
the "loop" form of the weighted sum) and of make_moe_ort.py (ONNX Runtime's
com.microsoft.MoE op: relu/gelu/silu/identity, k 1 and 2, renormalised
gates, with and without biases, the legacy weight shapes, a 3-D input)
runs through slimserve-infer at batch 1, 7 and 64 twice: as compiled (the
sparse pass rewrites the pattern, or the MoE op, into one MoE step,
engine/plan/pass_moe.c) and with SS_ENGINE_NO_MOE=1 (the dense graph,
every expert on every row, on the same oneDNN kernels; for the MoE op its
reference kernel, engine/ops/moe.c).  k2_e8_bf16 is k2_e8 asking for
bf16 compute: the MoE step's experts then run on bf16 primitives too.
The ORT cases' expected outputs are a float64 numpy reference, which
onnxruntime 1.30 matched within 7e-7.
Checks:
  - the pass rewrote the cases meant to be rewritten and logged why it
    left the other two dense (gate matrix also an output; an expert that
    is not a Linear/activation chain);
  - sparse vs dense: |sparse - dense| <= 1e-5 per element;
  - both vs PyTorch: |got - torch| <= 1e-4 * max|torch| + 1e-5;
  - the batches exercise what the step must get right: per meta.json
    (PyTorch's own routing), uneven loads and an expert without rows in
    every batch of 7 or more, and batch 1;
  - k2_e16 at batch 64 once more with SS_ENGINE_MOE_MAX_PRIMS=1: the
    coarse buckets (powers of two) a step with many experts gets.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

BATCHES = (1, 7, 64)


def run(model, npz, out, dense, extra_env=None):
    env = dict(os.environ)
    env.update(extra_env or {})
    env.pop("SS_ENGINE_NO_FUSION", None)
    if dense:
        env["SS_ENGINE_NO_MOE"] = "1"
    else:
        env.pop("SS_ENGINE_NO_MOE", None)
    p = subprocess.run([infer.cli_path(), "--model", model, "--input", npz,
                        "--output", out], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=infer.TIMEOUT)
    log = p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        return None, log
    with np.load(out) as z:
        return {k: z[k] for k in z.files}, log


def main():
    cli = infer.cli_path()
    if not tap.ok(os.access(cli, os.X_OK), "slimserve-infer is built"):
        return tap.done()
    root = os.path.join(infer.fixtures_dir(), "moe")
    cases = sorted(glob.glob(os.path.join(root, "*", "meta.json")))
    tap.ok(len(cases) >= 21, "21 MoE fixtures (12 PyTorch, 8 ORT MoE/QMoE op, "
           "1 bf16)",
           "found %d" % len(cases))
    with infer.Scratch() as tmp:
        for mpath in cases:
            d = os.path.dirname(mpath)
            case = os.path.basename(d)
            with open(mpath) as f:
                meta = json.load(f)
            model = os.path.join(d, "model.onnx")
            for b in BATCHES:
                npz = os.path.join(d, "batch%d.npz" % b)
                name = "%s batch %d" % (case, b)
                sp, slog = run(model, npz, tmp.file("s.npz"), False)
                dn, dlog = run(model, npz, tmp.file("d.npz"), True)
                if not tap.ok(sp is not None and dn is not None,
                              name + ": both runs succeed", slog + dlog):
                    continue
                if meta["sparse"]:
                    tap.ok("top %d, sparse" % meta["k"] in slog,
                           name + ": rewritten into a MoE step", slog)
                else:
                    tap.ok("stays dense" in slog and "sparse" not in slog,
                           name + ": left dense, with the reason logged",
                           slog)
                tap.ok("sparse" not in dlog and "stays dense" not in dlog,
                       name + ": SS_ENGINE_NO_MOE=1 turns the pass off",
                       dlog)
                with np.load(os.path.join(d, "expected%d.npz" % b)) as z:
                    want = {k: z[k] for k in z.files}
                # bf16 compute (k2_e8_bf16): both plans round the
                # experts' inputs to bf16, PyTorch does not
                bf16 = meta.get("precision") == "bf16"
                for o in meta["outputs"]:
                    good, detail = infer.compare(sp.get(o), dn.get(o),
                                                 1e-2 if bf16 else 0, 1e-5)
                    tap.ok(good, "%s: %s sparse = dense within %s"
                           % (name, o, "1e-2 (bf16)" if bf16 else "1e-5"),
                           detail)
                    good, detail = infer.compare(sp.get(o), want[o],
                                                 2e-2 if bf16 else 1e-4,
                                                 1e-5)
                    tap.ok(good, "%s: %s matches PyTorch" % (name, o),
                           detail)
                loads = meta["loads"][str(b)]
                tap.eq(sum(loads), b * meta["k"] * (5 if meta["rank"] == 3
                                                     else 1),
                       name + ": k slots per row")
                if b >= 7:
                    tap.ok(min(loads) == 0
                           and max(loads) > sum(loads) / len(loads),
                        name + ": uneven loads and an expert without rows",
                        "loads %s" % loads)
        d = os.path.join(root, "k2_e16")
        sp, slog = run(os.path.join(d, "model.onnx"),
                       os.path.join(d, "batch64.npz"), tmp.file("s.npz"),
                       False, {"SS_ENGINE_MOE_MAX_PRIMS": "1"})
        with np.load(os.path.join(d, "expected64.npz")) as z:
            want = z["y"]
        if tap.ok(sp is not None and "sparse" in slog,
                  "k2_e16 batch 64, coarse buckets: rewritten", slog):
            good, detail = infer.compare(sp["y"], want, 1e-4, 1e-5)
            tap.ok(good, "k2_e16 batch 64, coarse buckets: matches PyTorch",
                   detail)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
