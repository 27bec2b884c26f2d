#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Sweep: torchvision 0.14's other families -- video classification,
detection / keypoint / instance segmentation, optical flow -- exported by
PyTorch at opsets 13 and 17, through slimserve-infer, against PyTorch and
ONNX Runtime.

Not part of `make check` (minutes per net); run by hand from a build dir:

    top_builddir=$PWD top_srcdir=/path/to/src \\
      /usr/bin/python3 $top_srcdir/tests/sweep/tv_families.py [names...]

names: a subset of MODELS (default all).  Environment: SWEEP_DIR (exports
and outputs; default /tmp/ss-fam), OPSETS (default 13,17), SWEEP_REEXPORT=1
(export again even when the file exists).

Random weights (seed 1, BatchNorm statistics randomised so outputs vary),
eval mode, small inputs.  Detectors get a score threshold of 0.001 so a
random net keeps detections (torchvision's 0.05 leaves none: a check of
empty outputs would pass vacuously).  Each (net, opset) is

  export:  whether torch 1.13 writes it (the exporter's refusal printed);
  load:    slimserve-infer runs it, or the engine's refusal;
  match:   every output within 1e-4 of max|want| against ONNX Runtime's
           run of the same file (the reference for the ONNX graph; or
           within 3x ORT's own distance from PyTorch where a random
           detector amplifies f32 rounding past 1e-4) and against PyTorch
           (printed: opset 16+ RoiAlign reads torchvision's aligned=False
           as half_pixel, docs/ops.md).  Detections (boxes, scores, labels, masks,
           keypoints: outputs sharing the detection count) are compared
           as rows sorted by score, so an order of equal scores does not
           count; a different count is reported as such.

Prints a line per (net, opset) and a matrix; exit 1 on a wrong answer or
a crash (the engine's refusals are listed, not defects here).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "engine"))
import infer as cli  # noqa: E402

import torch  # noqa: E402
import torchvision.models.detection as tvd  # noqa: E402
import torchvision.models.optical_flow as tvf  # noqa: E402
import torchvision.models.video as tvv  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
ORT_JS = os.path.join(TOP_SRC, "bench", "engine_ort.js")
ORT_DIR = os.environ.get("SWEEP_ORT_DIR", os.path.join(TOP_SRC, "bench"))
DIR = os.environ.get("SWEEP_DIR", "/tmp/ss-fam")
TOL = 1e-4
cli.TIMEOUT = 1800      # a detector's run on a loaded 2-vCPU machine


class Det(torch.nn.Module):
    """A detector on one image [3, H, W]: its first result's tensors as a
    tuple (boxes, scores, labels[, masks | keypoints, keypoint scores])."""

    def __init__(self, m, he):
        super().__init__()
        self.m, self.he = m, he

    def forward(self, x):
        r = self.m([x])[0]
        return tuple(r[k] for k in ("boxes", "scores", "labels", "masks",
                                    "keypoints", "keypoints_scores")
                     if k in r)


class Flow(torch.nn.Module):
    """RAFT's last flow estimate (it returns one per update)."""

    def __init__(self, m, updates):
        super().__init__()
        self.m, self.updates = m, updates

    def forward(self, a, b):
        return self.m(a, b, num_flow_updates=self.updates)[-1]


LOW = {"box_score_thresh": 0.001}  # R-CNNs
SMALL = {"min_size": 160, "max_size": 160}


def video(mk, t, hw):
    return lambda: (mk(), [(1, 3, t, hw, hw)])


def det(mk, hw, he=True, **kw):
    return lambda: (Det(mk(weights=None, weights_backbone=None, **kw), he),
                    [(3, hw, hw)])


# name -> () -> (module, input shapes)
MODELS = {
    "r3d_18": video(tvv.r3d_18, 8, 64),
    "mc3_18": video(tvv.mc3_18, 8, 64),
    "r2plus1d_18": video(tvv.r2plus1d_18, 8, 64),
    # S3D's head pools (2, 7, 7): 16 frames of 224 at least
    "s3d": video(tvv.s3d, 16, 224),
    # MViT's positional embeddings fix 16 x 224 x 224
    "mvit_v1_b": video(tvv.mvit_v1_b, 16, 224),
    "mvit_v2_s": video(tvv.mvit_v2_s, 16, 224),
    "ssdlite320_mobilenet_v3_large": det(
        tvd.ssdlite320_mobilenet_v3_large, 160, score_thresh=0.001),
    # VGG without BatchNorm: He weights saturate every score at 1.0 and
    # clip every box; torchvision's own init spreads them (0.57-0.98)
    "ssd300_vgg16": det(tvd.ssd300_vgg16, 160, he=False,
                        score_thresh=0.001),
    "fasterrcnn_mobilenet_v3_large_320_fpn": det(
        tvd.fasterrcnn_mobilenet_v3_large_320_fpn, 160, **LOW),
    "fasterrcnn_resnet50_fpn": det(tvd.fasterrcnn_resnet50_fpn, 160,
                                   **LOW, **SMALL),
    "retinanet_resnet50_fpn": det(tvd.retinanet_resnet50_fpn, 160,
                                  score_thresh=0.001, **SMALL),
    "fcos_resnet50_fpn": det(tvd.fcos_resnet50_fpn, 160,
                             score_thresh=0.001, **SMALL),
    "keypointrcnn_resnet50_fpn": det(tvd.keypointrcnn_resnet50_fpn, 160,
                                     **LOW, **SMALL),
    "maskrcnn_resnet50_fpn": det(tvd.maskrcnn_resnet50_fpn, 160,
                                 **LOW, **SMALL),
    # RAFT's correlation pyramid has 4 levels below 1/8: at 64x64 the
    # last is 1x1 and PyTorch's own flow is NaN; 128 is the least that works
    "raft_small": lambda: (Flow(tvf.raft_small(), 3),
                           [(1, 3, 128, 128), (1, 3, 128, 128)]),
}


def scramble(m):
    """BatchNorm statistics and affine random (a fresh BatchNorm is the
    identity, which hides folding mistakes); eval mode.  A detector's
    layers get He-initialised weights (unless he=False): torchvision's
    heads start at std 0.01-0.03, so every class score of a random net is
    ~1/91 and thousands lie within float rounding of each other, where
    any two correct engines rank them differently."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(m, Det) and m.he and isinstance(
                    mod, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(mod.weight)
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                cli.random_norm(mod)
    return m.eval()


def rel(g, w):
    g = np.asarray(g, np.float64)
    w = np.asarray(w, np.float64)
    if w.size == 0:
        return 0.0
    return float(np.max(np.abs(g - w)) / max(1e-6, np.max(np.abs(w))))


def ort_run(model, names, xs):
    """ONNX Runtime's outputs (a list in the graph's order), or None."""
    if not shutil.which("node") or not os.path.isdir(
            os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return None
    import onnx
    outs = [o.name for o in onnx.load(model, load_external_data=False)
            .graph.output]
    with tempfile.TemporaryDirectory(prefix="ort.") as d:
        specs = []
        for i, (n, x) in enumerate(zip(names, xs)):
            f = os.path.join(d, "in%d.bin" % i)
            np.ascontiguousarray(x, np.float32).tofile(f)
            specs.append({"name": n, "dtype": "float32",
                          "shape": list(x.shape), "file": f})
        jf = os.path.join(d, "job.json")
        with open(jf, "w") as f:
            json.dump({"model": model, "threads": 1, "outputs_dir": d,
                       "inputs": specs}, f)
        p = subprocess.run(["node", ORT_JS, jf], capture_output=True,
                           text=True, cwd=ORT_DIR, env=dict(
                               os.environ, NODE_PATH=os.path.join(
                                   ORT_DIR, "node_modules")))
        if p.returncode:
            return "ORT fails: " + p.stderr.strip().splitlines()[-1][:200]
        res = []
        for o in outs:
            with open(os.path.join(d, o + ".json")) as f:
                meta = json.load(f)
            dt = {"float32": np.float32, "int64": np.int64,
                  "int32": np.int32}[meta["type"]]
            res.append(np.fromfile(os.path.join(d, o + ".bin"), dt)
                       .reshape(meta["dims"]))
        return res


def match(got, want):
    """Pairs of rows (got, want) of two detection results: each want row,
    by descending score, takes the unused got row of its label nearest in
    box and score.  Returns (pairs, rows of want left unmatched)."""
    gb, wb = (np.asarray(o[0], np.float64) for o in (got, want))
    gs, ws = (np.asarray(o[1], np.float64) for o in (got, want))
    gl, wl = got[2], want[2]
    scale = max(1e-6, np.abs(wb).max() if wb.size else 1)
    used, pairs, left = np.zeros(len(gs), bool), [], []
    for j in np.argsort(-ws, kind="stable"):
        cost = np.abs(gb - wb[j]).max(1) / scale + np.abs(gs - ws[j])
        cost[(gl != wl[j]) | used] = np.inf
        i = int(np.argmin(cost)) if len(cost) else -1
        if i < 0 or cost[i] > 1e-3:
            left.append(int(j))
            continue
        used[i] = True
        pairs.append((i, int(j)))
    return pairs, left


def compare(got, want, detections):
    """(worst relative error, text): per output, rel to max|want|.
    Detections are compared row to row as match() pairs them; rows one
    side has and the other not are counted (an order of near-equal scores
    -- a random net's softmax gives thousands within 1e-7 of each other --
    decides them differently at the per-level TopK and at the final cut)."""
    if len(got) != len(want):
        return 99, "%d outputs, want %d" % (len(got), len(want))
    text = ""
    if detections:
        pairs, left = match(got, want)
        gi = np.array([i for i, _ in pairs], np.int64)
        wi = np.array([j for _, j in pairs], np.int64)
        got = [np.asarray(o)[gi] for o in got]
        want = [np.asarray(o)[wi] for o in want]
        text = "%d matched, %d unmatched; " % (len(pairs), len(left))
    worst, parts = 0.0, []
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            return 99, "output %d shape %s, want %s" % (i, a.shape, b.shape)
        e = rel(a, b)
        worst = max(worst, e)
        parts.append("%.1e" % e)
    return worst, text + "/".join(parts)


ROWS = {}
BAD = []


def row(name, op, text, bad=False):
    ROWS.setdefault(name, {})[op] = ("DEFECT " if bad else "") + text
    if bad:
        BAD.append("%s op%d: %s" % (name, op, text))
    print("%-40s op%-3d %s" % (name, op, text), flush=True)


def one(name, opsets):
    torch.manual_seed(1)
    m, shapes = MODELS[name]()
    scramble(m)
    torch.manual_seed(2)
    xs = [torch.rand(*s) if len(s) == 3 else torch.randn(*s) for s in shapes]
    with torch.no_grad():
        y = m(*xs)
    ys = [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]
    names = ["x%d" % i for i in range(len(xs))]
    detections = isinstance(m, Det)
    for op in opsets:
        p = os.path.join(DIR, "%s_op%d.onnx" % (name, op))
        if not os.path.exists(p) or os.environ.get("SWEEP_REEXPORT"):
            try:
                with torch.no_grad():
                    torch.onnx.export(m, tuple(xs), p, input_names=names,
                                      opset_version=op)
            except Exception as e:  # noqa: BLE001 - the exporter's refusal
                row(name, op, "export fails: %s" %
                    str(e).strip().splitlines()[0][:160])
                if os.path.exists(p):
                    os.unlink(p)
                continue
        with cli.Scratch() as s:
            np.savez(s.file("x.npz"), **{n: x.numpy()
                                         for n, x in zip(names, xs)})
            got, msg = cli.run(p, [s.file("x.npz")], s.file("y.npz"))
        if got is None:
            crash = "exit status -" in msg or "Sanitizer" in msg \
                or "timed out" in msg
            row(name, op, "refused: " + msg.strip().splitlines()[-1][:240],
                crash)
            continue
        import onnx
        order = [o.name for o in onnx.load(p, load_external_data=False)
                 .graph.output]
        got = [got[o] for o in order]
        ort = ort_run(p, names, [x.numpy() for x in xs])
        text, bad = "loads", False
        e, t = compare(got, ys, detections)
        if isinstance(ort, list):
            eo, to = compare(got, ort, detections)
            # two engines' f32 rounding, amplified by a random net: ORT
            # against PyTorch says how far correct answers lie apart
            ot, _ = compare(ort, ys, detections)
            text += "; vs ORT %.1e (%s); ORT vs torch %.1e" % (eo, to, ot)
            bad = not (eo <= TOL or eo <= 3 * ot)
        else:
            text += "; " + (ort or "no ORT here")
            bad = not e <= TOL
        text += "; vs torch %.1e (%s)" % (e, t)
        if detections:
            sc = np.unique(ys[1])
            text += "; %d detections, %d distinct scores" % (len(ys[1]),
                                                              len(sc))
            if len(sc) < 2:
                text += " (VACUOUS: no ranking to check)"
        row(name, op, text, bad)


def main():
    names = sys.argv[1:] or list(MODELS)
    unknown = [a for a in names if a not in MODELS]
    if unknown:
        sys.exit("unknown: %s" % unknown)
    os.makedirs(DIR, exist_ok=True)
    opsets = [int(o) for o in os.environ.get("OPSETS", "13,17").split(",")]
    for n in names:
        try:
            one(n, opsets)
        except Exception as e:  # noqa: BLE001 - PyTorch itself fails
            row(n, 0, "torch fails: %s" % str(e).strip().splitlines()[0])
    print("\n# matrix")
    for n, r in ROWS.items():
        for op, t in r.items():
            print("%-40s op%-3d %s" % (n, op, t))
    print("\n# %d wrong or crashed" % len(BAD))
    for t in BAD:
        print("  " + t)
    sys.exit(1 if BAD else 0)


if __name__ == "__main__":
    main()
