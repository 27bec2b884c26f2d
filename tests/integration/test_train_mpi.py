# SPDX-License-Identifier: Apache-2.0
"""Data-parallel slimserve-train under mpirun (issue 16): 2 processes on
loopback train the digits MLP (structured pruning 50%, then 20 finetune
steps of a global batch of 32, labels, KD loss) to the weights and
losses of 1 process within float summation order (max |dw| <= 1e-5,
loss within 1e-6 relative), for SGD and AdamW, through the
shared-memory window (the default on one machine) and, for AdamW, through
MPI's collectives (SS_TRAIN_MPI_PATH=coll: the same bytes); each process
holds the optimizer state of its half of the parameters only; a process killed
mid-run makes the run fail quickly with no version written; bad jobs
fail on every process with one clear reason.  The daemon hands a job
to mpirun ("workers": {"mpirun": [...]}): the variant it activates is the
one 2 processes train offline; bad "workers" are 400 at submit; cancel
ends the run with nothing written.

Skipped (TAP skip, with the reason) only when slimserve-train was built
without MPI or mpirun is missing: scripts/install-deps.sh installs
OpenMPI, so CI runs it."""

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
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402

TRAIN_BIN = os.path.join(os.environ.get("top_builddir", "."), "server",
                         "slimserve-train")
from paths import FIX  # noqa: E402
DIGITS = os.path.join(FIX, "digits")
# Loopback only; no core binding: the machine is shared and a rank bound
# to a busy core would wait for it.
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe",
          "--bind-to", "none", "--mca", "btl", "self,vader,tcp",
          "--mca", "btl_tcp_if_include", "lo",
          "--mca", "oob_tcp_if_include", "lo"]
# Under ASan, leak checking is off for the processes mpirun starts: Open
# MPI keeps allocations to its exit in components it dlopen()s and
# unloads, whose frames LSan can neither name nor suppress.  Memory
# errors are still caught there, and the 1-process runs (no MPI_Init)
# keep leak checking on the same training code.
MPI_ENV = dict(os.environ, ASAN_OPTIONS=os.environ.get(
    "ASAN_OPTIONS", "").replace("detect_leaks=1", "detect_leaks=0"))
TOL_W = 1e-5
# Clipping at 0.5 clips these steps: the global norm is summed from the
# processes' slices.
ADAMW = {"name": "adamw", "lr": 0.002, "clip_norm": 0.5}
TOL_LOSS = 1e-6


def make_model(root, name="mlp"):
    """The MLP with 640 labelled training rows (20 steps of 32) and the
    500 held-out digits for validation."""
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(os.path.join(FIX, "mlp_op13", "model.onnx"),
                os.path.join(d, "1", "model.onnx"))
    shutil.copy(os.path.join(DIGITS, "mlp_heldout.npz"),
                os.path.join(d, "val.npz"))
    with np.load(os.path.join(DIGITS, "mlp_train.npz")) as z:
        np.savez(os.path.join(d, "train.npz"), input=z["input"][:640],
                 labels=z["labels"][:640])
    return d


def job(opt, epochs=1, batch=32, train=True):
    methods = [{"method": "prune", "params": {"kind": "structured",
                                              "sparsity": 0.5}}]
    if train:
        methods.append({"method": "finetune", "params": {
            "epochs": epochs, "batch_size": batch, "seed": 7,
            "optimizer": opt}})
    return {"methods": methods, "training": {"file": "train.npz"},
            "validation": {"file": "val.npz"},
            "gate": {"min_agreement": 0.5}}


def run(tmp, body, mdir, np_=0, timeout=120, argv=None, path=None):
    """slimserve-train on mdir, alone (np_ 0) or under mpirun -np np_
    (path: SS_TRAIN_MPI_PATH for the processes):
    (exit status, result JSON or {}, stderr, seconds)."""
    p = os.path.join(tmp, "job-%d.json" % time.monotonic_ns())
    with open(p, "w") as f:
        json.dump(body, f)
    cmd = argv or [TRAIN_BIN, p, "--model-dir", mdir]
    env = None
    if np_:
        cmd = MPIRUN + ["-np", str(np_)] + cmd
        env = dict(MPI_ENV)
        env.pop("SS_TRAIN_MPI_PATH", None)
        if path is not None:
            env["SS_TRAIN_MPI_PATH"] = path
    else:
        cmd = cmd + ["--threads", "1"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired:
        return -999, {}, "timed out", time.monotonic() - t0
    out = r.stdout.decode()
    try:
        res = json.loads(out) if out.strip() else {}
    except ValueError:
        res = {}
    return r.returncode, res, r.stderr.decode(), time.monotonic() - t0


def weights(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64)
            for i in m.graph.initializer}


