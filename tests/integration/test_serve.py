# SPDX-License-Identifier: Apache-2.0
"""Serving: KServe V2 inference, validation, metadata, repository, queue
limits, hot swap under load, activation surviving a restart."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
TOP_BUILD = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402

from paths import FIX, MLP  # noqa: E402
MLP_V2 = os.path.join(TOP_SRC, "tests", "integration", "data", "mlp_v2.onnx")
CNN = os.path.join(FIX, "cnn_op13", "model.onnx")
INFER = os.path.join(TOP_BUILD, "engine", "tools", "slimserve-infer")
ADMIN = ["--admin-insecure"]


def make_repo(root, models, configs=None):
    """models: {name: {version: onnx path}}."""
    for name, versions in models.items():
        for v, src in versions.items():
            d = os.path.join(root, name, str(v))
            os.makedirs(d, exist_ok=True)
            shutil.copy(src, os.path.join(d, "model.onnx"))
        if configs and name in configs:
            with open(os.path.join(root, name, "config.json"), "w") as f:
                json.dump(configs[name], f)
    return root


def cli_run(model, inputs):
    """Runs slimserve-infer; returns {output: ndarray}."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.npz")
        out = os.path.join(tmp, "out.npz")
        np.savez(inp, **inputs)
        p = subprocess.run([INFER, "--model", model, "--input", inp,
                            "--output", out], capture_output=True,
                           timeout=120)
        if p.returncode != 0:
            raise RuntimeError(p.stderr.decode())
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def mlp_inputs(n):
    with np.load(os.path.join(FIX, "mlp_op13", "batch64.npz")) as z:
        name = z.files[0]
        return {name: z[name][:n]}


def infer(d, model, body, headers=None, version=None, timeout=30):
    path = "/v2/models/%s%s/infer" % (
        model, "/versions/%s" % version if version else "")
    st, hd, data = d.post(path, body, headers=headers, timeout=timeout)
    return st, hd, data


