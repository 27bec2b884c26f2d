# SPDX-License-Identifier: Apache-2.0
"""Compression jobs on convolution architectures through the admin API
(issue 12): a small net with a mobilenet_v2 inverted residual (expand 1x1
-> Clip -> depthwise 3x3 -> Clip -> project 1x1 -> Add) and a resnet
basic block (conv1 -> Relu -> conv2 -> Add -> Relu), then global average
pooling and a Linear layer, built with onnx.helper.

Structured pruning at 50% must remove the expanded channels (expand's
outputs, the depthwise filters and group, project's inputs) and the
block's inner width (conv1's outputs, conv2's inputs) and nothing a
residual Add reads; the served variant must compute what numpy computes
for the source with the removed channels left unread (1e-5 relative).
Low-rank must factor the 3x3 convs of a low-rank net into the two
convs the details name, again matching numpy.  A net where nothing can
be pruned ends rejected with the reason, writing no version."""

import os
import shutil
import sys
import tempfile

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo  # noqa: E402

try:
    import onnx
    from onnx import helper, numpy_helper, TensorProto
except ImportError:  # pragma: no cover - the CI image has it
    onnx = None

ADMIN = ["--admin-insecure", "--job-threads=1"]
RNG = np.random.default_rng(12)


def conv_np(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), group=1):
    """NCHW convolution in float64 (the reference)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]),
                                      (pads[1], pads[3])))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1
    og = o // group
    y = np.zeros((n, o, ho, wo))
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride[0] * ho:stride[0],
                           j:j + stride[1] * wo:stride[1]]
                y[:, g * og:(g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def forward(p, x):
    """The test net in numpy: p maps initializer names to arrays."""
    e = np.clip(conv_np(x, p["we"], p["be"]), 0, 6)
    d = np.clip(conv_np(e, p["wd"], p["bd"], pads=(1, 1, 1, 1),
                        group=p["wd"].shape[0]), 0, 6)
    y = conv_np(d, p["wp"], p["bp"]) + x
    c1 = np.maximum(conv_np(y, p["wc1"], p["bc1"], pads=(1, 1, 1, 1)), 0)
    a = np.maximum(conv_np(c1, p["wc2"], p["bc2"], pads=(1, 1, 1, 1)) + y,
                   0)
    return a.mean(axis=(2, 3)) @ p["wfc"].T.astype(np.float64) + p["bfc"]


def params():
    def r(*shape, s=0.5):
        return (RNG.uniform(-s, s, shape)).astype(np.float32)

    p = {"we": r(16, 4, 1, 1), "be": r(16, s=0.3) + 1.0,
         "wd": r(16, 1, 3, 3), "bd": r(16, s=0.3),
         "wp": r(4, 16, 1, 1), "bp": r(4, s=0.3),
         "wc1": r(8, 4, 3, 3), "bc1": r(8, s=0.3) + 0.5,
         "wc2": r(4, 8, 3, 3), "bc2": r(4, s=0.3),
         "wfc": r(10, 4), "bfc": r(10, s=0.1)}
    # The channels to go: odd expand and conv1 outputs, 100x smaller.
    p["we"][1::2] *= 0.01
    p["wc1"][1::2] *= 0.01
    return p


def model(p, tied=None):
    """The net; tied maps an initializer name to one of equal value that
    it becomes an Identity of, as torch's exporter writes parameters of
    equal value (e.g. zero-initialized biases)."""
    tied = tied or {}

    def conv(name, ins, out, k, group=1):
        return helper.make_node("Conv", ins, [out], name=name,
                                pads=[k // 2] * 4, group=group)

    nodes = [
        conv("e", ["x", "we", "be"], "e", 1),
        helper.make_node("Clip", ["e", "lo", "hi"], ["er"], name="ce"),
        conv("d", ["er", "wd", "bd"], "d", 3, group=16),
        helper.make_node("Clip", ["d", "lo", "hi"], ["dr"], name="cd"),
        conv("p", ["dr", "wp", "bp"], "p", 1),
        helper.make_node("Add", ["p", "x"], ["y"], name="res1"),
        conv("c1", ["y", "wc1", "bc1"], "c1", 3),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        conv("c2", ["r1", "wc2", "bc2"], "c2", 3),
        helper.make_node("Add", ["c2", "y"], ["a"], name="res2"),
        helper.make_node("Relu", ["a"], ["ar"], name="r2"),
        helper.make_node("GlobalAveragePool", ["ar"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="fl"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["out"], name="fc",
                         transB=1),
    ]
    nodes += [helper.make_node("Identity", [src], [k], name="tie_" + k)
              for k, src in tied.items()]
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()
             if k not in tied]
    inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6, np.float32), "hi")]
    g = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                       ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def setup(tmp, m, x):
    path = os.path.join(tmp, "src.onnx")
    onnx.save(m, path)
    np.savez(os.path.join(tmp, "val.npz"), x=x)
    return repo.with_model(os.path.join(tmp, "r"), "m", onnx=path,
                           files={"val.npz": os.path.join(tmp, "val.npz")})


def submit(d, body):
    st, _, data = d.post("/admin/models/m/compress", body, admin=True)
    return st, json_body(data) or {}


def served(d, x):
    st, hd, data = d.post("/v2/models/m/infer", kserve.json_request({"x": x}))
    head, outs = kserve.parse_response(data, hd)
    return head.get("model_version"), outs.get("out")


def weights(root, v):
    m = onnx.load(os.path.join(root, "m", str(v), "model.onnx"))
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.name: (n, [w.get(i) for i in n.input]) for n in m.graph.node}


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_prune(tmp, tied=None):
    p = params()
    for k, src in (tied or {}).items():
        p[k] = p[src].copy()
    x = RNG.uniform(-2, 2, (16, 4, 8, 8)).astype(np.float32)
    root = setup(tmp, model(p, tied), x)
    with Daemon(ADMIN, repository=root) as d:
        st, js = submit(d, {"methods": [{"method": "prune", "params": {
            "kind": "structured", "sparsity": 0.5, "score": "l2"}}],
            "validation": {"file": "val.npz"},
            "gate": {"min_agreement": 0.0}, "activate": True})
        tap.eq(st, 202, "prune job accepted")
        job = d.wait_job(js.get("job", 0), timeout=300)
        tap.eq(job.get("state"), "succeeded", "prune structured 50%% on the "
               "mobilenet/resnet net (%s)" % job.get("error", ""))
        v = (job.get("result") or {}).get("version")
        nodes = weights(root, v) if v else {}

        def dim(node, inp, ax):
            e = nodes.get(node)
            return None if e is None else e[1][inp].shape[ax]
        tap.eq((dim("e", 1, 0), dim("d", 1, 0), dim("p", 1, 1)), (8, 8, 8),
               "expand outputs, depthwise filters, project inputs: 8 of 16")
        group = [a.i for a in nodes["d"][0].attribute
                 if a.name == "group"] if "d" in nodes else []
        tap.eq(group, [8], "the depthwise conv's group is 8")
        tap.eq((dim("c1", 1, 0), dim("c2", 1, 1)), (4, 4),
               "the block's inner width: 4 of 8")
        tap.eq((dim("e", 1, 1), dim("p", 1, 0), dim("c1", 1, 1),
                dim("c2", 1, 0), dim("fc", 1, 1)), (4, 4, 4, 4, 4),
               "every width a residual Add reads stays 4")
        # numpy: the source with the odd channels unread.
        ref = dict(p)
        ref["wp"] = p["wp"].copy()
        ref["wp"][:, 1::2] = 0
        ref["wc2"] = p["wc2"].copy()
        ref["wc2"][:, 1::2] = 0
        want = forward(ref, x)
        ver, got = served(d, x)
        tap.eq(ver, str(v), "the variant serves")
        tap.ok(got is not None and rel(got, want) < 1e-5,
               "served variant = numpy of the kept channels (rel err %s)"
               % (rel(got, want) if got is not None else None))
        tap.ok(rel(forward(p, x), want) > 1e-4,
               "and the removed channels did contribute to the source")
        tap.eq(d.stop(), 0, "clean exit")


def test_prune_tied(tmp):
    """The depthwise conv's and conv2's biases are Identity nodes of the
    expand's and the project's (equal values): before the methods untied
    them, neither conv was a layer, and neither pair was cut (the sweep's
    squeezenet1_0: 1 of 9 prunable convs cut)."""
    test_prune(tmp, {"bd": "be", "bc2": "bp"})


def test_lowrank(tmp):
    p = params()
    # conv1 of channel rank 2, conv2 of rank 1: 3x3 [O, I*9] = A [O, r]
    # B [r, I*9] (conv2 has 4 outputs: rank 2 would save only half)
    for k, (o, i, r) in (("wc1", (8, 4, 2)), ("wc2", (4, 8, 1))):
        a, b = RNG.uniform(-1, 1, (o, r)), RNG.uniform(-0.5, 0.5, (r, i * 9))
        p[k] = (a @ b).reshape(o, i, 3, 3).astype(np.float32)
    p["wc1"] = np.concatenate([p["wc1"]] * 4)      # 32 outputs, rank 2
    p["bc1"] = np.concatenate([p["bc1"]] * 4)
    p["wc2"] = np.concatenate([p["wc2"]] * 4, axis=1) / 4
    x = RNG.uniform(-2, 2, (16, 4, 8, 8)).astype(np.float32)
    root = setup(tmp, model(p), x)
    with Daemon(ADMIN, repository=root) as d:
        st, js = submit(d, {"methods": [{"method": "lowrank",
                                         "params": {"energy": 0.9999}}],
                            "validation": {"file": "val.npz"},
                            "gate": {"min_agreement": 0.0},
                            "activate": True})
        job = d.wait_job(js.get("job", 0), timeout=300)
        tap.eq(job.get("state"), "succeeded", "lowrank on low-rank convs (%s)"
               % job.get("error", ""))
        res = job.get("result") or {}
        layers = {e["layer"]: e for e in
                  res["details"]["methods"][0]["layers"]} if res else {}
        tap.eq([(layers.get(n) or {}).get("factorization") for n in
                ("c1", "c2")], ["channel", "channel"],
               "conv1 and conv2: channel factorization")
        tap.eq([(layers.get(n) or {}).get("rank") for n in ("c1", "c2")],
               [2, 1], "at ranks 2 and 1")
        nodes = weights(root, res.get("version")) if res else {}
        tap.ok("c1/lowrank_a" in nodes and "c1/lowrank_b" in nodes
               and "c1" not in nodes, "c1 became two convs")
        ver, got = served(d, x)
        want = forward(p, x)
        tap.ok(got is not None and rel(got, want) < 1e-5,
               "served low-rank variant = numpy of the source (rel err %s)"
               % (rel(got, want) if got is not None else None))
        tap.eq(d.stop(), 0, "clean exit")


def test_rejected(tmp):
    # x -> Conv 3x3 -> Add x -> Relu: the conv's width is the residual's.
    w = RNG.uniform(-0.5, 0.5, (4, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="c",
                          pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "x"], ["a"], name="res"),
         helper.make_node("Relu", ["a"], ["out"], name="r")], "res",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                       ["N", 4, 8, 8])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = RNG.uniform(-2, 2, (8, 4, 8, 8)).astype(np.float32)
    root = setup(tmp, m, x)
    with Daemon(ADMIN, repository=root) as d:
        st, js = submit(d, {"methods": [{"method": "prune", "params": {
            "kind": "structured", "sparsity": 0.5}}],
            "validation": {"file": "val.npz"},
            "gate": {"min_agreement": 0.0}})
        job = d.wait_job(js.get("job", 0), timeout=300)
        tap.eq(job.get("state"), "rejected", "nothing prunable: rejected")
        tap.ok("prune changed nothing: no prunable channels"
               in job.get("error", ""), "with the reason (%s)"
               % job.get("error"))
        tap.eq(repo.versions_on_disk(root, "m"), [1], "no version written")
        tap.eq(d.stop(), 0, "clean exit")


def main():
    if onnx is None:
        tap.skip_all("python3-onnx is not installed")
        return 0
    for t in (test_prune, test_prune_tied, test_lowrank, test_rejected):
        tap.diag(t.__name__)
        tmp = tempfile.mkdtemp()
        try:
            t(tmp)
        except Exception as e:
            import traceback
            tap.ok(False, "%s raised %r" % (t.__name__, e),
                   traceback.format_exc())
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
