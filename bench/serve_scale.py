# SPDX-License-Identifier: Apache-2.0
"""bench/serve, scale part: slimserve vs nginx and a Node+ORT peer (issue 9).

In one run, with the same wrk script (bench/serve/post.lua) and the same
request bodies, on an MNIST-sized MLP (784-512-256-10) and a 3-conv CNN on
28x28 images (bench/serve_models.py writes both):

  nginx      `return 200` on loopback: the HTTP ceiling of this machine
  node+ort   the server a user would write instead (bench/serve_peer.js:
             Node's http, onnxruntime-node, 2 cluster workers, one
             session.run per request, KServe V2 JSON)
  slimserve  KServe V2 JSON with the shortest float32 text ("json"), JSON
             as Python's json.dumps writes float32 values (~17 significant
             digits, "json17"), and binary tensors ("binary")

at concurrency 1, 8 and 64: req/s, p50, p99 and, for slimserve, the
average batch (slimserve_inference_count_total / execution_count_total
deltas from /metrics).  Every server runs for the whole run and the points
are measured in rounds (every point once per round), so slow drift on a
shared machine touches all of them alike; the tables show medians over
the rounds.

Besides: batching on vs off on the CNN (max_batch_size default vs 1, same
daemon), 1 vs 2 HTTP loops (http_threads=1 and 2, MLP, JSON, c64), and a
per-core cost report: the CPU time of the HTTP loop threads (named
ss-http-N) per request and of every other thread of the daemon per sample,
read from /proc/PID/task/*/schedstat (or stat's utime+stime), from which
it projects the req/s ceiling on 4, 16 and 64 cores.

    /usr/bin/python3 bench/serve.py --build BUILDDIR [--duration S] ...

Needs wrk, nginx (nginx-light), node with bench/node_modules
(ONNXRUNTIME_NODE_INSTALL=skip npm ci), python3-numpy and python3-onnx.
A missing nginx or onnxruntime-node drops that server, with a note.
"""

import http.client
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import serve
import serve_models
from serve import LUA_POST, TOP, log

import kserve  # noqa: E402  (tests/lib, on the path through serve)
from daemon import free_port  # noqa: E402

FORMATS = ("json", "json17", "binary")
FORMAT_HELP = {
    "json": "KServe JSON, shortest float32 text (str(np.float32))",
    "json17": "KServe JSON, Python json.dumps of float32 values",
    "binary": "Triton binary tensor extension, binary output",
}
MODELS = ("mlp", "cnn")
SHAPES = {"mlp": (1, 784), "cnn": (1, 1, 28, 28)}
MODEL_HELP = {
    "mlp": "MLP 784-512-256-10 (535,818 weights)",
    "cnn": "CNN 28x28, 3 convs 32-64-64, dense 3136-64-10",
}
PEER_JS = os.path.join(TOP, "bench", "serve_peer.js")
ORT_PKG = os.path.join(TOP, "bench", "node_modules", "onnxruntime-node",
                       "package.json")
LOOP_COMM = "ss-http-"
HZ = os.sysconf("SC_CLK_TCK")
SCHEDSTAT = os.path.exists("/proc/self/task/%d/schedstat" % os.getpid())
PROJECT_CORES = (4, 16, 64)


# ---- the machine ---------------------------------------------------------

def cpu_model():
    name, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and name == "?":
                    name = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    isa = sorted(x for x in flags if x.startswith(("avx512", "amx")))
    return name, isa, "avx2" in flags


def cpu_list(cpus):
    """[0, 1, 2, 5] -> "0-2,5" (taskset's syntax)."""
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def parse_cpus(text):
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return sorted(set(out))


