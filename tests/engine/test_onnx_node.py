#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ONNX's backend node test suite through slimserve-infer.

The cases are generated at test time by python3-onnx (onnx_node_gen.py),
never committed: one folder per case with model.onnx and test_data_set_*/
holding input_N.pb / output_N.pb TensorProtos.  Every case runs through the
CLI users run (inputs converted to one .npz per data set) and ends in one
class:

  pass     every output of every data set has the expected dtype and shape
           and matches as ONNX's own runner checks it:
           numpy.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)
  refused  the engine said no (exit 1) with a message; the op (and node) it
           names goes into the refusal table
  wrong    it ran and an output differs, is missing or has another dtype
           or shape
  crash    killed by a signal, a sanitizer report, an unexpected exit
           status, or no answer within TIMEOUT seconds
  skipped  the classes issue 12 leaves out, with the reason: training-only
           ops and losses, random ops, sequences, strings, optional types

Inputs that decide a shape (Reshape's shape, Slice's starts, TopK's K,
Resize's scales, NonZero's data, ...) are given as inputs, as the node
tests give them, never bound into the graph (no --bind): the engine
compiles the plan for their values.  slimserve-infer --verbose names them;
passes of such cases are counted ("shape_inputs" in the summary).

Wrong and crashed cases fail the test (one TAP line each, "not ok"); passes
are "ok"; refused and skipped are "ok # SKIP" with the reason.  At the end:
the counts, the pass rate over runnable cases (all but skipped), the table
of refusals per op, and a JSON summary (onnx-node-summary.json in the
current directory, or SS_ONNX_NODE_SUMMARY).

Standalone use, for working on ops:
    tests/engine/test_onnx_node.py [--data DIR] [--only SUBSTR] [-v]
(--data reuses generated data; it is generated there when DIR is empty.)
Environment: SLIMSERVE_INFER (the CLI), SS_ONNX_NODE_JOBS (parallel runs,
default 2).  Without python3-onnx the test is skipped, saying so.
"""

import collections
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

RTOL = 1e-3         # onnx.backend.test.runner's defaults
ATOL = 1e-7
TIMEOUT = 120       # seconds per data set: ASan on a loaded machine

TRAINING_DOMAIN = "ai.onnx.preview.training"
SKIP_OPS = {
    "training-only loss op": {"NegativeLogLikelihoodLoss",
                              "SoftmaxCrossEntropyLoss"},
    "random op": {"RandomNormal", "RandomUniform", "RandomNormalLike",
                  "RandomUniformLike", "Multinomial", "Bernoulli"},
    "sequence op": {"SequenceAt", "SequenceConstruct", "SequenceEmpty",
                    "SequenceErase", "SequenceInsert", "SequenceLength",
                    "SequenceMap", "SplitToSequence", "ConcatFromSequence"},
    "string op": {"StringNormalizer", "RegexFullMatch", "StringConcat",
                  "StringSplit", "TfIdfVectorizer"},
    "optional type": {"Optional", "OptionalHasElement",
                      "OptionalGetElement"},
}
# slimserve-infer --verbose's line naming the inputs that decide shapes
SHAPE_INPUTS = re.compile(r"^slimserve-infer: inputs deciding shapes: "
                          r"(.*)$\n?", re.M)
SANITIZER = re.compile(r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|"
                       r"runtime error:")


def skip_reason(model):
    """Why a case is outside the suite's scope, or None."""
    import onnx
    g = model.graph
    for n in g.node:
        if n.domain == TRAINING_DOMAIN:
            return "training-only op %s (%s)" % (n.op_type, n.domain)
        for why, ops in SKIP_OPS.items():
            if n.op_type in ops:
                return "%s %s" % (why, n.op_type)
    for vi in list(g.input) + list(g.output):
        t = vi.type
        kind = t.WhichOneof("value")
        if kind == "sequence_type":
            return "sequence type (%s)" % vi.name
        if kind == "optional_type":
            return "optional type (%s)" % vi.name
        if kind == "tensor_type" and \
                t.tensor_type.elem_type == onnx.TensorProto.STRING:
            return "string tensor (%s)" % vi.name
    return None


def case_ops(model):
    """The ops a case tests: its nodes' op types, in order, once each."""
    seen = []
    for n in model.graph.node:
        if n.op_type not in seen:
            seen.append(n.op_type)
    return seen


def load_pb(path):
    import onnx
    from onnx import numpy_helper
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def data_sets(case_dir):
    return sorted(glob.glob(os.path.join(case_dir, "test_data_set_*")))


def pb_files(ds, kind):
    files = glob.glob(os.path.join(ds, "%s_*.pb" % kind))
    return sorted(files, key=lambda p: int(re.findall(r"_(\d+)\.pb$", p)[0]))


