#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compression jobs run below the loops (issue 10: no loop stall while a
job runs), checked on the threads themselves in /proc/PID/task:

  - job_priority=batch (the default): the job thread and the OpenMP
    threads it starts ("ss-job", the name is inherited) run SCHED_BATCH
    at 10 over the daemon's nice; with --job-threads=2 the team has two
    threads, so the inheritance is what the test sees, not only the
    first thread;
  - job_priority=idle: SCHED_IDLE; with the default job_threads=1 the
    CPUs are not split: the job and the executors may run on every CPU
    (serving keeps them all, the job gets what serving leaves), where
    batch pins the executors to the serving CPUs and the job to its own;
  - the loop threads (main, ss-http-*) stay SCHED_OTHER at the nice the
    daemon was started with (this test's: `nice make check`), and with
    the default CPU split (job_threads=1) they may run on every CPU the
    daemon may use, not only the serving ones: pinned, they waited behind
    other processes on one CPU while the job CPU was idle;
  - a bad job_priority is refused at start.
"""

import json
import os
import shutil
import sys
import tempfile
import time

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, DaemonError, json_body  # noqa: E402

from paths import MLP, CALIB, HELD  # noqa: E402

SCHED_OTHER, SCHED_BATCH, SCHED_IDLE = 0, 3, 5


def make_repo(root):
    d = os.path.join(root, "mlp")
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(MLP, os.path.join(d, "1", "model.onnx"))
    shutil.copy(HELD, os.path.join(d, "val.npz"))
    shutil.copy(CALIB, os.path.join(d, "calib.npz"))


def threads(pid):
    """[(tid, comm, policy, nice, allowed CPUs)] of every thread of pid."""
    out = []
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open(os.path.join(base, tid, "stat")) as f:
                st = f.read()
            with open(os.path.join(base, tid, "status")) as f:
                status = f.read()
        except OSError:
            continue                    # the thread ended meanwhile
        comm = st[st.index("(") + 1:st.rindex(")")]
        rest = st[st.rindex(")") + 2:].split()
        # rest[0] is field 3 (state): nice is field 19, policy field 41.
        nice, policy = int(rest[16]), int(rest[38])
        cpus = ""
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = line.split(":", 1)[1].strip()
        out.append((int(tid), comm, policy, nice, cpus))
    return out


def run_job(d):
    st, _, data = d.post(
        "/admin/models/mlp/compress",
        json.dumps({"methods": ["ptq"], "calibration": {"file": "calib.npz"},
                    "validation": {"file": "val.npz"},
                    "activate": False}).encode(), admin=True)
    job = (json_body(data) or {}).get("job")
    if st != 202 or job is None:
        return "submit %s %r" % (st, data[:200])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, _, data = d.get("/admin/jobs/%d" % job, admin=True)
        state = (json_body(data) or {}).get("state")
        if state not in ("queued", "running"):
            return state
        time.sleep(0.05)
    return "timeout"


def cpu_list(s):
    cpus = set()
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


BASE = os.getpriority(os.PRIO_PROCESS, 0)     # the daemon inherits it


def check(root, args, what, policy, nice, team, execs=None):
    # The fixture MLP's plans are small enough to run on one thread
    # (engine.h, SS_ENGINE_ONE_THREAD_MACS); 0 keeps the job's OpenMP
    # team, whose threads must inherit the job's scheduling.
    with Daemon(["--admin-insecure", "--http-threads=2"] + args,
                env={"SS_ENGINE_ONE_THREAD_MACS": "0"},
                repository=root) as d:
        state = run_job(d)
        tap.ok(state in ("succeeded", "rejected"), "%s: the job ran (%s)"
               % (what, state))
        ts = threads(d.proc.pid)
        job = [t for t in ts if t[1] == "ss-job"]
        if execs is not None:
            execs.extend(t for t in ts if t[1].startswith("ss-exec-"))
        loops = [t for t in ts if t[1].startswith("ss-http-") or
                 t[0] == d.proc.pid]
        tap.ok(len(job) >= team, "%s: %d job thread(s), at least %d"
               % (what, len(job), team), job)
        tap.ok(job and all(t[2] == policy and t[3] == nice for t in job),
               "%s: every job thread runs at policy %d, nice %d"
               % (what, policy, nice), job)
        tap.ok(len(loops) == 3 and
               all(t[2] == SCHED_OTHER and t[3] == BASE for t in loops),
               "%s: the main and HTTP loops run SCHED_OTHER at nice %d"
               % (what, BASE), loops)
        tap.eq(d.stop(), 0, "%s: clean exit" % what)
        return loops, job


def main():
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "m")
    make_repo(root)
    ncpu = len(os.sched_getaffinity(0))
    # job_threads=2: no CPU split on 2 cores; the job's OpenMP team of 2
    # shares the CPUs with the loops, the case the priority is for.
    check(root, ["--job-threads=2"], "batch", SCHED_BATCH,
          min(19, BASE + 10), 2 if ncpu >= 2 else 1)
    check(root, ["--job-threads=2", "--job-priority=idle"], "idle",
          SCHED_IDLE, BASE, 2 if ncpu >= 2 else 1)
    # The default split (job_threads=1): the job pinned to its CPU, the
    # loops free to run on any.
    execs = []
    loops, job = check(root, [], "split", SCHED_BATCH, min(19, BASE + 10),
                       1, execs)
    allowed = os.sched_getaffinity(0)
    if ncpu >= 2:
        jc = set().union(*(cpu_list(t[4]) for t in job))
        tap.ok(all(cpu_list(t[4]) == allowed for t in loops) and
               jc < allowed and execs and
               all(cpu_list(t[4]) == allowed - jc for t in execs),
               "split: loops may run on every CPU (%s), the job on its own, "
               "the executors on the others" % sorted(allowed),
               (loops, job, execs))
    else:
        tap.ok(True, "split: # SKIP one CPU, no split")
    # job_priority=idle with the default job_threads=1: SCHED_IDLE, and
    # nothing pinned: serving may wake on the CPU the job runs on and
    # preempt it there.
    execs = []
    loops, job = check(root, ["--job-priority=idle"], "idle split",
                       SCHED_IDLE, BASE, 1, execs)
    tap.ok(execs and all(cpu_list(t[4]) == allowed
                         for t in loops + job + execs),
           "idle split: loops, executors and the job may all run on every "
           "CPU (%s)" % sorted(allowed), (loops, job, execs))
    refused = None
    try:
        with Daemon(["--admin-insecure", "--job-priority=high"],
                    repository=root):
            pass
    except DaemonError as e:
        refused = str(e)
    tap.ok(refused is not None and "job_priority" in refused,
           "job_priority=high is refused at start", refused)
    shutil.rmtree(tmp)
    tap.done()


if __name__ == "__main__":
    main()
