# SPDX-License-Identifier: Apache-2.0
"""The shared executor pool and request isolation, through the daemon.

- Threads follow cores, not models: 50 copies of the example model cost
  the daemon no more threads than one, and at most cores + a constant.
- Idle models cost their graph, not their plans: with "warmup": "check"
  (the default) the load compiles batch 1 to check the model and frees
  it, so 40 models hold less memory than with "warmup": "all", and their
  first answers (compiled on use, batch 1 and a batch of 8) equal the
  answers of models whose plans were kept.
- One client's bad request never touches another's: the transformer
  fixture (token ids in 0..16) served to good and bad clients at once
  (threads, bounded): no good request fails, every bad one gets 400 with
  its own out-of-range value in the message, and the log does not grow
  with the bad requests."""

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, proc_status  # noqa: E402
import kserve  # noqa: E402

from paths import FIX  # noqa: E402
DIGITS = os.path.join(TOP_SRC, "conf", "models", "digits-mlp")
TRANSFORMER = os.path.join(FIX, "transformer_op17", "model.onnx")
ARGS = ["--admin-insecure", "--job-threads=0"]


def copy_digits(repo, name):
    os.makedirs(os.path.join(repo, name, "1"))
    shutil.copy(os.path.join(DIGITS, "1", "model.onnx"),
                os.path.join(repo, name, "1", "model.onnx"))
    shutil.copy(os.path.join(DIGITS, "config.json"),
                os.path.join(repo, name, "config.json"))


def serve_threads(n):
    """(threads, ready) of a daemon serving n copies of digits-mlp after
    one inference on each."""
    tmp = tempfile.mkdtemp(prefix="ss-pool-")
    try:
        repo = os.path.join(tmp, "models")
        for i in range(n):
            copy_digits(repo, "m%03d" % i)
        with Daemon(ARGS, repository=repo) as d:
            st, _, _ = d.get("/v2/health/ready")
            _, _, meta = d.get("/v2/models/m000")
            inp = json.loads(meta)["inputs"][0]
            x = np.zeros([1] + inp["shape"][1:], dtype=np.float32)
            body = kserve.json_request({inp["name"]: x})
            fails = 0
            for i in range(n):
                s, _, _ = d.post("/v2/models/m%03d/infer" % i, body)
                fails += s != 200
            th = proc_status(d.proc.pid, "Threads")
            rc = d.stop()
        return th, st, fails, rc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_threads_follow_cores():
    one = serve_threads(1)
    many = serve_threads(50)
    tap.eq((one[1], one[2], one[3]), (200, 0, 0),
           "1 model: ready, served, clean exit")
    tap.eq((many[1], many[2], many[3]), (200, 0, 0),
           "50 models: ready, each served once, clean exit")
    tap.ok(many[0] == one[0], "50 models run on as many threads as 1 "
           "(%d and %d)" % (many[0], one[0]))
    cores = len(os.sched_getaffinity(0))
    tap.ok(many[0] <= cores + 12, "threads %d <= cores %d + 12"
           % (many[0], cores))


def rss_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def serve_warmup(mode, n, bodies):
    """(rss after ready, answers of m000 to bodies, status of a bad
    "warmup" model) for n copies of digits-mlp with "warmup": mode."""
    tmp = tempfile.mkdtemp(prefix="ss-warm-")
    try:
        repo = os.path.join(tmp, "models")
        with open(os.path.join(DIGITS, "config.json")) as f:
            cfg = json.load(f)
        cfg["warmup"] = mode
        for i in range(n):
            copy_digits(repo, "m%03d" % i)
            with open(os.path.join(repo, "m%03d" % i, "config.json"),
                      "w") as f:
                json.dump(cfg, f)
        copy_digits(repo, "bad")
        cfg["warmup"] = "sometimes"
        with open(os.path.join(repo, "bad", "config.json"), "w") as f:
            json.dump(cfg, f)
        with Daemon(ARGS, repository=repo) as d:
            d.get("/v2/health/ready")
            time.sleep(0.3)
            rss = rss_of(d.proc.pid)
            answers = []
            for b in bodies:
                st, hd, data = d.post("/v2/models/m000/infer", b)
                answers.append(kserve.parse_response(data, hd)
                               if st == 200 else st)
            st_bad, _, _ = d.get("/v2/models/bad/ready")
            rc = d.stop()
        return rss, answers, st_bad, rc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_idle_models_memory():
    rng = np.random.default_rng(7)
    bodies = [kserve.json_request({"input": rng.standard_normal(
        (k, 64)).astype(np.float32)}) for k in (1, 8, 1)]
    check = serve_warmup("check", 40, bodies)
    full = serve_warmup("all", 40, bodies)
    tap.eq((check[3], full[3]), (0, 0), "both daemons exit cleanly")
    # "all" keeps 4 plans a model (packed weights ~70 KB and ~100 KB of
    # primitives): ~6.8 MB on 40 models; "check" keeps none.
    tap.ok(full[0] - check[0] > 3 << 20, "40 idle models: RSS %.1f MB with "
           "check, %.1f MB with all" % (check[0] / 2**20, full[0] / 2**20))
    same = len(check[1]) == 3 and all(
        not isinstance(a, int) and not isinstance(b, int) and
        np.array_equal(a[1]["logits"], b[1]["logits"])
        for a, b in zip(check[1], full[1]))
    tap.ok(same, "answers of plans compiled on first use (batch 1, 8, "
           "1 again) equal those of plans kept from the load")
    tap.ok(check[2] != 200, "a \"warmup\" other than all or check is "
           "refused (%d)" % check[2])


