#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""slimserve_moe_expert_rows_total through the real daemon (issue 13).

A repository with the top-2-of-8 MoE fixture (tests/fixtures/moe/k2_e8,
PyTorch's dense export, which the engine runs sparse) and the MLP fixture.
After inference requests of 64 and 7 rows, each expert's series
{model, version, layer, expert} must equal the rows PyTorch routed to it
(meta.json, per batch), summed over the requests; an expert no row chose
has no series, and the MLP (no MoE layer) has none at all.  The outputs
must match PyTorch's too, and the admin view (GET /admin/models/NAME/
versions) must give the same rows per expert as "moe_expert_rows".
"""

import json
import os
import sys

import numpy as np

TOP = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import repo  # noqa: E402
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402

CASE = os.path.join(repo.FIXTURES, "moe", "k2_e8")
NAME = "slimserve_moe_expert_rows_total"


def infer(d, model, x):
    body = json.dumps({"inputs": [{
        "name": "x" if model == "moe" else "input",
        "shape": list(x.shape), "datatype": "FP32",
        "data": x.ravel().tolist()}]}).encode()
    st, _, data = d.post("/v2/models/%s/infer" % model, body=body,
                         headers={"Content-Type": "application/json"})
    js = json_body(data) or {}
    if st != 200:
        return st, js, None
    out = js["outputs"][0]
    return st, js, np.array(out["data"], np.float32).reshape(out["shape"])


def main():
    with open(os.path.join(CASE, "meta.json")) as f:
        meta = json.load(f)
    d = Daemon(["--admin-insecure"])
    repo.with_model(d.repository, "moe",
                    onnx=os.path.join(CASE, "model.onnx"),
                    config={"max_batch_size": 64})
    repo.with_model(d.repository, "mlp")
    with d:
        want = np.zeros(meta["E"])
        for b in (64, 7):
            with np.load(os.path.join(CASE, "batch%d.npz" % b)) as z:
                x = z["x"]
            with np.load(os.path.join(CASE, "expected%d.npz" % b)) as z:
                y = z["y"]
            st, js, got = infer(d, "moe", x)
            if not tap.eq(st, 200, "infer %d rows" % b):
                tap.diag(js)
                continue
            tap.ok(np.abs(got - y).max() <= 1e-4 * np.abs(y).max() + 1e-5,
                   "%d rows: outputs match PyTorch" % b,
                   "max diff %g" % np.abs(got - y).max())
            want += np.array(meta["loads"][str(b)])
            m = d.metrics()
            rows, where = {}, set()
            for (n, lv), v in m.items():
                lab = dict(lv)
                if n == NAME and lab.get("model") == "moe":
                    where.add((lab.get("version"), lab.get("layer")))
                    rows[int(lab["expert"])] = v
            tap.eq(where, {("1", "0")}, "series labels: version 1, layer 0")
            got_rows = [rows.get(e, 0) for e in range(meta["E"])]
            tap.eq(got_rows, want.tolist(),
                   "after %d rows: rows per expert = PyTorch's routing" % b)
            tap.ok(all(e in rows for e in range(meta["E"]) if want[e] > 0)
                   and all(e not in rows for e in range(meta["E"])
                           if want[e] == 0),
                   "a series for each expert with rows, none without",
                   rows)
        st, _, data = d.get("/admin/models/moe/versions", admin=True)
        vs = (json_body(data) or {}).get("versions", [])
        tap.eq([v.get("moe_expert_rows") for v in vs],
               [[want.astype(int).tolist()]],
               "admin view: the loaded version's rows per expert")
        x = np.zeros((3, 64), np.float32)
        st, _, _ = infer(d, "mlp", x)
        tap.eq(st, 200, "the MLP infers")
        st, _, data = d.get("/admin/models/mlp/versions", admin=True)
        tap.ok(st == 200 and all("moe_expert_rows" not in v for v in
                                 (json_body(data) or {}).get("versions",
                                                             [])),
               "admin view: no expert rows for a model without MoE", data)
        tap.eq(sum(1 for (n, lv) in d.metrics()
                   if n == NAME and dict(lv).get("model") == "mlp"), 0,
               "a model without MoE layers has no series")
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
