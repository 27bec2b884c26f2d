# SPDX-License-Identifier: Apache-2.0
"""Serving a model whose inputs decide shapes by their values (issue 12):
a Reshape's target shape and a TopK's K given per request.  The engine
compiles a plan per distinct value (engine/plan/plan.c), the batcher keys
its plan cache on the values and runs such requests alone
(server/batch); a value no shape can be made of is a 400 for that
request only.  Outputs are compared with numpy: Reshape exactly, TopK
values exactly and indices exactly (distinct inputs, no ties)."""

import os
import sys
import tempfile
import threading

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import Daemon  # noqa: E402
import kserve  # noqa: E402

ADMIN = ["--admin-insecure"]


def make_model(path):
    """x f32[2,12] -> Relu(Reshape(x, shape)) (shape: int64[r], any r);
    y f32[3,10] -> TopK(y, k, axis=-1) (k: int64[1])."""
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r0"], name="reshape"),
         helper.make_node("Relu", ["r0"], ["r"], name="relu"),
         helper.make_node("TopK", ["y", "k"], ["values", "indices"],
                          name="topk", axis=-1)],
        "shape_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, ["r"]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 10]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("values", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("indices", TensorProto.INT64, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


RNG = np.random.default_rng(12)
X = RNG.standard_normal((2, 12)).astype(np.float32)
# distinct values: TopK's order (and its indices) is then unique
Y = RNG.permutation(30).reshape(3, 10).astype(np.float32) - 15


def request(shape, k):
    return {"x": X, "shape": np.array(shape, dtype=np.int64),
            "y": Y, "k": np.array([k], dtype=np.int64)}


def reference(shape, k):
    # ONNX: a 0 copies the input's dim there (allowzero 0)
    shape = [X.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    r = np.maximum(X.reshape(shape), 0)
    idx = np.argsort(-Y, axis=-1, kind="stable")[:, :k]
    return {"r": r, "values": np.take_along_axis(Y, idx, -1),
            "indices": idx.astype(np.int64)}


def infer(d, inputs, binary=False):
    if binary:
        body, hdrs = kserve.binary_request(inputs)
    else:
        body, hdrs = kserve.json_request(inputs), None
    st, hd, data = d.post("/v2/models/m/infer", body, headers=hdrs,
                          timeout=30)
    if st != 200:
        return st, data
    return st, kserve.parse_response(data, hd)[1]


def matches(outs, want):
    return all(k in outs and outs[k].shape == want[k].shape and
               np.array_equal(outs[k], want[k]) for k in want)


GOOD = [([2, 3, 4], 3), ([24], 1), ([4, -1], 10), ([1, 2, 3, 4], 5),
        ([0, 12], 2), ([3, 8], 3)]
# (shape, k, why): a shape of the wrong size, two -1, K past the axis,
# K negative
BAD = [([5, 7], 3, "35 elements for 24"), ([-1, -1], 2, "two -1"),
       ([2, 12], 11, "K 11 past an axis of 10"), ([24], -1, "K -1")]


def main():
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        tap.skip_all("python3-onnx is not installed (%s)" % e)
    tmp = tempfile.mkdtemp(prefix="ss-shape-in.")
    os.makedirs(os.path.join(tmp, "m", "1"))
    make_model(os.path.join(tmp, "m", "1", "model.onnx"))
    with Daemon(ADMIN, repository=tmp) as d:
        st, _, _ = d.get("/v2/models/m/ready")
        tap.eq(st, 200, "a model with shape-deciding inputs loads")
        for shape, k in GOOD:
            for binary in (False, True):
                st, outs = infer(d, request(shape, k), binary)
                tap.ok(st == 200 and matches(outs, reference(shape, k)),
                       "shape %s, K %d (%s): outputs equal numpy's"
                       % (shape, k, "binary" if binary else "JSON"),
                       "" if st == 200 else outs)
        for shape, k, why in BAD:
            st, data = infer(d, request(shape, k))
            tap.ok(st == 400 and b"deciding shapes" in data,
                   "%s is 400 naming the input" % why,
                   "%s %s" % (st, data[:300]))
        # Mixed good and bad requests from 6 threads at once, 8 each:
        # every good one gets its own values' answer, every bad one its
        # 400, whatever ran next to it.
        results = []
        lock = threading.Lock()

        def client(t):
            for i in range(8):
                if (t + i) % 3 == 2:
                    shape, k, _ = BAD[(t + i) % len(BAD)]
                    st, _ = infer(d, request(shape, k))
                    ok = st == 400
                else:
                    shape, k = GOOD[(t * 8 + i) % len(GOOD)]
                    st, outs = infer(d, request(shape, k), binary=i % 2)
                    ok = st == 200 and matches(outs, reference(shape, k))
                with lock:
                    results.append((ok, t, i, shape, k, st))

        threads = [threading.Thread(target=client, args=(t,))
                   for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        bad = [r for r in results if not r[0]]
        tap.ok(len(results) == 48 and not bad,
               "48 concurrent mixed requests: each got its own answer",
               "%d results; wrong: %s" % (len(results), bad[:5]))
        st, outs = infer(d, request([2, 3, 4], 3))
        tap.ok(st == 200 and matches(outs, reference([2, 3, 4], 3)),
               "the first values still answer right after all that")
        tap.eq(d.stop(), 0, "clean exit")
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
