#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""slimserve-ctl against a real daemon (issue 17).

Every command's output and exit code: status, models, versions (the
lineage tree after two jobs), compress --follow without a TTY (plain
lines, a summary, exit 0), under a pseudo-terminal (script(1): the bar
redrawn in place) and under tmux (capture-pane: the bar advances on one
line through a training job), jobs, job, activate (the data plane then serves that
version), rollback, cancel of a finished job (1, the server's 409),
unknown model (1, 404), no server (3), usage errors (2), --json (parses),
the token from a file and from the environment (401 without), and HTTPS
with --cacert.
"""

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

TOP_SRC = os.environ.get("top_srcdir", ".")
TOP_BUILD = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

import numpy as np  # noqa: E402

CTL = os.path.join(TOP_BUILD, "server", "slimserve-ctl")
from paths import CALIB, HELD  # noqa: E402
TOKEN = "ctl-test-token-0123456789abcdef"


def ctl(d, *args, env=None, url=None, timeout=120):
    e = dict(os.environ)
    for k in ("SLIMSERVE_ADMIN_URL", "SLIMSERVE_ADMIN_TOKEN",
              "SLIMSERVE_ADMIN_TOKEN_FILE"):
        e.pop(k, None)
    e.update(env or {})
    argv = [CTL, "--url", url or "http://127.0.0.1:%d" % d.admin_port]
    r = subprocess.run(argv + list(args), capture_output=True, text=True,
                       timeout=timeout, env=e)
    return r.returncode, r.stdout, r.stderr


def write_adapter(model_dir, name, r=2):
    """A PEFT adapter on fc1 ([128, 64]) in safetensors, by hand."""
    d = os.path.join(model_dir, "adapters", name)
    os.makedirs(d)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"r": r, "lora_alpha": 2 * r, "target_modules": ["fc1"],
                   "lora_dropout": 0.0, "fan_in_fan_out": False,
                   "bias": "none"}, f)
    rng = np.random.default_rng(0)
    tensors = [("base_model.model.fc1.lora_A.weight",
                rng.standard_normal((r, 64)).astype(np.float32)),
               ("base_model.model.fc1.lora_B.weight",
                rng.standard_normal((128, r)).astype(np.float32))]
    hdr, data = {}, b""
    for n, a in tensors:
        raw = a.tobytes()
        hdr[n] = {"dtype": "F32", "shape": list(a.shape),
                  "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def served_version(d):
    with np.load(HELD) as z:
        x = {"input": z["input"][:2]}
    st, hd, data = d.post("/v2/models/mlp/infer", kserve.json_request(x))
    return (json_body(data) or {}).get("model_version")


def test_commands(d, tf):
    rc, out, err = ctl(d, "status")
    tap.ok(rc == 1 and "401" in err, "no token: 1 and the server's 401",
           (rc, err))
    auth = ["--token-file", tf]
    rc, out, err = ctl(d, *auth, "status")
    tap.ok(rc == 0 and "slimserve" in out and "primary" in out and
           "ready" in out, "status with --token-file", (rc, out, err))
    rc, out, err = ctl(d, "status", env={"SLIMSERVE_ADMIN_TOKEN": TOKEN})
    tap.eq(rc, 0, "status with $SLIMSERVE_ADMIN_TOKEN")
    env = {"SLIMSERVE_ADMIN_TOKEN_FILE": tf}
    rc, out, err = ctl(d, "models", env=env)
    lines = out.splitlines()
    tap.ok(rc == 0 and lines[0].split()[:3] == ["MODEL", "VERSION", "STATE"]
           and any(l.split()[:3] == ["mlp", "1", "READY"] for l in lines),
           "models lists mlp 1 READY", out)
    rc, out, err = ctl(d, "--json", "models", env=env)
    tap.ok(rc == 0 and json.loads(out)[0]["name"] == "mlp",
           "--json models is the server's JSON")

    # Two jobs: PTQ, followed without a TTY; a structured prune.
    rc, out, err = ctl(d, "compress", "mlp", "--method", "ptq",
                       "--calibration", "calib.npz", "--validation",
                       "val.npz", "--follow", env=env)
    lines = out.splitlines()
    tap.ok(rc == 0 and lines and lines[-1].startswith("job 1 succeeded: "
                                                      "version 2") and
           "accuracy" in lines[-1] and "\r" not in out and
           all(l.startswith("job 1") for l in lines),
           "compress --follow without a TTY: plain lines, then the summary",
           out + err)
    rc, out, err = ctl(d, "compress", "mlp", "--method", "prune", "--param",
                       "kind=structured", "--param", "sparsity=0.3",
                       "--calibration", "calib.npz", "--validation",
                       "val.npz", "--max-accuracy-drop", "0.2", env=env)
    tap.ok(rc == 0 and out.strip() == "job 2 queued",
           "compress without --follow prints the job", (rc, out, err))
    rc, out, err = ctl(d, "job", "2", "--follow", env=env)
    tap.ok(rc == 0 and "job 2 succeeded: version 3" in out,
           "job 2 --follow", out + err)
    rc, out, err = ctl(d, "jobs", env=env)
    rows = [l.split() for l in out.splitlines()[1:]]
    tap.ok(rc == 0 and sorted(r[0] for r in rows) == ["1", "2"] and
           all(r[2] == "succeeded" for r in rows), "jobs lists both", out)
    rc, out, err = ctl(d, "versions", "mlp", env=env)
    lines = out.splitlines()
    tap.ok(rc == 0 and "active version 1" in lines[0] and
           lines[2].split()[:3] == ["1", "*", "(original)"] and
           lines[3].split()[:2] == ["`-2", "ptq"] and
           lines[4].split()[:2] == ["`-3", "prune"] and
           all("%" in l and "KiB" in l for l in lines[2:5]),
           "versions: a lineage tree with accuracy, latency and size", out)
    rc, out, err = ctl(d, "--json", "versions", "mlp", env=env)
    js = json.loads(out) if rc == 0 else {}
    tap.eq([v["version"] for v in js.get("versions", [])], [1, 2, 3],
           "--json versions")

    rc, out, err = ctl(d, "activate", "mlp", "3", env=env)
    tap.ok(rc == 0 and out.strip() == "activated" and
           served_version(d) == "3", "activate: the data plane serves 3",
           (rc, out, err))
    rc, out, err = ctl(d, "rollback", "mlp", env=env)
    tap.ok(rc == 0 and served_version(d) == "1", "rollback: serves 1 again",
           (rc, out, err))
    rc, out, err = ctl(d, "cancel", "1", env=env)
    tap.ok(rc == 1 and "409" in err, "cancel of a finished job: 1, the "
           "server's 409", (rc, err))
    rc, out, err = ctl(d, "adapters", "mlp", env=env)
    rows = [l.split() for l in out.splitlines()]
    tap.ok(rc == 0 and rows[0][:3] == ["ADAPTER", "RANK", "ALPHA"] and
           rows[1][:3] == ["tenant-a", "2", "4"] and rows[1][-1] == "fc1",
           "adapters lists the model's LoRA adapter", out + err)
    rc, out, err = ctl(d, "versions", "nosuch", env=env)
    tap.ok(rc == 1 and "404" in err and "nosuch" in err,
           "unknown model: 1 and the server's message", (rc, err))
    rc, out, err = ctl(d, "activate", "mlp", "x", env=env)
    tap.eq(rc, 2, "activate with a bad version: usage (2)")
    rc, out, err = ctl(d, "frobnicate", env=env)
    tap.ok(rc == 2 and "unknown command" in err, "unknown command: 2")
    rc, out, err = ctl(d, "compress", "mlp", "--param", "k=v", env=env)
    tap.eq(rc, 2, "--param before any --method: 2")
    rc, out, err = ctl(d, "status", url="http://127.0.0.1:1")
    tap.ok(rc == 3 and "cannot connect" in err, "no server: 3", (rc, err))

    # Under a terminal: the bar is redrawn in place.
    if shutil.which("script") is None:
        tap.skip("script(1) is not installed")
    else:
        cmd = " ".join([CTL, "--url", "http://127.0.0.1:%d" % d.admin_port,
                        "--token-file", tf, "compress", "mlp", "--method",
                        "bf16", "--validation", "val.npz", "--follow"])
        # Bytes: text mode would turn the bar's \r into newlines.
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"],
                           capture_output=True, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        tap.ok(r.returncode == 0 and
               re.search(r"\r\x1b\[Kjob 3 \[[#-]{30}\] +\d+%", out) and
               "\r\x1b[Kjob 3 succeeded" in out,
               "compress --follow on a terminal draws a bar in place",
               repr(out[-400:]))

    # Under tmux, as an operator sees it: the bar advances in place on one
    # screen line while a training job runs, and the command exits 0.  The
    # CLI polls every 200 ms: the job must last a few polls (20 epochs
    # ended within one on a quiet machine).
    if shutil.which("tmux") is None:
        tap.skip("tmux is not installed")
        return
    follow_in_tmux(d, tf)


def follow_in_tmux(d, tf):
    work = tempfile.mkdtemp(prefix="ss-tmux-")
    sock = os.path.join(work, "sock")
    cmd = " ".join(shlex.quote(a) for a in [
        CTL, "--url", "http://127.0.0.1:%d" % d.admin_port, "--token-file",
        tf, "compress", "mlp", "--method", "finetune", "--param",
        "epochs=150", "--param", "batch_size=8", "--training", "val.npz",
        "--validation", "val.npz", "--follow"])
    tmux = ["tmux", "-S", sock, "-f", "/dev/null"]
    subprocess.run(tmux + ["new-session", "-d", "-x", "100", "-y", "12",
                           "sh", "-c", cmd + "; echo EXIT=$?; sleep 60"],
                   check=True, timeout=30)
    seen, one_line, screen = [], True, ""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            r = subprocess.run(tmux + ["capture-pane", "-p"],
                               capture_output=True, text=True, timeout=30)
            screen = r.stdout
            bars = re.findall(r"job \d+ \[[#-]{30}\] +(\d+)%", screen)
            one_line = one_line and len(bars) <= 1
            if bars and (not seen or seen[-1] != int(bars[0])):
                seen.append(int(bars[0]))
            if "EXIT=" in screen:
                break
            time.sleep(0.05)
    finally:
        subprocess.run(tmux + ["kill-server"], timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    tap.ok(len(seen) >= 2 and seen == sorted(seen) and one_line,
           "under tmux the bar advances in place on one line (%s)"
           % seen[:12], screen)
    tap.ok("EXIT=0" in screen and re.search(r"job \d+ succeeded", screen),
           "and the follow ends with the job succeeded, exit 0", screen)


def test_https(tmp):
    certs = os.path.join(tmp, "certs")
    os.makedirs(certs)
    with open(os.path.join(certs, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(  # noqa: E731
        ["openssl"] + list(a), cwd=certs, check=True, timeout=60,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=ctl test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
        "-out", "s.csr", "-subj", "/CN=ctl test")
    run("x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "7", "-days", "2", "-extfile", "ext.cnf", "-out",
        "cert.pem")
    root = repo.with_model(os.path.join(tmp, "tls-models"))
    with Daemon(["--admin-insecure",
                 "--admin-tls-cert-file=" + os.path.join(certs, "cert.pem"),
                 "--admin-tls-key-file=" + os.path.join(certs, "key.pem")],
                repository=root) as d:
        url = "https://127.0.0.1:%d" % d.admin_port
        rc, out, err = ctl(d, "--cacert", os.path.join(certs, "ca.pem"),
                           "status", url=url)
        tap.ok(rc == 0 and "slimserve" in out, "https with --cacert",
               (rc, out, err))
        rc, out, err = ctl(d, "status", url=url)
        tap.ok(rc == 3 and "TLS" in err, "https without the CA: 3, a "
               "certificate error", (rc, err))


def main():
    tmp = tempfile.mkdtemp(prefix="ss-ctl-")
    tf = repo.token_file(tmp, TOKEN)
    root = repo.with_model(os.path.join(tmp, "models"),
                           files={"calib.npz": CALIB, "val.npz": HELD},
                           config={"version_policy": {"all": {}}})
    write_adapter(os.path.join(root, "mlp"), "tenant-a")
    with Daemon(["--admin-token-file=" + tf, "--job-threads=1"],
                repository=root) as d:
        d.admin_token = TOKEN
        test_commands(d, tf)
    test_https(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