def test_inference():
    tmp = tempfile.mkdtemp()
    repo = make_repo(os.path.join(tmp, "m"), {"mlp": {1: MLP}},
                     {"mlp": {"max_batch_size": 64}})
    with Daemon(ADMIN, repository=repo) as d:
        st, _, _ = d.get("/v2/health/ready")
        tap.eq(st, 200, "ready once the model is loaded")
        for n in (1, 7, 64):
            x = mlp_inputs(n)
            want = cli_run(MLP, x)
            st, hd, data = infer(d, "mlp", kserve.json_request(x, rid="r%d"
                                                               % n))
            tap.eq(st, 200, "JSON infer batch %d is 200" % n)
            head, outs = kserve.parse_response(data, hd)
            tap.eq(head.get("id"), "r%d" % n, "id is echoed")
            tap.eq(head.get("model_name"), "mlp", "model_name")
            tap.eq(head.get("model_version"), "1", "model_version")
            same = all(np.array_equal(outs[k], want[k]) for k in want)
            tap.ok(same, "JSON outputs equal slimserve-infer's exactly "
                   "(batch %d)" % n)
            body, hdrs = kserve.binary_request(x)
            st, hd, data = infer(d, "mlp", body, headers=hdrs)
            tap.eq(st, 200, "binary infer batch %d is 200" % n)
            _, outs = kserve.parse_response(data, hd)
            tap.ok(all(np.array_equal(outs[k], want[k]) for k in want),
                   "binary outputs equal slimserve-infer's exactly "
                   "(batch %d)" % n)
        # Version in the path, outputs selection.
        x = mlp_inputs(2)
        st, hd, data = infer(d, "mlp", kserve.json_request(x), version=1)
        tap.eq(st, 200, "explicit version 1")
        st, _, data = infer(d, "mlp", kserve.json_request(x), version=9)
        tap.eq(st, 404, "unknown version is 404")
        out_name = list(cli_run(MLP, x))[0]
        st, hd, data = infer(d, "mlp", kserve.json_request(
            x, outputs=[out_name]))
        tap.eq(st, 200, "selected output")
        st, _, data = infer(d, "mlp", kserve.json_request(
            x, outputs=["nope"]))
        tap.ok(st == 400 and b"nope" in data, "unknown output is 400", data)
        st, _, data = infer(d, "mlp", kserve.json_request(
            x, outputs=[out_name] * 70))
        tap.ok(st == 400 and (b"requested twice" in data or
                              b"outputs requested" in data),
               "an output requested 70 times is 400", data)
        st, _, _ = infer(d, "nosuch", kserve.json_request(x))
        tap.eq(st, 404, "unknown model is 404")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_validation():
    tmp = tempfile.mkdtemp()
    repo = make_repo(os.path.join(tmp, "m"), {"mlp": {1: MLP}},
                     {"mlp": {"max_batch_size": 8}})
    with Daemon(ADMIN, repository=repo) as d:
        st, _, data = d.get("/v2/models/mlp")
        meta = json_body(data) or {}
        iname = meta["inputs"][0]["name"]
        width = meta["inputs"][0]["shape"][1]
        good = [0.5] * width

        def req(inputs, **extra):
            body = {"inputs": inputs}
            body.update(extra)
            return json.dumps(body).encode()

        cases = [
            (req([{"name": "bogus", "shape": [1, width], "datatype": "FP32",
                   "data": good}]), "bogus", "unknown input"),
            (req([]), iname, "missing input"),
            (req([{"name": iname, "shape": [1, width], "datatype": "INT64",
                   "data": [1] * width}]), "datatype", "wrong datatype"),
            (req([{"name": iname, "shape": [1, width + 1],
                   "datatype": "FP32", "data": good + [1.0]}]), iname,
             "wrong shape"),
            (req([{"name": iname, "shape": [1, width], "datatype": "FP32",
                   "data": good[:-1]}]), iname, "element count"),
            (req([{"name": iname, "shape": [1, width], "datatype": "FP32",
                   "data": ["a"] * width}]), iname, "non-numeric data"),
            (req([{"name": iname, "shape": [9, width], "datatype": "FP32",
                   "data": good * 9}]), "max_batch_size", "batch over max"),
            (req([{"name": iname, "shape": [1, width], "datatype": "FP32"}]),
             iname, "no data"),
            (b"{not json", "", "malformed JSON"),
            (b"", "", "empty body"),
            (req([{"name": iname, "shape": [1, width], "datatype": "FP99",
                   "data": good}]), "FP99", "unknown datatype"),
        ]
        for body, needle, what in cases:
            st, _, data = infer(d, "mlp", body)
            err = (json_body(data) or {}).get("error", "")
            tap.ok(st == 400 and needle in err,
                   "400 for %s: %s" % (what, err), data[:200])
        # NaN passes through.
        st, _, data = infer(d, "mlp", req([{
            "name": iname, "shape": [1, width], "datatype": "FP32",
            "data": [float("nan")] * width}]).replace(b"NaN", b"NaN"))
        tap.eq(st, 200, "NaN input passes through")
        st, _, data = d.get("/metrics")
        tap.ok(b'result="bad_input"' in data, "bad inputs are counted")
        st, _, _ = d.get("/v2/health/live")
        tap.eq(st, 200, "alive after bad inputs")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_metadata_and_repository():
    tmp = tempfile.mkdtemp()
    repo = make_repo(os.path.join(tmp, "m"),
                     {"mlp": {1: MLP, 2: MLP_V2}, "cnn": {1: CNN}},
                     {"mlp": {"version_policy": {"all": {}},
                              "max_batch_size": 16,
                              "preferred_batch_sizes": [4, 8]}})
    os.makedirs(os.path.join(repo, "broken", "1"))
    with open(os.path.join(repo, "broken", "1", "model.onnx"), "wb") as f:
        f.write(b"this is not an onnx file")
    with Daemon(ADMIN, repository=repo) as d:
        st, _, data = d.get("/v2/models/mlp")
        meta = json_body(data) or {}
        tap.eq(st, 200, "model metadata")
        tap.eq(sorted(meta.get("versions", [])), ["1", "2"],
               "both versions loaded (policy all)")
        tap.eq(meta["inputs"][0]["shape"][0], -1, "batch dim is -1")
        tap.eq(meta["inputs"][0]["datatype"], "FP32", "input datatype")
        st, _, data = d.get("/v2/models/mlp/versions/1")
        tap.eq(st, 200, "version metadata")
        st, _, data = d.get("/v2/models/mlp/config")
        cfg = json_body(data) or {}
        tap.eq(cfg.get("max_batch_size"), 16, "config max_batch_size")
        tap.eq(cfg.get("input", [{}])[0].get("data_type"), "TYPE_FP32",
               "config input type")
        tap.eq(len(cfg.get("input", [{}])[0].get("dims", [])), 1,
               "config dims leave out the batch dim")
        tap.eq(cfg.get("dynamic_batching", {}).get("preferred_batch_size"),
               [4, 8], "config preferred sizes")
        lim = cfg.get("limits", {})
        tap.eq((lim.get("max_plan_bytes"), lim.get("max_queue_size"),
                lim.get("max_adapters")), (4 << 30, 1024, 256),
               "config limits resolve the defaults")
        st, _, data = d.get("/v2/models/mlp/ready")
        tap.eq(st, 200, "model ready")
        st, _, data = d.get("/v2/models/broken/ready")
        tap.eq(st, 503, "broken model is not ready")
        st, _, _ = d.get("/v2/health/ready")
        tap.eq(st, 503, "server not ready while a model failed to load")
        st, _, data = d.get("/v2")
        tap.ok("binary_tensor_data" in (json_body(data) or {}).get(
            "extensions", []), "extensions listed")

        st, _, data = d.post("/v2/repository/index", b"{}", admin=True)
        idx = json_body(data) or []
        states = {(e["name"], e.get("version")): e["state"] for e in idx}
        tap.eq(states.get(("mlp", "1")), "READY", "index: mlp 1 READY")
        tap.eq(states.get(("cnn", "1")), "READY", "index: cnn 1 READY")
        tap.eq(states.get(("broken", "1")), "UNAVAILABLE",
               "index: broken UNAVAILABLE")
        tap.ok(any(e["name"] == "broken" and "reason" in e for e in idx),
               "index gives the reason", idx)

        # Unload the broken one: the server becomes ready.
        st, _, data = d.post("/v2/repository/models/broken/unload", b"",
                             admin=True)
        tap.eq(st, 200, "unload broken")
        st, _, _ = d.get("/v2/health/ready")
        tap.eq(st, 200, "ready once the broken model is unloaded")
        st, _, data = d.post("/v2/repository/models/broken/load", b"",
                             admin=True)
        tap.ok(st == 400 and b"broken" in data, "loading a corrupt model "
               "is 400 with the reason", data)
        d.post("/v2/repository/models/broken/unload", b"", admin=True)

        st, _, _ = d.post("/v2/repository/models/cnn/unload", b"",
                          admin=True)
        tap.eq(st, 200, "unload cnn")
        st, _, _ = d.get("/v2/models/cnn/ready")
        tap.eq(st, 503, "unloaded model is not ready")
        x = {"input": np.zeros((1, 1, 8, 8), np.float32)}
        st, _, _ = infer(d, "cnn", kserve.json_request(x))
        tap.eq(st, 503, "inference on an unloaded model is 503")
        override = json.dumps({"max_batch_size": 4,
                               "max_plan_bytes": 8 << 20,
                               "max_response_bytes": 123456})
        st, _, data = d.post("/v2/repository/models/cnn/load",
                             {"parameters": {"config": override}},
                             admin=True)
        tap.eq(st, 200, "load cnn with a config override")
        st, _, data = d.get("/v2/models/cnn/config")
        cfg = json_body(data) or {}
        tap.eq(cfg.get("max_batch_size"), 4, "override applied")
        lim = cfg.get("limits", {})
        tap.eq((lim.get("max_plan_bytes"), lim.get("max_response_bytes")),
               (8 << 20, 123456), "the override's limits in the config")
        st, _, data = d.post("/v2/repository/models/cnn/load",
                             {"parameters": {"config": "{bad"}}, admin=True)
        tap.eq(st, 400, "bad override is 400")
        st, _, data = d.post("/v2/repository/models/nope/load", b"",
                             admin=True)
        tap.eq(st, 404, "loading an unknown model is 404")
        st, _, data = d.post("/v2/repository/models/cnn/load", b"",
                             admin=False)
        tap.eq(st, 404, "repository API is not on the data plane")
        st, _, data = d.get("/metrics")
        text = data.decode()
        for name in ("slimserve_model_active_version{model=\"mlp\"}",
                     "slimserve_model_memory_bytes",
                     "slimserve_model_resident_bytes{model=\"mlp\"",
                     "slimserve_inference_count_total",
                     "slimserve_execution_count_total",
                     "slimserve_queue_duration_seconds_bucket",
                     "slimserve_batch_size_bucket",
                     "slimserve_queue_depth"):
            tap.ok(name in text, "metrics have " + name)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=data,
                               capture_output=True, timeout=30)
            tap.ok(p.returncode == 0, "promtool accepts the model metrics",
                   p.stdout.decode() + p.stderr.decode())
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_queue_limits():
    tmp = tempfile.mkdtemp()
    # A long batching delay keeps the first request queued.
    repo = make_repo(os.path.join(tmp, "m"), {"slow": {1: MLP},
                                              "late": {1: MLP}},
                     {"slow": {"max_batch_size": 32,
                               "max_queue_delay_us": 1500000,
                               "queue": {"max_size": 1}},
                      "late": {"max_batch_size": 32,
                               "max_queue_delay_us": 400000,
                               "queue": {"timeout_ms": 50}}})
    with Daemon(ADMIN, repository=repo) as d:
        x = kserve.json_request(mlp_inputs(1))
        res = {}

        def first():
            res["first"] = infer(d, "slow", x)[0]

        t = threading.Thread(target=first)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        st, _, data = infer(d, "slow", x)
        took = time.monotonic() - t0
        tap.eq(st, 503, "a full queue answers 503")
        tap.ok(took < 0.5, "at once (%.3fs)" % took)
        t.join()
        tap.eq(res.get("first"), 200, "the queued request still succeeds")
        st, _, data = infer(d, "late", x)
        tap.eq(st, 504, "a request past its queue timeout answers 504")
        st, _, data = d.get("/metrics")
        tap.ok(b'result="queue_full"' in data and b'result="timeout"' in data,
               "queue_full and timeout are counted")
        tap.eq(d.stop(), 0, "clean exit")
    shutil.rmtree(tmp)


