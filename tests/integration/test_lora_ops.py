# SPDX-License-Identifier: Apache-2.0
"""LoRA adapters, operations (issue 14, docs/lora.md): PEFT's regex
target_modules, per-adapter metrics (Prometheus, promtool-checked), the
limits of a model's config.json (max_adapters, max_adapter_bytes)
refused with errors naming them, tapped plans warmed up at load, and a
replica that loads an adapter written into the repository."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "fixtures"))
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "integration"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
import repo as repolib  # noqa: E402

# test_lora skips the whole suite where python3-torch is missing.
from test_lora import (MLP17 as MLP, SHAPES, Ref, close, infer,  # noqa: E402
                       rand_mods, write_adapter)


def main():
    rng = np.random.default_rng(1414)
    tmp = tempfile.TemporaryDirectory(prefix="ss-lora-ops-")
    root = os.path.join(tmp.name, "models")
    # "all": batch 1, 4 and 8 compiled at load, tapped plans too
    repolib.with_model(root, "mlp", MLP, config={
        "warmup": "all", "max_batch_size": 8, "preferred_batch_sizes": [4]})
    # fc3 at r = 4: 4 x (64 + 10) floats = 1,184 bytes an adapter
    repolib.with_model(root, "lim", MLP, config={"max_adapters": 2})
    repolib.with_model(root, "limb", MLP, config={"max_adapter_bytes": 2000})
    mdir = os.path.join(root, "mlp")
    ref = Ref("mlp")
    mods = rand_mods(rng, {m: SHAPES[m] for m in ("fc1", "fc2")}, 8)
    write_adapter(mdir, "re", 8, 16, mods, targets="fc[12]")
    ref.add("re", 8, 16, mods)
    write_adapter(mdir, "re_bad", 4, 8, rand_mods(rng, {"fc1": SHAPES["fc1"]},
                                                  4), targets="fc[23]")
    for name in ("p0", "p1"):
        mods = rand_mods(rng, {"fc3": SHAPES["fc3"]}, 4)
        write_adapter(mdir, name, 4, 8, mods)
        ref.add(name, 4, 8, mods)
    for model, names in (("lim", ("l0", "l1", "l2")), ("limb", ("b0", "b1"))):
        for name in names:
            write_adapter(os.path.join(root, model), name, 4, 8,
                          rand_mods(rng, {"fc3": SHAPES["fc3"]}, 4))

    with Daemon(["--admin-insecure"], repository=root) as d:
        tap.ok(d.get("/v2/models/mlp/ready")[0] == 200,
               "tapped plans warmed up at load (warmup \"all\"): ready")
        x = (rng.integers(0, 17, (2, 64)) / 16).astype(np.float32)
        st, got = infer(d, "mlp", x, "input", "re")
        ok, err = close(got, ref.run(x, "re")) if st == 200 else (False, -1)
        tap.ok(ok, "target_modules \"fc[12]\" (a regular expression, "
               "PEFT's fullmatch): PyTorch's outputs (max err %.2g)" % err)
        tap.ok("adapter 're_bad'" in d.logs()
               and "not in target_modules" in d.logs(),
               "a module outside the regular expression is refused")

        for _ in range(3):
            infer(d, "mlp", x, "input", "re")
        x5 = (rng.integers(0, 17, (5, 64)) / 16).astype(np.float32)
        infer(d, "mlp", x5, "input", "p0", binary=True)
        infer(d, "mlp", x, "input")
        m = d.metrics()

        def val(name, **labels):
            return sum(v for (n, lv), v in m.items() if n == name and all(
                (k, str(x)) in lv for k, x in labels.items()))
        got = (val("slimserve_adapter_requests_total", model="mlp",
                   adapter="re"),
               val("slimserve_adapter_samples_total", model="mlp",
                   adapter="re"),
               val("slimserve_adapter_requests_total", model="mlp",
                   adapter="p0"),
               val("slimserve_adapter_samples_total", model="mlp",
                   adapter="p0"))
        tap.ok(got == (4, 8, 1, 5), "requests and samples per adapter: "
               "re 4 and 8, p0 1 and 5 (%s)" % (got,))
        st, _, data = d.get("/admin/models/mlp/adapters", admin=True)
        listed = json.loads(data) if st == 200 else {"adapters": []}
        total = sum(a["bytes"] for a in listed["adapters"])
        got = (val("slimserve_adapters_loaded", model="mlp", version="1"),
               val("slimserve_adapters_bytes", model="mlp", version="1"))
        tap.ok(got == (3, total), "adapters loaded 3 and their bytes %d (%s)"
               % (total, got))
        d.post("/admin/models/mlp/adapters/p1/unload", admin=True)
        m = d.metrics()
        p1 = [a["bytes"] for a in listed["adapters"] if a["name"] == "p1"]
        got = (val("slimserve_adapters_loaded", model="mlp", version="1"),
               val("slimserve_adapters_bytes", model="mlp", version="1"))
        tap.ok(p1 and got == (2, total - p1[0]),
               "after an unload: 2 loaded, %s bytes (%s)"
               % (total - p1[0] if p1 else "?", got))
        promtool = shutil.which("promtool")
        if promtool is None:
            tap.skip("promtool is not installed")
        else:
            _, _, body = d.get("/metrics")
            p = subprocess.run([promtool, "check", "metrics"], input=body,
                               capture_output=True, timeout=30)
            tap.ok(p.returncode == 0, "promtool check metrics: %s"
                   % (p.stdout + p.stderr).decode()[:300])

        st, _, data = d.get("/admin/models/lim/adapters", admin=True)
        names = [a["name"] for a in json.loads(data)["adapters"]] \
            if st == 200 else []
        tap.ok(len(names) == 2, "max_adapters 2: two of three adapters "
               "loaded at start (%s)" % names)
        third = ({"l0", "l1", "l2"} - set(names) or {"l2"}).pop()
        st, _, data = d.post("/admin/models/lim/adapters/%s/load" % third,
                             admin=True)
        tap.ok(st != 200 and b"max_adapters 2" in data,
               "loading a third is refused naming max_adapters (%d %s)"
               % (st, data[:160]))
        st, _, data = d.post("/admin/models/lim/adapters/%s/load"
                             % names[0], admin=True) if names else (0, 0, b"")
        tap.ok(st == 200, "replacing a loaded one stays within the limit "
               "(%d)" % st)
        st, _, data = d.get("/admin/models/limb/adapters", admin=True)
        names = [a["name"] for a in json.loads(data)["adapters"]] \
            if st == 200 else []
        tap.ok(len(names) == 1, "max_adapter_bytes 2000: one adapter of "
               "1,184 bytes fits, not two (%s)" % names)
        other = ({"b0", "b1"} - set(names) or {"b1"}).pop()
        st, _, data = d.post("/admin/models/limb/adapters/%s/load" % other,
                             admin=True)
        tap.ok(st != 200 and b"max_adapter_bytes 2000" in data,
               "loading the other is refused naming max_adapter_bytes "
               "(%d %s)" % (st, data[:200]))

        # A replica polling the repository loads an adapter the primary's
        # job (here: a rename, as jobs publish) wrote.
        with Daemon(["--admin-insecure", "--role=replica",
                     "--repository-poll-s=0.2",
                     "--primary-url=http://127.0.0.1:%d" % d.admin_port],
                    repository=root) as rd:
            mods = rand_mods(rng, {"fc1": SHAPES["fc1"]}, 2)
            write_adapter(mdir, ".tmp-late", 2, 4, mods, targets=["fc1"])
            os.rename(os.path.join(mdir, "adapters", ".tmp-late"),
                      os.path.join(mdir, "adapters", "late"))
            ref.add("late", 2, 4, mods)
            deadline, names = time.monotonic() + 20, []
            while time.monotonic() < deadline and "late" not in names:
                st, _, data = rd.get("/admin/models/mlp/adapters",
                                     admin=True)
                names = [a["name"] for a in json.loads(data)["adapters"]] \
                    if st == 200 else []
                time.sleep(0.1)
            tap.ok("late" in names, "the replica loads an adapter written "
                   "into the repository (%s)" % names)
            st, got = infer(rd, "mlp", x, "input", "late")
            ok, err = close(got, ref.run(x, "late")) if st == 200 \
                else (False, -1)
            tap.ok(ok, "and serves it: PyTorch's outputs (max err %.2g)"
                   % err)
    tmp.cleanup()
    tap.done()


main()