def placement(a):
    """Decides where wrk and the servers run -> (wrk cpus or None,
    server cpus or None, description)."""
    mine = sorted(os.sched_getaffinity(0))
    if a.wrk_cpus == "none":
        wrk = None
    elif a.wrk_cpus:
        wrk = parse_cpus(a.wrk_cpus)
    elif len(mine) >= 4:
        wrk = mine[-max(1, len(mine) // 4):]
    else:
        wrk = mine[-1:]
    if a.server_cpus == "all":
        srv = None
    elif a.server_cpus:
        srv = parse_cpus(a.server_cpus)
    elif wrk and len(mine) >= 4:
        srv = [c for c in mine if c not in wrk]
    else:
        srv = None
    if wrk and srv and not set(wrk) & set(srv):
        how = ("kept apart: wrk on CPU %s, servers on CPU %s (taskset)"
               % (cpu_list(wrk), cpu_list(srv)))
    elif wrk:
        how = ("NOT kept apart: wrk pinned to CPU %s, servers on CPU %s "
               "with it (%d cores: too few to split)"
               % (cpu_list(wrk), cpu_list(srv or mine), len(mine)))
    else:
        how = "NOT kept apart: nothing pinned"
    return (cpu_list(wrk) if wrk else None, cpu_list(srv) if srv else None,
            len(srv or mine), how)


# ---- CPU time from /proc ---------------------------------------------------

def _stat_fields(path):
    with open(path) as f:
        text = f.read()
    # comm may hold spaces and parentheses: the fields follow the last ')'.
    return text[text.rindex(")") + 2:].split()


def descendants(root):
    """-> [root and every process below it] (taskset execs, so root is the
    server; nginx and node fork workers)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents.setdefault(int(_stat_fields(
                    "/proc/%s/stat" % d)[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_snapshot(root):
    """-> {(pid, tid): (comm, CPU seconds)} over root's process tree.

    schedstat's first field is the thread's run time in ns; without it,
    stat's utime+stime in clock ticks (10 ms: coarse for short runs)."""
    snap = {}
    for pid in descendants(root):
        base = "/proc/%d/task" % pid
        try:
            tids = os.listdir(base)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("%s/%s/comm" % (base, tid)) as f:
                    comm = f.read().strip()
                if SCHEDSTAT:
                    with open("%s/%s/schedstat" % (base, tid)) as f:
                        sec = int(f.read().split()[0]) / 1e9
                else:
                    fl = _stat_fields("%s/%s/stat" % (base, tid))
                    sec = (int(fl[11]) + int(fl[12])) / HZ
            except (OSError, ValueError, IndexError):
                continue
            snap[(pid, int(tid))] = (comm, sec)
    return snap


def cpu_delta(s0, s1):
    """-> (total CPU s, CPU s of the HTTP loop threads, loop thread count).
    A thread born in between counts from zero; one that ended in between
    is lost (the daemon's threads live as long as it does)."""
    total = loop = 0.0
    loops = 0
    for key, (comm, sec) in s1.items():
        d = sec - s0.get(key, (comm, 0.0))[1]
        total += d
        if comm.startswith(LOOP_COMM):
            loop += d
            loops += 1
    return total, loop, loops


# ---- servers ---------------------------------------------------------------

def http_get(port, path, timeout=5):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return 0


def http_post(port, path, body, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


class Proc:
    """A peer server process on loopback: started, waited for, stopped."""

    kind = "?"

    def _start(self, argv, ready_path, tmp, cwd=None):
        self.logpath = os.path.join(tmp, self.kind + ".log")
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf,
                                     cwd=cwd or tmp)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if http_get(self.port, ready_path, 2) == 200:
                return
            time.sleep(0.1)
        text = self.log()
        self.stop()
        raise RuntimeError("%s did not start:\n%s" % (self.kind, text))

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


class Nginx(Proc):
    kind = "nginx"

    def __init__(self, tmp, cpus, workers):
        self.port = free_port()
        self.workers = workers
        d = os.path.join(tmp, "nginx")
        os.makedirs(d)
        conf = os.path.join(d, "nginx.conf")
        # keepalive_requests: nginx closes a connection after 1000
        # requests by default; the daemon and the peer do not.
        with open(conf, "w") as f:
            f.write("""daemon off;
master_process on;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %s/body;
    server {
        listen 127.0.0.1:%d;
        location / {
            default_type application/json;
            return 200 '{"model_name":"nginx","outputs":[]}';
        }
    }
}
""" % (workers, d, d, d, self.port))
        argv = ["taskset", "-c", cpus] if cpus else []
        argv += ["nginx", "-e", os.path.join(d, "error.log"), "-p", d,
                 "-c", conf]
        self._start(argv, "/", tmp)


class Peer(Proc):
    kind = "node"

    def __init__(self, tmp, models, cpus, workers, intra):
        self.port = free_port()
        self.workers = workers
        argv = ["taskset", "-c", cpus] if cpus else []
        argv += ["node", PEER_JS, "--port", str(self.port), "--workers",
                 str(workers), "--intra", str(intra)]
        argv += ["%s=%s" % kv for kv in sorted(models.items())]
        self._start(argv, "/v2/health/ready", tmp,
                    cwd=os.path.dirname(PEER_JS))


class Slim:
    """slimserve (bench/serve.py's Server) on a repository of its own.
    models: {name served: (which model of MODELS, onnx path, config)}."""

    kind = "slimserve"

    def __init__(self, a, tmp, name, models, http_threads=None):
        self.name = name
        self.models = {m: spec[0] for m, spec in models.items()}
        self.repo = os.path.join(tmp, "repo-" + name)
        for m, (_, onnx, cfg) in models.items():
            serve.make_repo(self.repo, m, {1: onnx}, cfg)
        self.srv = serve.Server(a.build, self.repo, a.threads,
                                http_threads=http_threads,
                                cpus=a.server_cpus)
        self.port = self.srv.port
        self.pid = self.srv.proc.pid

    def counters(self, model):
        """-> (inferences, executions, {loop: requests}) from /metrics."""
        st, data = self.srv.request("GET", "/metrics")
        if st != 200:
            raise RuntimeError("GET /metrics answered %d; log:\n%s"
                               % (st, self.srv.log()[-3000:]))
        inf = ex = 0.0
        loops = {}
        for line in data.decode().splitlines():
            m = re.match(r'^(slimserve_\w+)\{([^}]*)\} (\S+)$', line)
            if not m:
                continue
            name, labels, val = m.group(1), m.group(2), float(m.group(3))
            if name == "slimserve_http_loop_requests_total" and \
                    'listener="http"' in labels:
                loops[re.search(r'loop="(\d+)"', labels).group(1)] = val
            elif 'model="%s"' % model in labels:
                if name == "slimserve_inference_count_total":
                    inf += val
                elif name == "slimserve_execution_count_total":
                    ex += val
        return inf, ex, loops

    def threads(self):
        """-> (HTTP loop threads, other threads) by comm."""
        snap = cpu_snapshot(self.pid)
        loops = sum(1 for c, _ in snap.values() if c.startswith(LOOP_COMM))
        return loops, len(snap) - loops

    def alive(self):
        return self.srv.proc.poll() is None

    def stop(self):
        self.srv.stop()


# ---- bodies ---------------------------------------------------------------

def json_shortest(name, a):
    """KServe JSON with each float32 as its shortest round-trip text."""
    texts = [str(v) for v in a.ravel()]
    back = np.array([float(t) for t in texts], dtype=np.float32)
    assert np.array_equal(back, a.ravel()), "shortest text does not read back"
    return ('{"inputs":[{"name":"%s","shape":%s,"datatype":"FP32",'
            '"data":[%s]}]}' % (name, json.dumps(list(a.shape)),
                                ",".join(texts))).encode()


def sig_digits(body):
    """Mean significant digits of the numbers in a JSON body's data."""
    data = json.loads(body)["inputs"][0]["data"]
    raw = body.decode().split('"data":')[1]
    nums = re.findall(r"-?[0-9][0-9.eE+-]*", raw)[:len(data)]
    digs = [len(re.sub(r"e.*$", "", n.lower()).lstrip("-").replace(
        ".", "").lstrip("0")) or 1 for n in nums]
    return sum(digs) / max(1, len(digs))


class Bodies:
    """The request bodies on disk: {(model, fmt): (path, wrk args, bytes,
    headers, body)}."""

    def __init__(self, tmp, image):
        self.files = {}
        for model in MODELS:
            x = image.reshape(SHAPES[model])
            bodies = {
                "json": (json_shortest("input", x),
                         {"Content-Type": "application/json"}),
                "json17": (kserve.json_request({"input": x}),
                           {"Content-Type": "application/json"}),
                "binary": kserve.binary_request({"input": x},
                                                binary_output=True),
            }
            for fmt, (body, hdrs) in bodies.items():
                path = os.path.join(tmp, "%s.%s" % (model, fmt))
                with open(path, "wb") as f:
                    f.write(body)
                args = [path]
                if fmt == "binary":
                    args.append(hdrs["Inference-Header-Content-Length"])
                self.files[(model, fmt)] = (path, args, len(body), hdrs,
                                            body)

    def args(self, model, fmt):
        return self.files[(model, fmt)][1]

    def body(self, model, fmt):
        return self.files[(model, fmt)][4], self.files[(model, fmt)][3]

    def describe(self):
        out = []
        for fmt in FORMATS:
            n = self.files[("mlp", fmt)][2]
            extra = ""
            if fmt != "binary":
                extra = ", %.1f significant digits a number" % sig_digits(
                    self.files[("mlp", fmt)][4])
            out.append("%-6s %6d bytes%s: %s" % (fmt, n, extra,
                                                 FORMAT_HELP[fmt]))
        return out


# ---- the answers are the same ----------------------------------------------

def logits(port, model, body, hdrs):
    st, data, rh = http_post(port, "/v2/models/%s/infer" % model, body, hdrs)
    if st != 200:
        raise RuntimeError("%s on port %d answered %d: %s"
                           % (model, port, st, data[:300]))
    _, outs = kserve.parse_response(data, rh)
    return np.asarray(list(outs.values())[0], dtype=np.float64).ravel()


def check_answers(bodies, models, slims, peer):
    """Every slimserve daemon and format, and the peer, answer each model
    with the same logits (and the MLP's match numpy's).  A fast wrong
    answer does not count, so a mismatch stops the run."""
    ref = {"mlp": serve_models.mlp_forward(models["mlp_layers"],
                                           models["image"].reshape(1, 784))
           .ravel()}
    lines = []
    for model in MODELS:
        got = {}
        for s in slims:
            names = [m for m in s.models if s.models[m] == model]
            for name in names:
                for fmt in FORMATS:
                    got["slimserve %s %s %s" % (s.name, name, fmt)] = \
                        logits(s.port, name, *bodies.body(model, fmt))
        if peer is not None:
            got["node+ort json"] = logits(peer.port, model,
                                          *bodies.body(model, "json"))
        base = ref.get(model, next(iter(got.values())))
        scale = max(1.0, float(np.abs(base).max()))
        worst = max(float(np.abs(v - base).max()) for v in got.values())
        lines.append("%s: %d answers agree%s, max |diff| %.2g"
                     % (model, len(got),
                        " with numpy" if model in ref else "", worst))
        if worst > 1e-3 * scale:
            raise RuntimeError("answers differ on %s:\n%s" % (model, "\n".join(
                "  %-34s %s" % (k, np.array2string(v, precision=4))
                for k, v in sorted(got.items()))))
    return lines


# ---- points -----------------------------------------------------------------

class Point:
    """One wrk load: a server, a model name on it, a body and a
    concurrency.  key: how the report finds it."""

    def __init__(self, key, target, model, body_model, fmt, conc):
        self.key, self.target, self.model = key, target, model
        self.body_model, self.fmt, self.conc = body_model, fmt, conc
        path = "/v2/models/%s/infer" % model if model else "/"
        self.url = "http://127.0.0.1:%d%s" % (target.port, path)


def run_point(a, pt, bodies):
    slim = isinstance(pt.target, Slim)
    if slim:
        m0 = pt.target.counters(pt.model)
    c0 = cpu_snapshot(pt.target.pid)
    r = serve.wrk(pt.url, a.duration, pt.conc, LUA_POST,
                  bodies.args(pt.body_model, pt.fmt), threads=a.wrk_threads,
                  cpus=a.wrk_cpus)
    c1 = cpu_snapshot(pt.target.pid)
    dur = r["duration_us"] / 1e6
    total, loop, nloops = cpu_delta(c0, c1)
    r["cpu_us_req"] = total / max(r["requests"], 1) * 1e6
    r["wrk_cores"] = r["wrk_cpu_s"] / dur
    if slim:
        m1 = pt.target.counters(pt.model)
        inf, ex = m1[0] - m0[0], m1[1] - m0[1]
        per_loop = {k: m1[2][k] - m0[2].get(k, 0) for k in m1[2]}
        served = sum(per_loop.values())
        r["avg_batch"] = inf / ex if ex else 0.0
        r["loop_us_req"] = loop / max(served, 1) * 1e6
        r["exec_us_sample"] = (total - loop) / max(inf, 1) * 1e6
        r["loop_busy"] = loop / (dur * max(nloops, 1))
        r["loop_shares"] = [per_loop[k] / max(served, 1)
                            for k in sorted(per_loop, key=int)]
    return r


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summarize(runs):
    """Per-field medians over the rounds; errors and requests summed."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        if k in ("errors", "requests", "status"):
            out[k] = sum(vals)
        elif k == "loop_shares":
            out[k] = [median(col) for col in zip(*vals)]
        elif isinstance(vals[0], (int, float)):
            out[k] = median(vals)
    rps = [r["rps"] for r in runs]
    out["spread"] = (max(rps) - min(rps)) / 2 / max(out["rps"], 1e-9)
    out["rounds"] = len(runs)
    return out


# ---- report -----------------------------------------------------------------

def verdict(ok):
    return "MET" if ok else "MISSED"


def row(label, fmt, c, r, peer=None, ngx=None):
    slim = "avg_batch" in r
    return ("  %-14s %-6s %4d %8.0f %5.1f%% %7d %7d %5s %8.1f %8s %8s %5s "
            "%5.2f %4d %7s %7s"
            % (label, fmt, c, r["rps"], 100 * r["spread"], r["p50_us"],
               r["p99_us"], "%.2f" % r["avg_batch"] if slim else "-",
               r["cpu_us_req"],
               "%.1f" % r["loop_us_req"] if slim else "-",
               "%.1f" % r["exec_us_sample"] if slim else "-",
               "%.0f%%" % (100 * r["loop_busy"]) if slim else "-",
               r["wrk_cores"], r["errors"],
               "%.2fx" % (r["rps"] / peer["rps"]) if peer else "-",
               "%.2f" % (r["rps"] / ngx["rps"]) if ngx else "-"))


HEADER = ("  %-14s %-6s %4s %8s %6s %7s %7s %5s %8s %8s %8s %5s %5s %4s "
          "%7s %7s" % ("server", "format", "conc", "req/s", "spread",
                       "p50_us", "p99_us", "avg_b", "cpu_us/r", "loop_us",
                       "exec_us", "loop%", "wrk", "err", "x_peer",
                       "x_nginx"))


def report(a, env, res, notes, info):
    name, isa, _ = cpu_model()
    conc = a.concurrency
    hi = max(conc)
    print("slimserve scale benchmark (bench/serve.py --part scale)")
    print("CPU: %s; %d cores; ISA: %s" % (
        name, os.cpu_count(), " ".join(isa) if isa else
        "no avx512*/amx* flags"))
    print("load average before: %s   after: %s; priority: %s"
          % (env["load0"], env["load1"], env["priority"]))
    print("placement: %s; wrk -t%d" % (a.placement, a.wrk_threads))
    for line in info:
        print(line)
    print("runs: %d s per point, median of %d rounds (every point once a "
          "round), wrk --latency -s bench/serve/post.lua, loopback"
          % (a.duration, a.repeats))
    for n in notes:
        print("note: " + n)
    print()

    def get(*key):
        return res.get(key)

    ngx = {c: get("nginx", None, "json", c) for c in conc}
    if any(ngx.values()):
        print("HTTP ceiling: nginx `return 200`, the json body POSTed "
              "(read and discarded)")
        print(HEADER)
        for c in conc:
            if ngx[c]:
                print(row("nginx", "json", c, ngx[c]))
        print()
    for model in MODELS:
        print("%s: %s" % (model, MODEL_HELP[model]))
        print(HEADER)
        for c in conc:
            for fmt in ("json", "json17"):
                r = get("peer", model, fmt, c)
                if r:
                    print(row("node+ort", fmt, c, r, ngx=ngx[c]))
            for fmt in FORMATS:
                r = get("slim", model, fmt, c)
                if r:
                    p = get("peer", model, fmt if fmt != "binary" else
                            "json", c)
                    print(row("slimserve", fmt, c, r, peer=p, ngx=ngx[c]))
        print()
    print("req/s, p50_us, p99_us: wrk (medians over the rounds); spread: "
          "half the range of req/s\nover the rounds.  avg_b: mean batch "
          "the executors ran (inference / execution count).\ncpu_us/r: "
          "CPU time of every thread of the server (and its workers) per "
          "request.\nloop_us: CPU of the HTTP loop threads per request; "
          "exec_us: CPU of every other\nthread of the daemon per sample "
          "(executors, their OpenMP workers, main).  loop%:\nhow busy the "
          "loop threads were.  wrk: cores wrk used.  err: non-2xx and "
          "socket\nerrors, summed.  x_peer: req/s over node+ort's at the "
          "same concurrency (same\nformat; binary vs the peer's json).  "
          "x_nginx: req/s over nginx's.")
    print()

    # Batching on vs off.
    bo = [(c, get("slim", "cnn", "json", c), get("b1", "cnn", "json", c))
          for c in conc]
    if any(on and off for _, on, off in bo):
        print("Batching on vs off: cnn, json (same daemon: cnn with the "
              "default config, cnn_b1 with max_batch_size 1)")
        print(HEADER)
        for c, on, off in bo:
            if on and off:
                print(row("batching on", "json", c, on))
                print(row("batching off", "json", c, off))
                print("  %-14s on/off %.2fx req/s" % ("", on["rps"] /
                                                      off["rps"]))
        print()

    # 1 vs 2 loops.
    lr = [(n, get("loops%d" % n, "mlp", "json", hi)) for n in (1, 2)]
    if all(r for _, r in lr):
        print("HTTP loops: mlp, json, c=%d; http_threads=1 vs 2, default "
              "executors; %s" % (hi, a.placement))
        print(HEADER)
        for n, r in lr:
            print(row("%d loop%s" % (n, "s" if n > 1 else ""), "json", hi,
                      r) + "   loop shares %s" % " / ".join(
                          "%.0f%%" % (100 * s) for s in r["loop_shares"]))
        print("  %-14s 2/1 %.2fx req/s" % ("", lr[1][1]["rps"] /
                                          lr[0][1]["rps"]))
        print()

    # Per-core cost.
    print("Per-core cost at c=%d (CPU time per request; the ceiling if "
          "every core did only this):" % hi)
    print("  %-10s %-6s %-6s %6s %9s %9s %9s"
          % ("server", "model", "format", "avg_b", "loop_us", "exec_us",
             "total_us") + "".join(" %9s" % ("%d cores" % n)
                                   for n in PROJECT_CORES))
    for model in MODELS:
        for fmt in FORMATS:
            r = get("slim", model, fmt, hi)
            if r:
                tot = r["loop_us_req"] + r["exec_us_sample"]
                print("  %-10s %-6s %-6s %6.2f %9.1f %9.1f %9.1f"
                      % ("slimserve", model, fmt, r["avg_batch"],
                         r["loop_us_req"], r["exec_us_sample"], tot) +
                      "".join(" %9.0f" % (n * 1e6 / tot)
                              for n in PROJECT_CORES))
        for fmt in ("json", "json17"):
            r = get("peer", model, fmt, hi)
            if r:
                print("  %-10s %-6s %-6s %6s %9s %9s %9.1f"
                      % ("node+ort", model, fmt, "-", "-", "-",
                         r["cpu_us_req"]) +
                      "".join(" %9.0f" % (n * 1e6 / r["cpu_us_req"])
                              for n in PROJECT_CORES))
    if ngx.get(hi):
        r = ngx[hi]
        print("  %-10s %-6s %-6s %6s %9s %9s %9.1f"
              % ("nginx", "-", "json", "-", "-", "-", r["cpu_us_req"]) +
              "".join(" %9.0f" % (n * 1e6 / r["cpu_us_req"])
                      for n in PROJECT_CORES))
    print("  loop_us: HTTP loop threads' CPU per request (threads named "
          "ss-http-N);\n  exec_us: every other thread's CPU per sample "
          "(the executor threads are not\n  named: they, their OpenMP "
          "workers and the main thread are counted together).\n  N cores: "
          "N x 1e6 / total_us req/s -- linear scaling at this batch size, "
          "clients\n  on other machines, no lock contention; CPU from "
          "/proc/PID/task/*/%s."
          % ("schedstat (ns)" if SCHEDSTAT else "stat utime+stime"))
    print()

    # Targets.
    print("Targets (c=%d, JSON bodies, same run)" % hi)
    for model in MODELS:
        for fmt in ("json", "json17"):
            s, p = get("slim", model, fmt, hi), get("peer", model, fmt, hi)
            if s and p:
                x = s["rps"] / p["rps"]
                print("  vs node+ort   %-4s %-6s %8.0f / %6.0f req/s = "
                      "%5.2fx (target >= 5x)    %s"
                      % (model, fmt, s["rps"], p["rps"], x, verdict(x >= 5)))
    for fmt in ("json", "json17"):
        s, n = get("slim", "mlp", fmt, hi), ngx.get(hi)
        if s and n:
            x = s["rps"] / n["rps"]
            print("  vs nginx      mlp  %-6s %8.0f / %6.0f req/s = %5.2f  "
                  "(target >= 0.50)  %s"
                  % (fmt, s["rps"], n["rps"], x, verdict(x >= 0.5)))
    for model in MODELS:
        for fmt in ("json", "json17"):
            s = get("slim", model, fmt, hi)
            if s:
                print("  p99           %-4s %-6s %8.2f ms %21s(target <= 5 ms)"
                      "  %s" % (model, fmt, s["p99_us"] / 1e3, "",
                                verdict(s["p99_us"] <= 5000)))
    on, off = get("slim", "cnn", "json", hi), get("b1", "cnn", "json", hi)
    if on and off:
        x = on["rps"] / off["rps"]
        print("  batching      cnn  json   %8.0f / %6.0f req/s = %5.2fx "
              "(target >= 2x)    %s" % (on["rps"], off["rps"], x,
                                        verdict(x >= 2)))
    if all(r for _, r in lr):
        x = lr[1][1]["rps"] / lr[0][1]["rps"]
        free = a.server_ncpus >= 2 and "kept apart" in a.placement and \
            "NOT" not in a.placement
        print("  2 loops / 1   mlp  json   %8.0f / %6.0f req/s = %5.2fx "
              "(target >= 1.5x)  %s%s"
              % (lr[1][1]["rps"], lr[0][1]["rps"], x, verdict(x >= 1.5),
                 "" if free else "  (cores not free: wrk shares them)"))
    errs = sum(r["errors"] for k, r in res.items()
               if k[0] in ("slim", "b1", "loops1", "loops2"))
    reqs = sum(r["requests"] for k, r in res.items()
               if k[0] in ("slim", "b1", "loops1", "loops2"))
    print("  lost requests: %d non-2xx or socket errors in %d slimserve "
          "requests (target 0)  %s" % (errs, reqs, verdict(errs == 0)))
    print("  1,000 models: not measured here (bench/pool.py models "
          "--count 1000)")


# ---- main -------------------------------------------------------------------

def add_args(p):
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds; the tables show medians over them")
    p.add_argument("--warmup", type=float, default=1,
                   help="seconds of load per server and model before the "
                   "rounds (compiles the plans the batches need)")
    p.add_argument("--peer-workers", type=int, default=2)
    p.add_argument("--peer-intra", type=int, default=1,
                   help="onnxruntime intraOpNumThreads per peer worker")
    p.add_argument("--wrk-cpus", default=None,
                   help="CPUs for wrk (taskset list, or 'none'); default: "
                   "a quarter of the CPUs (the last ones) on 4 or more, "
                   "the last CPU below")
    p.add_argument("--server-cpus", default=None,
                   help="CPUs for every server (taskset list, or 'all'); "
                   "default: the CPUs wrk does not use, on 4 or more")
    p.add_argument("--wrk-threads", type=int, default=None,
                   help="wrk -t (default: one per wrk CPU)")
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-loops", action="store_true",
                   help="skip the 1 vs 2 HTTP loops daemons")
    p.add_argument("--no-batch-off", action="store_true",
                   help="skip the cnn batching-off points")


def version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def main(a):
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing (apt-get install wrk)")
    if not os.access(os.path.join(a.build, "server", "slimserve"), os.X_OK):
        sys.exit("server/slimserve is missing in %s: build first" % a.build)
    if importlib.util.find_spec("onnx") is None:
        sys.exit("python3-onnx is missing (apt-get install python3-onnx): "
                 "it writes the benchmark's models")
    a.wrk_cpus, a.server_cpus, a.server_ncpus, a.placement = placement(a)
    if a.wrk_threads is None:
        a.wrk_threads = len(parse_cpus(a.wrk_cpus)) if a.wrk_cpus else 1
    notes = []
    if not a.no_nginx and shutil.which("nginx") is None:
        notes.append("nginx is not installed (apt-get install nginx-light): "
                     "no HTTP ceiling")
        a.no_nginx = True
    if not a.no_peer and (shutil.which("node") is None or
                          not os.path.exists(ORT_PKG)):
        notes.append("node or bench/node_modules/onnxruntime-node is "
                     "missing (cd bench && ONNXRUNTIME_NODE_INSTALL=skip "
                     "npm ci): no peer")
        a.no_peer = True

    env = {"load0": serve.loadavg(), "priority": serve.boost(a.nice)}
    tmp = tempfile.mkdtemp(prefix="ss-bench-scale-")
    running = []
    res = {}
    try:
        models = serve_models.write_all(os.path.join(tmp, "models"))
        bodies = Bodies(tmp, models["image"])
        info = ["bodies (one 28x28 image):"] + \
            ["  " + x for x in bodies.describe()]
        srv_workers = a.server_ncpus

        log("starting servers")
        slims = []
        main_s = Slim(a, tmp, "main", {
            "mlp": ("mlp", models["mlp"], {}),
            "cnn": ("cnn", models["cnn"], {}),
            "cnn_b1": ("cnn", models["cnn"], {"max_batch_size": 1})})
        running.append(main_s)
        slims.append(main_s)
        loops = {}
        if not a.no_loops:
            for n in (1, 2):
                s = Slim(a, tmp, "loops%d" % n,
                         {"mlp": ("mlp", models["mlp"], {})},
                         http_threads=n)
                running.append(s)
                slims.append(s)
                loops[n] = s
        ngx = peer = None
        if not a.no_nginx:
            ngx = Nginx(tmp, a.server_cpus, srv_workers)
            running.append(ngx)
        if not a.no_peer:
            peer = Peer(tmp, {m: models[m] for m in MODELS}, a.server_cpus,
                        a.peer_workers, a.peer_intra)
            running.append(peer)

        nl, no = main_s.threads()
        info.append("slimserve: %s; %d HTTP loop threads (ss-http-N), %d "
                    "other threads (executors, OpenMP workers, main: not "
                    "named); --threads %s, --http-threads default; models' "
                    "config.json: {} (max_batch_size 32, "
                    "max_queue_delay_us 0), cnn_b1 {\"max_batch_size\": 1}"
                    % (version([os.path.join(a.build, "server", "slimserve"),
                                "--version"]), nl, no,
                       a.threads if a.threads is not None else "default"))
        if peer:
            info.append("node+ort: node %s, onnxruntime-node %s, %d cluster "
                        "workers, intraOpNumThreads %d, one session.run a "
                        "request" % (version(["node", "--version"]),
                                     json.load(open(ORT_PKG))["version"],
                                     a.peer_workers, a.peer_intra))
        if ngx:
            info.append("nginx: %s, %d workers, keepalive_requests 1000000"
                        % (version(["nginx", "-v"]).replace(
                            "nginx version: ", ""), srv_workers))
        info += check_answers(bodies, models, slims, peer)

        points = []
        for c in a.concurrency:
            if ngx:
                points.append(Point(("nginx", None, "json", c), ngx, None,
                                    "mlp", "json", c))
            for model in MODELS:
                if peer:
                    for fmt in ("json", "json17"):
                        points.append(Point(("peer", model, fmt, c), peer,
                                            model, model, fmt, c))
                for fmt in FORMATS:
                    points.append(Point(("slim", model, fmt, c), main_s,
                                        model, model, fmt, c))
            # Batching off matters only where batches can form.
            if not a.no_batch_off and c > 1:
                points.append(Point(("b1", "cnn", "json", c), main_s,
                                    "cnn_b1", "cnn", "json", c))
        for n, s in sorted(loops.items()):
            points.append(Point(("loops%d" % n, "mlp", "json",
                                 max(a.concurrency)), s, "mlp", "mlp",
                                "json", max(a.concurrency)))
        warm = [(s, m, bm) for s in slims for m, bm in s.models.items()]
        if peer:
            warm += [(peer, m, m) for m in MODELS]
        est = len(points) * a.repeats * (a.duration + 0.15) + \
            len(warm) * 2 * (a.warmup + 0.1)
        log("%d points x %d rounds x %d s: about %.0f s"
            % (len(points), a.repeats, a.duration, est))
        t0 = time.monotonic()
        # Warm-up: every batch size compiles its own plan when it first
        # forms; two loads at the top concurrency with different bodies
        # meet most sizes before the rounds.  The peer: the JIT.
        for s, m, bm in warm:
            if a.warmup > 0:
                fmts = ("json",) if isinstance(s, Peer) else ("binary",
                                                              "json")
                for fmt in fmts:
                    c = max(a.concurrency)
                    url = "http://127.0.0.1:%d/v2/models/%s/infer" % (
                        s.port, m)
                    serve.wrk(url, max(1, int(round(a.warmup))), c,
                              LUA_POST, bodies.args(bm, fmt),
                              threads=a.wrk_threads, cpus=a.wrk_cpus)
        runs = {}
        for rnd in range(a.repeats):
            for pt in points:
                r = run_point(a, pt, bodies)
                runs.setdefault(pt.key, []).append(r)
                log("  round %d %-6s %-4s %-6s c=%-3d %8.0f req/s p50 %6d "
                    "p99 %6d us%s err %d"
                    % (rnd + 1, pt.key[0], pt.key[1] or "-", pt.key[2],
                       pt.conc, r["rps"], r["p50_us"], r["p99_us"],
                       " b %.2f" % r["avg_batch"] if "avg_batch" in r
                       else "", r["errors"]))
        res = {k: summarize(v) for k, v in runs.items()}
        log("measured in %.0f s" % (time.monotonic() - t0))
        for s in running:
            if not s.alive():
                notes.append("%s exited during the run: its numbers are "
                             "not to be trusted" % s.kind)
        sat = sorted("%s %s %s c=%d" % (k[0], k[1] or "-", k[2], k[3])
                     for k, r in res.items()
                     if r["wrk_cores"] >= 0.9 * a.wrk_threads)
        if sat:
            notes.append("wrk used %d core(s) of %d at: %s -- there the "
                         "load generator was the limit, not the server "
                         "(more --wrk-threads/--wrk-cpus)"
                         % (a.wrk_threads, a.wrk_threads, ", ".join(sat)))
        env["load1"] = serve.loadavg()
        report(a, env, res, notes, info)
    finally:
        for s in reversed(running):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