def ids_body(ids):
    return kserve.json_request({"input_ids": ids.astype(np.int64)})


def test_isolation():
    tmp = tempfile.mkdtemp(prefix="ss-iso-")
    repo = os.path.join(tmp, "models")
    os.makedirs(os.path.join(repo, "tr", "1"))
    shutil.copy(TRANSFORMER, os.path.join(repo, "tr", "1", "model.onnx"))
    # A queue delay makes good and bad requests share batches for sure.
    with open(os.path.join(repo, "tr", "config.json"), "w") as f:
        json.dump({"max_batch_size": 16, "max_queue_delay_us": 2000}, f)
    with np.load(os.path.join(FIX, "transformer_op17", "batch64.npz")) as z:
        rows = z["input_ids"]
    good_clients, bad_clients, per_client = 12, 4, 15
    try:
        with Daemon(ARGS, repository=repo) as d:
            # Each good client's expected logits, from a request alone.
            want = {}
            for c in range(good_clients):
                st, hd, data = d.post("/v2/models/tr/infer",
                                      ids_body(rows[c:c + 1]))
                if st != 200:
                    tap.ok(False, "reference request %d: %d %s"
                           % (c, st, data[:200]))
                    return
                want[c] = kserve.parse_response(data, hd)[1]["logits"]
            results = []
            lock = threading.Lock()

            def good(c):
                body = ids_body(rows[c:c + 1])
                for _ in range(per_client):
                    st, hd, data = d.post("/v2/models/tr/infer", body)
                    right = False
                    if st == 200:
                        got = kserve.parse_response(data, hd)[1]["logits"]
                        right = np.allclose(got, want[c], rtol=1e-4,
                                            atol=1e-4)
                    with lock:
                        results.append(("good", c, st, right, data[:300]))

            def bad(c):
                for i in range(per_client):
                    ids = rows[c:c + 1].copy()
                    value = 1000 + 100 * c + i
                    ids[0, 5 + i] = value
                    st, _, data = d.post("/v2/models/tr/infer", ids_body(ids))
                    own = False
                    try:
                        msg = json.loads(data)["error"]
                        own = ("value %d " % value) in msg and \
                            "out of range" in msg
                    except (ValueError, KeyError):
                        msg = data[:300]
                    with lock:
                        results.append(("bad", c, st, own, msg))

            log0 = len(d.logs())
            th = [threading.Thread(target=good, args=(c,))
                  for c in range(good_clients)]
            th += [threading.Thread(target=bad, args=(c,))
                   for c in range(bad_clients)]
            t0 = time.monotonic()
            for t in th:
                t.start()
            for t in th:
                t.join(120)
            took = time.monotonic() - t0
            log_lines = d.logs()[log0:].count("\n")
            _, _, metrics = d.get("/metrics")
            rc = d.stop()
        goods = [r for r in results if r[0] == "good"]
        bads = [r for r in results if r[0] == "bad"]
        tap.eq(len(goods) + len(bads),
               (good_clients + bad_clients) * per_client,
               "every request answered (%.1f s)" % took)
        failed = [r for r in goods if r[2] != 200 or not r[3]]
        tap.ok(not failed, "0 of %d valid requests failed or got wrong "
               "logits" % len(goods), failed[:3])
        wrong = [r for r in bads if r[2] != 400 or not r[3]]
        tap.ok(not wrong, "each of %d bad requests got 400 with its own "
               "value in the message" % len(bads), wrong[:3])
        if bads:
            tap.diag("a bad request's answer: %s" % bads[0][4])
        m = re.search(rb'slimserve_batch_size_sum\{model="tr",version="1"\}'
                      rb' (\S+)\n.*slimserve_batch_size_count\{model="tr",'
                      rb'version="1"\} (\S+)', metrics, re.S)
        if m and float(m.group(2)) > 0:
            tap.diag("average batch %.2f" % (float(m.group(1)) /
                                             float(m.group(2))))
        tap.ok(log_lines <= 5, "bad requests do not flood the log (%d "
               "lines)" % log_lines)
        tap.eq(rc, 0, "clean exit")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    for t in (test_threads_follow_cores, test_idle_models_memory,
              test_isolation):
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
