# SPDX-License-Identifier: Apache-2.0
"""A small KServe V2 client for tests: JSON and binary tensors."""

import json

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64,
          "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8,
          "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def json_request(inputs, outputs=None, rid=None):
    """inputs: {name: ndarray} -> bytes of a JSON request."""
    body = {"inputs": [{"name": n, "shape": list(a.shape),
                        "datatype": NAMES[a.dtype],
                        "data": a.flatten().tolist()}
                       for n, a in inputs.items()]}
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    if rid is not None:
        body["id"] = rid
    return json.dumps(body).encode()


def binary_request(inputs, binary_output=True):
    """-> (body bytes, headers) using the binary tensor extension."""
    head = {"inputs": [], "parameters": {"binary_data_output": binary_output}}
    tails = []
    for n, a in inputs.items():
        raw = np.ascontiguousarray(a).tobytes()
        head["inputs"].append({"name": n, "shape": list(a.shape),
                               "datatype": NAMES[a.dtype],
                               "parameters": {"binary_data_size": len(raw)}})
        tails.append(raw)
    h = json.dumps(head).encode()
    return h + b"".join(tails), {
        "Inference-Header-Content-Length": str(len(h)),
        "Content-Type": "application/octet-stream"}


def parse_response(body, headers):
    """-> (json header, {output name: ndarray})."""
    hl = None
    for k, v in headers.items():
        if k.lower() == "inference-header-content-length":
            hl = int(v)
    head = json.loads(body[:hl] if hl is not None else body)
    outs = {}
    off = hl or 0
    for o in head.get("outputs", []):
        dt = DTYPES[o["datatype"]]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outs[o["name"]] = np.frombuffer(
                body[off:off + size], dtype=dt).reshape(o["shape"])
            off += size
        else:
            outs[o["name"]] = np.array(o["data"], dtype=dt).reshape(
                o["shape"])
    return head, outs
