# SPDX-License-Identifier: Apache-2.0
"""MoEfication ({"method": "moefy"}) through the admin API.

On the FFN-heavy MLP (tests/fixtures/make_moefy.py): the job splits its
FFN into 8 experts with a trained router, within 2% of the source's
accuracy (0.6% measured); the variant's experts partition the source FFN's neurons
exactly (all experts summed = the dense FFN, checked in numpy from the
saved file); served, it runs sparse (rows per expert in the metrics sum to
k per row) and matches a numpy top-k reference and the dense graph
(SS_ENGINE_NO_MOE=1); the same seed gives the same file; moefy then bf16
serves sparse with bf16 experts, moefy then ptq with int8 experts that
give the dense QDQ graph's outputs.  On the
transformer fixture both encoder FFNs (3-D activations) become sparse
MoE layers.  A model without a dense FFN is left unchanged, the notes
say so and the job ends rejected; bad parameters are refused before a
job exists."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "engine"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import infer  # noqa: E402
import repo  # noqa: E402

FIX = repo.FIXTURES
FFN = os.path.join(FIX, "moefy", "ffn_mlp.onnx")
DIG = os.path.join(FIX, "digits")
ADMIN = ["--admin-insecure", "--job-threads=1"]
NAME = "slimserve_moe_expert_rows_total"
E, K = 8, 2

try:
    import onnx
    from onnx import numpy_helper
except ImportError:  # pragma: no cover - the CI image has it
    onnx = None


def submit(d, body, model="m"):
    st, _, data = d.post("/admin/models/%s/compress" % model, body,
                         admin=True)
    return st, json_body(data) or {}


def run_job(d, body, model="m"):
    st, js = submit(d, body, model)
    if st != 202:
        return {"state": "refused %d" % st, "error": js}
    return d.wait_job(js.get("job", 0), timeout=300)


def infer_rows(d, x, model="m"):
    body = json.dumps({"inputs": [{
        "name": "input", "shape": list(x.shape), "datatype": "FP32",
        "data": x.ravel().tolist()}]}).encode()
    st, _, data = d.post("/v2/models/%s/infer" % model, body=body,
                         headers={"Content-Type": "application/json"})
    js = json_body(data) or {}
    if st != 200:
        tap.diag(js)
        return st, None
    out = js["outputs"][0]
    return st, np.array(out["data"], np.float32).reshape(out["shape"])


def method_note(job):
    ms = ((job.get("result") or {}).get("details") or {}).get("methods")
    return ms[0] if ms else {}


def weights(path):
    m = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = {n.name: n for n in m.graph.node}
    return w, nodes


def gemm(x, w, b, node):
    tb = any(a.name == "transB" and a.i for a in node.attribute)
    y = x @ (w.T if tb else w)
    return y + b if b is not None else y


def check_variant(path, src_path, x, served):
    """The partition and the top-k computation, in numpy."""
    w, nodes = weights(path)
    sw, snodes = weights(src_path)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731

    def lin(name, v, ws=w, ns=nodes):
        n = ns[name]
        return gemm(v, ws[n.input[1]],
                    ws[n.input[2]] if len(n.input) > 2 else None, n)

    a = relu(lin("/inp/Gemm", x))
    p = "/ffn1/Gemm/moefy/"
    outs = [lin(p + "expert%d/fc2" % e,
                relu(lin(p + "expert%d/fc1" % e, a))) for e in range(E)]
    b2 = sw[snodes["/ffn2/Gemm"].input[2]]
    dense = relu(lin("/ffn1/Gemm", a, sw, snodes))
    dense = lin("/ffn2/Gemm", dense, sw, snodes)
    tot = sum(outs) + b2
    tap.ok(np.abs(tot - dense).max() <= 1e-4 * np.abs(dense).max(),
           "all 8 experts summed are the dense FFN (a partition of its "
           "neurons)", "max diff %g" % np.abs(tot - dense).max())
    sizes = [w[nodes[p + "expert%d/fc1" % e].input[1]].shape[0]
             for e in range(E)]
    tap.eq(sizes, [512 // E] * E, "balanced: 64 neurons per expert")
    logits = a @ w[p + "router.weight"] + w[p + "router.bias"]
    sel = np.argsort(-logits, axis=1, kind="stable")[:, :K]
    y = np.zeros_like(dense)
    for r in range(len(x)):
        for e in sel[r]:
            y[r] += outs[e][r]
    # B's bias plus the mean of what the skipped experts would add
    y += w[p + "bias"]
    tap.ok(0 < np.abs(w[p + "bias"] - b2).max() < np.abs(b2).max(),
           "the bias carries a (small) compensation",
           "max change %g" % np.abs(w[p + "bias"] - b2).max())
    want = lin("/head/Gemm", a + y)
    err = np.abs(served - want).max() / np.abs(want).max()
    tap.ok(err <= 1e-4, "served output = the numpy top-2 reference",
           "rel diff %g" % err)
    return sel


def cli_run(model, npz, out, dense):
    env = dict(os.environ)
    if dense:
        env["SS_ENGINE_NO_MOE"] = "1"
    else:
        env.pop("SS_ENGINE_NO_MOE", None)
    p = subprocess.run([infer.cli_path(), "--model", model, "--input", npz,
                        "--output", out], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    log = p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        return None, log
    with np.load(out) as z:
        return z[z.files[0]], log


def test_ffn_mlp(tmp):
    root = repo.with_model(os.path.join(tmp, "r1"), "m", onnx=FFN,
                           files={"calib.npz": os.path.join(
                                      DIG, "mlp_train.npz"),
                                  "val.npz": os.path.join(
                                      DIG, "mlp_heldout.npz")})
    body = {"methods": [{"method": "moefy",
                         "params": {"experts": E, "k": K, "seed": 0}}],
            "calibration": {"file": "calib.npz"},
            "validation": {"file": "val.npz"},
            "gate": {"max_accuracy_drop": 0.02}, "activate": True}
    with Daemon(ADMIN, repository=root) as d:
        job = run_job(d, body)
        if not tap.eq(job.get("state"), "succeeded", "moefy job succeeded "
                      "within 2% of the source's accuracy"):
            tap.diag(json.dumps(job)[:3000])
            return
        res = job["result"]
        src, var = res["source"], res["variant"]
        note = method_note(job)
        f = (note.get("ffns") or [{}])[0]
        mc = f.get("mass_captured", {})
        tap.diag("accuracy %.4f -> %.4f; b32 %.3f -> %.3f ms; mass %s; "
                 "router %s" % (src["accuracy"], var["accuracy"],
                                src["latency_ms"]["batch32"],
                                var["latency_ms"]["batch32"], mc,
                                f.get("router_training")))
        # 0.982 -> 0.976 here (seed 0); the 2% bound leaves room for
        # another ISA's rounding in the router's training
        tap.ok(var["accuracy"] >= src["accuracy"] * 0.98,
               "variant accuracy within 2% relative")
        tap.eq((note.get("moefied"), note.get("sparse_layers"),
                note.get("changed")), (1, 1, True),
               "one FFN split, compiled sparse, changed")
        tap.eq(f.get("layer"), "/ffn1/Gemm", "the FFN is ffn1 -> ffn2 "
               "(the costliest pair, not inp -> ffn1)")
        tap.ok(isinstance(f.get("router_training"), dict)
               and f["router_training"]["steps"] > 0
               and f["router_training"]["loss_last"]
               < f["router_training"]["loss_first"],
               "the router was trained (its loss fell)",
               f.get("router_training"))
        tap.ok(mc.get("router_trained", 0) >= mc.get("router_init", 1) - 0.01
               and mc.get("router_trained", 0) > 2 * mc.get("uniform", 1)
               and mc.get("router_trained", 2) <= mc.get("oracle", 0) + 1e-9,
               "trained router: uniform*2 < mass captured <= oracle", mc)
        v = res.get("version")
        with open(os.path.join(root, "m", str(v), "variant.json")) as fh:
            lineage = json.load(fh)
        tap.eq((lineage.get("parent_version"),
                [m.get("method") for m in lineage.get("methods", [])]),
               (1, ["moefy"]), "variant.json: parent 1, method moefy")
        with np.load(os.path.join(DIG, "mlp_heldout.npz")) as z:
            x = z["input"][:24]
        before = d.metric(NAME, model="m", version=str(v))
        st, served = infer_rows(d, x)
        tap.eq(st, 200, "the moefied version serves")
        rows = d.metric(NAME, model="m", version=str(v)) - before
        tap.eq(rows, len(x) * K, "it runs sparse: 2 expert rows per row "
               "in %s" % NAME)
        model = os.path.join(root, "m", str(v), "model.onnx")
        if onnx is None:
            tap.skip("needs python3-onnx", 4)
        elif served is not None:
            check_variant(model, FFN, x, served)
        with np.load(os.path.join(DIG, "mlp_heldout.npz")) as z:
            np.savez(os.path.join(tmp, "x.npz"), input=z["input"])
        sp, slog = cli_run(model, os.path.join(tmp, "x.npz"),
                           os.path.join(tmp, "s.npz"), False)
        dn, dlog = cli_run(model, os.path.join(tmp, "x.npz"),
                           os.path.join(tmp, "d.npz"), True)
        tap.ok(sp is not None and dn is not None and "top 2, sparse" in slog
               and np.abs(sp - dn).max() <= 1e-5 * np.abs(dn).max(),
               "500 rows: sparse = the dense mask graph within 1e-5",
               slog[-500:] + dlog[-500:])
        # the same seed again: the same file
        body["activate"] = False
        body["source_version"] = 1
        job2 = run_job(d, body)
        v2 = (job2.get("result") or {}).get("version")
        same = False
        if v2 is not None:
            with open(model, "rb") as a, \
                    open(os.path.join(root, "m", str(v2), "model.onnx"),
                         "rb") as b:
                same = a.read() == b.read()
        tap.ok(job2.get("state") == "succeeded" and same,
               "the same seed writes the same model bytes")
        # then bf16: the experts run in bf16 on the MoE step
        body["methods"] = [body["methods"][0], "bf16"]
        body["activate"] = True
        job3 = run_job(d, body)
        res3 = job3.get("result") or {}
        v3 = res3.get("version")
        tap.ok(job3.get("state") == "succeeded"
               and res3["variant"]["accuracy"]
               >= res3["source"]["accuracy"] * 0.98,
               "moefy then bf16: within 2%", res3.get("variant"))
        before = d.metric(NAME, model="m", version=str(v3))
        st, y3 = infer_rows(d, x)
        tap.ok(st == 200 and d.metric(NAME, model="m", version=str(v3))
               - before == len(x) * K,
               "moefy + bf16 serves sparse (2 expert rows per row)")
        if served is not None and y3 is not None:
            err = np.abs(y3 - served).max() / np.abs(served).max()
            tap.ok(err < 0.05, "bf16 outputs near the f32 variant's",
                   "rel diff %g" % err)
        # then int8: PTQ's QDQ experts run int8 on the MoE step
        body["methods"] = [body["methods"][0], "ptq"]
        body["activate"] = True
        job4 = run_job(d, body)
        res4 = job4.get("result") or {}
        v4 = res4.get("version")
        tap.ok(job4.get("state") == "succeeded"
               and res4["variant"]["accuracy"]
               >= res4["source"]["accuracy"] * 0.98,
               "moefy then ptq: within 2%", res4.get("variant"))
        before = d.metric(NAME, model="m", version=str(v4))
        st, _ = infer_rows(d, x)
        tap.ok(st == 200 and d.metric(NAME, model="m", version=str(v4))
               - before == len(x) * K,
               "moefy + ptq serves sparse (2 expert rows per row)")
        qmodel = os.path.join(root, "m", str(v4), "model.onnx")
        sp, slog = cli_run(qmodel, os.path.join(tmp, "x.npz"),
                           os.path.join(tmp, "qs.npz"), False)
        dn, dlog = cli_run(qmodel, os.path.join(tmp, "x.npz"),
                           os.path.join(tmp, "qd.npz"), True)
        tap.ok(sp is not None and dn is not None
               and "top 2, sparse, int8 layers" in slog
               and np.abs(sp - dn).max() <= 1e-5 * np.abs(dn).max(),
               "int8 experts on the step = the dense QDQ graph within 1e-5 "
               "(500 rows)", slog[-600:] + dlog[-300:])
        tap.eq(d.stop(), 0, "clean exit (FFN MLP)")


def test_transformer(tmp):
    root = repo.with_model(
        os.path.join(tmp, "r2"), "m",
        onnx=os.path.join(FIX, "transformer_op17", "model.onnx"),
        files={"calib.npz": os.path.join(DIG, "transformer_calib.npz"),
               "val.npz": os.path.join(DIG, "transformer_heldout.npz")})
    with Daemon(ADMIN, repository=root) as d:
        job = run_job(d, {"methods": [{"method": "moefy", "params": {
            "experts": 4, "k": 2, "epochs": 5}}],
            "calibration": {"file": "calib.npz"},
            "validation": {"file": "val.npz"}, "activate": False})
        note = method_note(job)
        res = job.get("result") or {}
        tap.eq((job.get("state"), note.get("moefied"),
                note.get("sparse_layers")), ("succeeded", 2, 2),
               "transformer: both encoder FFNs (3-D) split and sparse")
        tap.ok(all(isinstance(f.get("router_training"), dict)
                   for f in note.get("ffns", [])),
               "transformer: routers trained through the encoder (frozen)",
               note.get("ffns"))
        tap.ok(res.get("variant", {}).get("agreement", 0) >= 0.9,
               "transformer: top-1 agreement with the source >= 0.9",
               res.get("variant"))
        tap.eq(d.stop(), 0, "clean exit (transformer)")


def test_unchanged_and_bad(tmp):
    root = repo.with_model(
        os.path.join(tmp, "r3"), "m",
        onnx=os.path.join(FIX, "cnn_op13", "model.onnx"),
        files={"calib.npz": os.path.join(DIG, "cnn_calib.npz")})
    with Daemon(ADMIN, repository=root) as d:
        job = run_job(d, {"methods": ["moefy"],
                          "calibration": {"file": "calib.npz"},
                          "activate": False})
        note = method_note(job)
        tap.ok(job.get("state") == "rejected"
               and "moefy changed nothing" in job.get("error", "")
               and note.get("changed") is False
               and note.get("moefied") == 0
               and "unchanged" in note.get("note", ""),
               "a CNN (no dense FFN): unchanged, rejected, and the notes "
               "and the job's error say so", job)
        for params, what in (({"experts": 4, "k": 4}, "k must be below experts"),
                             ({"experts": 1}, "experts must be"),
                             ({"k": 0}, "k must be"),
                             ({"lr": 0}, "lr must be"),
                             ({"width": 2}, "width")):
            st, js = submit(d, {"methods": [{"method": "moefy",
                                             "params": params}],
                                "calibration": {"file": "calib.npz"}})
            tap.ok(st == 400 and what in json.dumps(js).replace("\\", ""),
                   "refused: moefy %s" % json.dumps(params), js)
        st, js = submit(d, {"methods": ["moefy"],
                            "validation": {"file": "calib.npz"}})
        tap.ok(st == 400 and "calibration" in json.dumps(js),
               "refused: moefy without calibration data", js)
        tap.eq(d.stop(), 0, "clean exit (CNN)")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_ffn_mlp(tmp)
        test_transformer(tmp)
        test_unchanged_and_bad(tmp)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