def test_hot_swap_under_load():
    tmp = tempfile.mkdtemp()
    repo = make_repo(os.path.join(tmp, "m"), {"mlp": {1: MLP, 2: MLP_V2}},
                     {"mlp": {"max_batch_size": 32,
                              "max_queue_delay_us": 500}})
    inputs = [mlp_inputs(64)]
    iname = list(inputs[0])[0]
    rows = [{iname: inputs[0][iname][i:i + 1]} for i in range(16)]
    want1 = [cli_run(MLP, r) for r in rows]
    want2 = [cli_run(MLP_V2, r) for r in rows]
    with Daemon(ADMIN, repository=repo) as d:
        stop = threading.Event()
        stats = {"ok": 0, "fail": 0, "v1": 0, "v2": 0, "bad": 0}
        lock = threading.Lock()
        bodies = [kserve.binary_request(r) for r in rows]

        def client(k):
            conn = http.client.HTTPConnection("127.0.0.1", d.http_port,
                                              timeout=20)
            i = k
            while not stop.is_set():
                body, hdrs = bodies[i % len(rows)]
                try:
                    conn.request("POST", "/v2/models/mlp/infer", body=body,
                                 headers=hdrs)
                    r = conn.getresponse()
                    data = r.read()
                    hd = dict(r.getheaders())
                except Exception:
                    with lock:
                        stats["fail"] += 1
                    conn.close()
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", d.http_port, timeout=20)
                    continue
                with lock:
                    if r.status != 200:
                        stats["fail"] += 1
                        continue
                    stats["ok"] += 1
                    _, outs = kserve.parse_response(data, hd)
                    j = i % len(rows)
                    is1 = all(np.allclose(outs[o], want1[j][o], rtol=1e-5,
                                          atol=1e-6) for o in want1[j])
                    is2 = all(np.allclose(outs[o], want2[j][o], rtol=1e-5,
                                          atol=1e-6) for o in want2[j])
                    stats["v1" if is1 else "v2" if is2 else "bad"] += 1
                i += 1
            conn.close()

        threads = [threading.Thread(target=client, args=(k,))
                   for k in range(32)]
        for t in threads:
            t.start()
        swaps_ok = 0
        t0 = time.monotonic()
        for k in range(20):
            time.sleep(0.4)
            v = 2 if k % 2 == 0 else 1
            st, _, data = d.post("/admin/models/mlp/versions/%d/activate" % v,
                                 b"", admin=True, timeout=60)
            swaps_ok += st == 200
        stop.set()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        tap.diag("hot swap: %d ok in %.1fs, v1 %d, v2 %d" % (
            stats["ok"], took, stats["v1"], stats["v2"]))
        tap.eq(swaps_ok, 20, "20 activations succeeded")
        tap.eq(stats["fail"], 0, "zero failed requests during 20 swaps")
        tap.eq(stats["bad"], 0, "every answer is version 1's or 2's")
        tap.ok(stats["v1"] > 0 and stats["v2"] > 0,
               "both versions answered", stats)
        tap.ok(stats["ok"] > 100, "the load was real (%d requests)"
               % stats["ok"])
        with open(os.path.join(repo, "mlp", "config.json")) as f:
            tap.eq(json.load(f).get("active_version"), 1,
                   "config.json holds the last activation")
        st, _, data = d.post("/admin/models/mlp/rollback", b"", admin=True)
        tap.eq(st, 200, "rollback")
        st, _, data = d.get("/admin/models/mlp/versions", admin=True)
        tap.eq((json_body(data) or {}).get("active_version"), 2,
               "rollback returns to version 2")
        st, _, data = d.post("/admin/models/mlp/versions/7/activate", b"",
                             admin=True)
        tap.eq(st, 404, "activating a missing version is 404")
        tap.eq(d.stop(), 0, "clean exit after swaps (no leak under ASan)")

    # A restart serves the version activated last.
    with Daemon(ADMIN, repository=repo) as d:
        st, hd, data = infer(d, "mlp", kserve.json_request(rows[0]))
        head, outs = kserve.parse_response(data, hd)
        tap.eq(head.get("model_version"), "2",
               "after a restart the activated version serves")
        tap.ok(all(np.allclose(outs[o], want2[0][o], rtol=1e-5, atol=1e-6)
                   for o in want2[0]), "with version 2's outputs")
        d.stop()
    shutil.rmtree(tmp)


def main():
    if not os.path.exists(INFER):
        tap.ok(False, "slimserve-infer is built")
        return tap.done()
    for t in (test_inference, test_validation, test_metadata_and_repository,
              test_queue_limits, test_hot_swap_under_load):
        tap.diag(t.__name__)
        try:
            t()
        except Exception as e:
            import traceback
            tap.ok(False, "%s raised %r" % (t.__name__, e),
                   traceback.format_exc())
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