def max_diff(a, b):
    if sorted(a) != sorted(b):
        return float("inf")
    return max((float(np.abs(a[k] - b[k]).max()) if a[k].size else 0.0)
               for k in a)


def training(res):
    for m in (res.get("details") or {}).get("methods") or []:
        if "training" in m:
            return m["training"]
    return {}


def versions(mdir):
    return sorted(n for n in os.listdir(mdir) if n.isdigit())


def temps(mdir):
    return [n for n in os.listdir(mdir) if n.startswith(".slimserve-tmp")]


def test_parity(tmp, name, opt):
    """20 steps: 2 processes against 1, and both against the start."""
    one = make_model(os.path.join(tmp, name), "one")
    two = make_model(os.path.join(tmp, name), "two")
    start = make_model(os.path.join(tmp, name), "start")
    rc, res0, err, _ = run(tmp, job(opt, train=False), start)
    tap.eq(rc, 0, "%s: prune alone, the start (%s)" % (name, err[-200:]))
    rc, res1, err, s1 = run(tmp, job(opt), one)
    tap.eq(rc, 0, "%s: 1 process (%s)" % (name, err[-200:]))
    rc, res2, err2, s2 = run(tmp, job(opt), two, np_=2)
    tap.eq(rc, 0, "%s: mpirun -np 2 (%s)" % (name, err2[-300:]))
    t1, t2 = training(res1), training(res2)
    tap.eq((t1.get("steps"), t2.get("steps")), (20, 20),
           "%s: 20 steps of the global batch of 32 each" % name)
    dp = t2.get("data_parallel") or {}
    tap.eq((dp.get("processes"), dp.get("rows_per_step")), (2, 16),
           "%s: 2 processes, 16 rows of each batch each" % name)
    try:
        w0 = weights(os.path.join(start, "2", "model.onnx"))
        w1 = weights(os.path.join(one, "2", "model.onnx"))
        w2 = weights(os.path.join(two, "2", "model.onnx"))
    except Exception as e:  # noqa: BLE001 -- reported as a failure
        tap.ok(False, "%s: the written versions load (%s)" % (name, e))
        return
    moved, d = max_diff(w1, w0), max_diff(w1, w2)
    tap.diag("%s: training moved the weights by up to %.3g; 2 processes "
             "vs 1: max |dw| %.3g; %.2f s vs %.2f s (whole runs)"
             % (name, moved, d, s2, s1))
    tap.ok(moved > 100 * TOL_W, "%s: the weights moved (%.3g) far beyond "
           "the tolerance" % (name, moved))
    tap.ok(d <= TOL_W, "%s: 2-process weights equal 1-process weights "
           "within %g (max |dw| %.3g)" % (name, TOL_W, d))
    l1 = [h.get("loss") for h in t1.get("history") or []]
    l2 = [h.get("loss") for h in t2.get("history") or []]
    tap.ok(len(l1) == len(l2) == 1 and l1[0] > 0
           and abs(l1[0] - l2[0]) <= TOL_LOSS * l1[0],
           "%s: the mean loss of the 20 steps agrees within %g relative "
           "(%r vs %r)" % (name, TOL_LOSS, l1, l2))
    a1 = (res1.get("variant") or {}).get("accuracy")
    a2 = (res2.get("variant") or {}).get("accuracy")
    tap.ok(a1 is not None and a1 == a2, "%s: the same held-out accuracy "
           "(%r vs %r)" % (name, a1, a2))
    tap.eq(err2.count("version 2 written"), 1, "%s: one process wrote "
           "the version" % name)
    # One machine: the shared-memory window, said in the result, in the
    # job's log and on the progress line.
    tap.ok(dp.get("path") == "shm"
           and "data parallel over 2 processes: shared-memory window"
           in err2 and "[mpi: shared memory]" in err2,
           "%s: the processes on one machine share memory (path %r; %s)"
           % (name, dp.get("path"), [ln for ln in err2.splitlines()
                                     if "data parallel" in ln][:1]))
    return t2, err2, os.path.join(two, "2", "model.onnx"), w1, w2