def refusal_key(msg, ops):
    """The op (or opset) a refusal names, for the table."""
    m = re.search(r"opset (\d+) of the default ONNX domain", msg)
    if m:
        return "opset %s" % m.group(1)
    m = re.search(r"unsupported ops?: (.*)", msg)
    if m:
        names = re.findall(r"(?:^|, )([A-Za-z0-9_.:]+) \(node", m.group(1))
        if names:
            return names[0]
    m = re.search(r"node (?:'[^']*'|writing '[^']*'|#\d+) "
                  r"\(([A-Za-z0-9_]+)[ )]", msg)
    if m:
        return m.group(1)
    return (ops[0] if ops else "?") + " (other)"


def compare(got, want):
    """(ok, detail) as onnx's runner: same dtype, assert_allclose."""
    if got is None:
        return False, "output missing"
    if got.dtype != want.dtype:
        return False, "dtype %s, want %s" % (got.dtype, want.dtype)
    if got.shape != want.shape:
        return False, "shape %s, want %s" % (got.shape, want.shape)
    try:
        if want.dtype == np.bool_:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    except AssertionError as e:
        return False, " ".join(str(e).split())[:400]
    return True, "ok"


def save_npz(path, arrays):
    """np.savez(path, **arrays), but for any input name: np.savez's keyword
    arguments swallow an array named "like" (numpy 1.24)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, a in arrays.items():
            with z.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(a),
                                          allow_pickle=False)


def run_data_set(model_path, model, ds, scratch, shape_inputs):
    """Returns (class, detail) for one data set; shape_inputs (a list)
    gets the inputs slimserve-infer says decide shapes."""
    import onnx  # noqa: F401
    init = {i.name for i in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in init]
    out_names = [o.name for o in model.graph.output]
    ins = pb_files(ds, "input")
    outs = pb_files(ds, "output")
    if len(ins) != len(in_names) or len(outs) != len(out_names):
        return "wrong", "data set has %d inputs / %d outputs, model %d / " \
            "%d" % (len(ins), len(outs), len(in_names), len(out_names))
    arrays = {name: load_pb(p) for name, p in zip(in_names, ins)}
    want = {name: load_pb(p) for name, p in zip(out_names, outs)}
    cmd = [infer.cli_path(), "--model", model_path]
    if arrays:
        npz = os.path.join(scratch, "in.npz")
        save_npz(npz, arrays)
        cmd += ["--input", npz]
    out = os.path.join(scratch, "out.npz")
    cmd += ["--output", out, "--threads", "1", "--verbose"]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "crash", "no answer in %d s" % TIMEOUT
    err = p.stderr.decode("utf-8", "replace").strip()
    m = SHAPE_INPUTS.search(err)
    if m is not None:
        shape_inputs[:] = [] if m.group(1) == "none" else \
            m.group(1).split(", ")
        err = SHAPE_INPUTS.sub("", err).strip()
    if SANITIZER.search(err):
        lines = [ln for ln in err.splitlines() if SANITIZER.search(ln)]
        return "crash", "sanitizer: " + lines[0][:300]
    if p.returncode < 0:
        return "crash", "killed by signal %d" % -p.returncode
    if p.returncode == 1:
        return "refused", " ".join(err.split())[:400] or "exit 1, silent"
    if p.returncode != 0:
        return "crash", "exit status %d: %s" % (p.returncode, err[-300:])
    try:
        with np.load(out) as z:
            got = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - a bad .npz is a CLI bug
        return "wrong", "cannot read outputs: %s" % e
    details = []
    good = True
    for k in out_names:
        ok, detail = compare(got.get(k), want[k])
        good = good and ok
        if not ok:
            details.append("%s: %s" % (k, detail))
    return ("pass", "") if good else ("wrong", "; ".join(details))


def run_sets(model_path, model, sets, scratch, shape_inputs):
    for ds in sets:
        cls, detail = run_data_set(model_path, model, ds, scratch,
                                   shape_inputs)
        if cls != "pass":
            return cls, "%s: %s" % (os.path.basename(ds), detail)
    return "pass", ""


def run_case(case_dir):
    """Returns a dict: name, ops, class, detail."""
    import onnx
    name = os.path.basename(case_dir)
    model_path = os.path.join(case_dir, "model.onnx")
    try:
        model = onnx.load(model_path)
    except Exception as e:  # noqa: BLE001
        return {"name": name, "ops": [], "class": "skipped",
                "detail": "onnx cannot load it: %s" % e}
    ops = case_ops(model)
    res = {"name": name, "ops": ops}
    why = skip_reason(model)
    if why is not None:
        res.update({"class": "skipped", "detail": why})
        return res
    sets = data_sets(case_dir)
    if not sets:
        res.update({"class": "skipped", "detail": "no data set"})
        return res
    scratch = tempfile.mkdtemp(prefix="ss-onnx-node.")
    try:
        shape_inputs = []
        cls, detail = run_sets(model_path, model, sets, scratch,
                               shape_inputs)
        if shape_inputs:
            res["shape_inputs"] = shape_inputs
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res.update({"class": cls, "detail": detail})
    if cls == "refused":
        res["refused_for"] = refusal_key(detail, ops)
    return res


def generate(dest):
    gen = os.path.join(HERE, "onnx_node_gen.py")
    p = subprocess.run([sys.executable, gen, dest], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    if p.returncode != 0:
        tap.diag(p.stdout.decode("utf-8", "replace")[-2000:])
    return p.returncode == 0


def parse_args(argv):
    opts = {"data": None, "only": None, "verbose": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--data", "--only") and i + 1 < len(argv):
            opts[a[2:]] = argv[i + 1]
            i += 2
            continue
        if a in ("-v", "--verbose"):
            opts["verbose"] = True
        else:
            sys.stderr.write("usage: %s [--data DIR] [--only SUBSTR] [-v]\n"
                             % sys.argv[0])
            sys.exit(2)
        i += 1
    return opts


def report(results, verbose):
    counts = collections.Counter(r["class"] for r in results)
    for r in results:
        desc = "%s (%s)" % (r["name"], ", ".join(r["ops"]))
        c = r["class"]
        if c == "pass":
            tap.ok(True, desc)
        elif c in ("refused", "skipped"):
            print("ok %d - %s # SKIP %s: %s" % (tap._n + 1, desc, c,
                                               r["detail"][:200]))
            tap._n += 1
        else:
            tap.ok(False, "%s: %s" % (desc, c), r["detail"])
    runnable = sum(counts[c] for c in ("pass", "refused", "wrong", "crash"))
    rate = 100.0 * counts["pass"] / runnable if runnable else 0.0
    shaped = sum(1 for r in results
                 if r["class"] == "pass" and "shape_inputs" in r)
    tap.diag("ONNX node suite: %d cases, %d skipped, %d runnable: "
             "%d pass, %d refused, %d wrong, %d crash; pass rate %.1f%%"
             % (len(results), counts["skipped"], runnable, counts["pass"],
                counts["refused"], counts["wrong"], counts["crash"], rate))
    tap.diag("%d of the passes take shape-deciding inputs at run time "
             "(no --bind)" % shaped)
    table = collections.defaultdict(list)
    for r in results:
        if r["class"] == "refused":
            table[r["refused_for"]].append(r)
    tap.diag("refusals per op (cases, an example):")
    for key, rs in sorted(table.items(), key=lambda kv: (-len(kv[1]),
                                                          kv[0])):
        tap.diag("  %4d  %-26s %s" % (len(rs), key,
                                      rs[0]["detail"][:110] if verbose
                                      else rs[0]["name"]))
    skipped = collections.Counter(r["detail"].split(" (")[0].rsplit(" ", 1)[0]
                                  for r in results if r["class"] == "skipped")
    tap.diag("skipped: " + ", ".join("%s %d" % kv
                                     for kv in sorted(skipped.items())))
    summary = {
        "cases": len(results), "runnable": runnable,
        "pass": counts["pass"], "refused": counts["refused"],
        "wrong": counts["wrong"], "crash": counts["crash"],
        "skipped": counts["skipped"], "pass_rate": round(rate, 2),
        "pass_with_shape_inputs": shaped,
        "rtol": RTOL, "atol": ATOL,
        "refusals_per_op": {k: len(v) for k, v in table.items()},
        "results": results,
    }
    path = os.environ.get("SS_ONNX_NODE_SUMMARY", "onnx-node-summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    tap.diag("summary written to %s" % path)


def main():
    opts = parse_args(sys.argv[1:])
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    cli = infer.cli_path()
    if not tap.ok(os.access(cli, os.X_OK), "slimserve-infer is built",
                  "%s is missing or not executable" % cli):
        return tap.done()
    tmp = None
    data = opts["data"]
    if data is None or not os.path.isdir(os.path.join(data, "node")):
        if data is None:
            tmp = data = tempfile.mkdtemp(prefix="ss-onnx-node-data.")
        if not tap.ok(generate(data), "node test data generated in %s"
                      % data):
            return tap.done()
    try:
        cases = sorted(glob.glob(os.path.join(data, "node", "test_*")))
        if opts["only"]:
            cases = [c for c in cases if opts["only"] in os.path.basename(c)]
        else:
            tap.ok(len(cases) >= 800, "%d node cases generated" % len(cases))
        jobs = int(os.environ.get("SS_ONNX_NODE_JOBS", "2"))
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
            results = list(ex.map(run_case, cases))
        report(results, opts["verbose"])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