def test_collective(tmp, name, opt, w1, w_shm):
    """SS_TRAIN_MPI_PATH=coll: MPI_Reduce_scatter + MPI_Allgatherv give
    the 1-process weights too, and for 2 processes the same bytes as
    the shared-memory path (each element is the same sum of 2 floats);
    a bad value is refused before any process trains."""
    d = make_model(os.path.join(tmp, name + "-coll"), "coll")
    rc, res, err, _ = run(tmp, job(opt), d, np_=2, path="coll")
    tap.eq(rc, 0, "%s, collectives: mpirun -np 2 (%s)" % (name, err[-300:]))
    dp = training(res).get("data_parallel") or {}
    tap.ok(dp.get("path") == "coll" and "MPI collectives "
           "(SS_TRAIN_MPI_PATH=coll)" in err and "[mpi: collectives]" in err,
           "%s: SS_TRAIN_MPI_PATH=coll takes the collectives (path %r)"
           % (name, dp.get("path")))
    try:
        wc = weights(os.path.join(d, "2", "model.onnx"))
    except Exception as e:  # noqa: BLE001 -- reported as a failure
        tap.ok(False, "%s, collectives: the version loads (%s)" % (name, e))
        return
    d1, ds = max_diff(w1, wc), max_diff(w_shm, wc)
    tap.ok(d1 <= TOL_W, "%s, collectives: 1-process weights within %g "
           "(max |dw| %.3g)" % (name, TOL_W, d1))
    tap.ok(ds == 0, "%s: the collective and shared-memory paths give the "
           "same weights (max |dw| %.3g)" % (name, ds))
    rc, res, err, secs = run(tmp, job(opt), d, np_=2, path="fast")
    tap.ok(rc == 2 and "SS_TRAIN_MPI_PATH is 'fast'" in err and secs < 30,
           "SS_TRAIN_MPI_PATH=fast: exit 2 naming it (exit %d, %.1f s)"
           % (rc, secs))
    tap.eq(versions(d), ["1", "2"], "and nothing written by it")


def test_state_split(t2, err2):
    """ZeRO-1: each process holds AdamW's two floats for its slice only:
    slices disjoint, covering every parameter, each half of the state one
    process holds."""
    dp = t2.get("data_parallel") or {}
    n = dp.get("flat_params", 0)
    full = 2 * 4 * n
    shares = {0: (dp.get("slice") or [0, 0], dp.get("optimizer_state_bytes"))}
    for line in err2.splitlines():
        # "process 1/2: 16 rows a step, optimizer state B bytes for
        # parameters [lo, hi) of N"
        if "optimizer state" in line and "process " in line:
            w = line.replace("[", " ").replace(")", " ").replace(",", " ")
            w = w.split()
            r = int(w[w.index("process") + 1].split("/")[0])
            shares[r] = ([int(w[-4]), int(w[-3])],
                         int(w[w.index("state") + 1]))
    tap.eq(sorted(shares), [0, 1], "each process reports its share")
    if sorted(shares) != [0, 1]:
        return
    (s0, b0), (s1, b1) = shares[0], shares[1]
    tap.diag("optimizer state: %d floats of parameters; one process "
             "would hold %d bytes; process 0 %d, process 1 %d"
             % (n, full, b0, b1))
    tap.ok(n > 0 and s0[0] == 0 and s0[1] == s1[0] and s1[1] == n,
           "the slices %r and %r cut [0, %d) in two" % (s0, s1, n))
    tap.ok(b0 + b1 == full and max(b0, b1) <= full / 2 + 8,
           "each process holds half of the optimizer state (%d + %d = %d "
           "bytes)" % (b0, b1, full))


def test_rank_killed(tmp):
    """kill -9 of process 1 mid-training: the run fails within seconds,
    no version, no temporary folder, config.json untouched."""
    mdir = make_model(os.path.join(tmp, "kill"), "mlp")
    with open(os.path.join(mdir, "config.json"), "w") as f:
        f.write('{"active_version": 1}\n')
    cfg = open(os.path.join(mdir, "config.json")).read()
    body = job({"name": "sgd", "lr": 0.01}, epochs=1000)
    p = os.path.join(tmp, "kill.json")
    with open(p, "w") as f:
        json.dump(body, f)
    wrap = os.path.join(tmp, "kill.sh")
    with open(wrap, "w") as f:
        f.write('#!/bin/sh\n'
                'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then\n'
                '  (sleep 2; kill -9 $$) &\n'
                'fi\n'
                'exec "$@"\n')
    os.chmod(wrap, 0o755)
    rc, res, err, secs = run(tmp, None, mdir, np_=2, timeout=60,
                             argv=[wrap, TRAIN_BIN, p, "--model-dir", mdir])
    tap.diag("killed run: exit %d after %.1f s; %s"
             % (rc, secs, " | ".join(err.strip().splitlines()[-3:])))
    tap.ok(rc not in (0, 1, -999), "the run fails (exit %d, not a "
           "result)" % rc)
    tap.ok(secs < 30, "and ends within seconds of the kill (%.1f s for a "
           "1000-epoch job)" % secs)
    tap.eq(versions(mdir), ["1"], "no version written")
    tap.eq(temps(mdir), [], "no temporary folder left")
    tap.eq(open(os.path.join(mdir, "config.json")).read(), cfg,
           "config.json untouched")
    tap.eq(res, {}, "no result printed")


def test_bad_jobs(tmp):
    """Bad jobs: every process fails with exit 2 and the reason, quickly,
    and nothing is written."""
    mdir = make_model(os.path.join(tmp, "bad"), "mlp")
    cases = [
        ("a batch of 1 for 2 processes",
         job({"name": "sgd"}, batch=1), "cannot be split over 2 processes"),
        ("sophia", job({"name": "sophia"}), "sophia is not data-parallel"),
        ("a missing training file",
         dict(job({"name": "sgd"}), training={"file": "nope.npz"}),
         "nope.npz"),
        ("an unknown parameter",
         dict(job({"name": "sgd"}), methods=[{"method": "finetune",
                                              "params": {"epoch": 2}}]),
         "epoch"),
    ]
    for what, body, want in cases:
        rc, res, err, secs = run(tmp, body, mdir, np_=2, timeout=60)
        tap.ok(rc == 2 and want in err and secs < 30,
               "%s: exit 2 naming it (exit %d, %.1f s: %s)"
               % (what, rc, secs, err.strip().splitlines()[-1:]))
    # One process cannot set up (its model folder is missing): the other
    # does not wait for it in a collective.
    p = os.path.join(tmp, "half.json")
    with open(p, "w") as f:
        json.dump(job({"name": "sgd"}), f)
    wrap = os.path.join(tmp, "half.sh")
    with open(wrap, "w") as f:
        f.write('#!/bin/sh\n'
                'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then\n'
                '  exec "$1" "$2" --model-dir /nonexistent\n'
                'fi\n'
                'exec "$@"\n')
    os.chmod(wrap, 0o755)
    rc, res, err, secs = run(tmp, None, mdir, np_=2, timeout=60,
                             argv=[wrap, TRAIN_BIN, p, "--model-dir", mdir])
    tap.ok(rc == 2 and "/nonexistent" in err
           and "another process of the run could not set up" in err
           and secs < 30, "one process without its model: both fail, "
           "saying why (exit %d, %.1f s)" % (rc, secs))
    tap.eq(versions(mdir), ["1"], "no version written by the bad jobs")


def test_daemon(tmp, offline):
    """The daemon hands the AdamW job to mpirun -np 2: it succeeds, the
    version it writes and activates has the weights of the same job run
    offline (within 1e-5), and its result says 2 processes trained; bad
    "workers" are 400 with no job; a cancelled run writes nothing."""
    root = os.path.join(tmp, "daemon")
    mdir = make_model(root, "mlp")
    workers = {"mpirun": MPIRUN[1:] + ["-np", "2"]}
    body = dict(job(ADAMW), workers=workers,
                activate=True)
    # The mpirun it starts inherits its environment: under ASan this one
    # daemon runs without leak checks too (see MPI_ENV).
    with Daemon(["--admin-insecure", "--job-threads=1"], repository=root,
                env={"ASAN_OPTIONS": MPI_ENV.get("ASAN_OPTIONS", "")}) as d:
        for what, bad in (("a string", "mpirun"),
                          ("a number in the arguments",
                           {"mpirun": ["-np", 2]}),
                          ("an unknown key", {"mpiexec": []})):
            st, _, data = d.post("/admin/models/mlp/compress",
                                 dict(body, workers=bad), admin=True)
            tap.ok(st == 400 and "workers" in (json_body(data) or {}).get(
                "error", ""), "workers as %s: 400 naming it (%d %s)"
                % (what, st, data[:120]))
        st, _, data = d.post("/admin/models/mlp/compress", body, admin=True)
        jid = (json_body(data) or {}).get("job", 0)
        tap.eq(st, 202, "a job with workers.mpirun: accepted")
        j = d.wait_job(jid, timeout=120)
        res = j.get("result") or {}
        tap.ok(j.get("state") == "succeeded" and res.get("activated"),
               "it succeeds and activates (%s: %s)"
               % (j.get("state"), j.get("error")))
        tap.eq(res.get("version"), 2, "version 2 written")
        dp = training(res).get("data_parallel") or {}
        tap.eq(dp.get("processes"), 2, "2 processes trained it")
        try:
            dw = max_diff(weights(os.path.join(mdir, "2", "model.onnx")),
                          weights(offline))
        except Exception as e:  # noqa: BLE001 -- reported as a failure
            dw = float("inf")
            tap.diag("weights: %s" % e)
        tap.ok(dw <= TOL_W, "the weights of the offline 2-process run "
               "(max |dw| %.3g)" % dw)
        tap.eq(temps(mdir), [], "no temporary file left")
        # Cancel mid-run: mpirun ends, nothing is written.
        long_body = dict(job({"name": "sgd", "lr": 0.01}, epochs=1000),
                         workers=workers)
        st, _, data = d.post("/admin/models/mlp/compress", long_body,
                             admin=True)
        jid = (json_body(data) or {}).get("job", 0)
        deadline = time.monotonic() + 60
        step = ""
        while time.monotonic() < deadline:
            _, _, data = d.get("/admin/jobs/%d" % jid, admin=True)
            step = (json_body(data) or {}).get("step", "")
            if step.startswith("mpirun: finetune: epoch"):
                break
            time.sleep(0.1)
        tap.ok(step.startswith("mpirun: finetune: epoch"),
               "while it runs, the step is slimserve-train's last line "
               "(%s)" % step)
        st, _, _ = d.request("DELETE", "/admin/jobs/%d" % jid, admin=True)
        t0 = time.monotonic()
        j = d.wait_job(jid, timeout=60)
        tap.ok(j.get("state") == "cancelled" and time.monotonic() - t0 < 20,
               "cancel: the job is cancelled within seconds (%s, %.1f s)"
               % (j.get("state"), time.monotonic() - t0))
        tap.eq(versions(mdir), ["1", "2"], "no version written by it")
        tap.eq(temps(mdir), [], "no temporary file left by it")
        tap.eq(d.stop(), 0, "clean exit")


def main():
    try:
        h = subprocess.run([TRAIN_BIN, "--help"], capture_output=True,
                           timeout=30).stdout.decode()
    except OSError as e:
        tap.skip_all("no slimserve-train (%s)" % e)
    if "data parallel: MPI" not in h:
        tap.skip_all("slimserve-train built without MPI (install "
                     "libopenmpi-dev and openmpi-bin, then configure)")
    if shutil.which("mpirun") is None:
        tap.skip_all("no mpirun (install openmpi-bin)")
    tmp = tempfile.mkdtemp(prefix="ss-train-mpi-")
    try:
        r = test_parity(tmp, "sgd", {"name": "sgd", "lr": 0.05,
                                     "momentum": 0.9})
        r2 = test_parity(tmp, "adamw", ADAMW)
        if r2 is not None:
            test_state_split(*r2[:2])
            test_collective(tmp, "adamw", ADAMW,
                            *r2[3:])
            test_daemon(tmp, r2[2])
        else:
            tap.ok(False, "the AdamW run gave no shares to check")
        del r
        test_rank_killed(tmp)
        test_bad_jobs(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
