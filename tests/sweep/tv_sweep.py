#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Sweep: every torchvision 0.14 classification architecture (and three
segmentation nets) through the daemon -- inference and compression.

Not part of `make check` (tens of minutes); run by hand from a build dir:

    top_builddir=$PWD top_srcdir=/path/to/src \\
      /usr/bin/python3 $top_srcdir/tests/sweep/tv_sweep.py [phase] [names...]

phase: `infer` (default `all` = infer then compress).  names: a subset of
MODELS.  Environment: SWEEP_DIR (exports and repositories; default
/tmp/ss-sweep), OPSETS (default 13,17), SWEEP_METHODS (default
ptq,bf16,prune,lowrank), SWEEP_OPSET (compression's opset, default 13),
SWEEP_SIZE (other input sides, e.g. "swin_t=112,vit_b_16=112": swin pads
to its 7x7 windows, vit sizes its positional embedding; alexnet and vgg
need 224), SWEEP_JOBS (jobs at a time, default 2), SWEEP_ORT_DIR (where
bench/node_modules is, for a worktree without one).  A name ending in
`_lr` (e.g. vgg11_lr) is that net with low-rank Linear weights (lowrank()),
for the compress phase's lowrank: a random net's spectrum is flat and
lowrank rightly refuses it, which checks nothing of what it writes.

Each net gets weights that make its outputs vary (scramble(): random-init
torchvision nets answer ~0 -- zero heads, layer scale 1e-6 -- and a check
against ~0 passes vacuously), is exported at each opset, and

  infer:    loaded by one daemon; a batch of 2 through KServe V2 JSON and
            binary must match PyTorch within 1e-4 relative (to max |y|).
  compress: ptq, bf16, prune (structured 50%), lowrank (defaults) as jobs
            (slimserve-train: the daemon's job code, 1 latency run; a
            daemon then serves each variant) with a gate every variant
            passes (min_agreement 0), so
            what each method wrote is judged here:
            - the job ends (never hangs) as succeeded, or rejected with a
              reason (a method that changed nothing), never failed;
            - a written version differs from the source and shows the
              method's mark (QDQ nodes, bf16 metadata, fewer weights,
              factored layers);
            - the variant, activated, serves, and its answer equals ONNX
              Runtime's run of the same file (1e-4; ptq: 2e-2 of ORT with
              graph optimizations off, i.e. float ops between Dequantize
              and Quantize as the spec reads QDQ -- ORT's fused int8
              kernels requantize inexactly, 0.04-0.4 off on deep nets,
              printed only -- or within 3x the net's own spread: our
              unfused ops (SS_ENGINE_NO_FUSION) vs ORT's unfused, two
              readings of the spec that differ in float rounding only,
              which flips int8 rounding ties that a deep net amplifies)
              and, for bf16, is no further from the source than
              PyTorch's own bf16 autocast (x3; where autocast fails, the
              whole net in bf16); for lowrank on an `_lr` net, equals
              PyTorch's net with each Linear truncated to that rank
              (1e-4; the source is as far as dropping the tail puts it).
Prints one line per check and a matrix at the end; exit 1 on a defect.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
from daemon import Daemon, json_body  # noqa: E402
import kserve  # noqa: E402
import repo as repolib  # noqa: E402

import onnx  # noqa: E402
import torch  # noqa: E402
import torchvision.models as tvm  # noqa: E402
import torchvision.models.segmentation as tvs  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
ORT_JS = os.path.join(TOP_SRC, "bench", "engine_ort.js")
ORT_DIR = os.environ.get("SWEEP_ORT_DIR", os.path.join(TOP_SRC, "bench"))
TRAIN = os.path.join(os.environ.get("top_builddir", "."), "server",
                     "slimserve-train")
INFER = os.path.join(os.environ.get("top_builddir", "."), "engine", "tools",
                     "slimserve-infer")
DIR = os.environ.get("SWEEP_DIR", "/tmp/ss-sweep")


class Seg(torch.nn.Module):
    """A segmentation net's "out" only (they return a dict)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


# name -> (constructor, input side).  alexnet and vgg end in an adaptive
# average pool to 6x6 / 7x7 that the exporter writes only when the
# feature map divides it: 224.  inception_v3 needs 75+; vit and swin 224.
MODELS = {
    "alexnet": (tvm.alexnet, 224),
    "vgg11": (tvm.vgg11, 224),
    "resnet18": (tvm.resnet18, 64),
    "resnet50": (tvm.resnet50, 64),
    "resnext50_32x4d": (tvm.resnext50_32x4d, 64),
    "wide_resnet50_2": (tvm.wide_resnet50_2, 64),
    "densenet121": (tvm.densenet121, 64),
    "squeezenet1_0": (tvm.squeezenet1_0, 64),
    "squeezenet1_1": (tvm.squeezenet1_1, 64),
    "googlenet": (lambda: tvm.googlenet(aux_logits=False,
                                        init_weights=True), 64),
    "inception_v3": (lambda: tvm.inception_v3(aux_logits=False,
                                              init_weights=True), 96),
    "mobilenet_v2": (tvm.mobilenet_v2, 64),
    "mobilenet_v3_small": (tvm.mobilenet_v3_small, 64),
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, 64),
    "mnasnet0_5": (tvm.mnasnet0_5, 64),
    "shufflenet_v2_x0_5": (tvm.shufflenet_v2_x0_5, 64),
    "efficientnet_b0": (tvm.efficientnet_b0, 64),
    "efficientnet_v2_s": (tvm.efficientnet_v2_s, 64),
    "regnet_x_400mf": (tvm.regnet_x_400mf, 64),
    "regnet_y_400mf": (tvm.regnet_y_400mf, 64),
    "convnext_tiny": (tvm.convnext_tiny, 64),
    "vit_b_16": (tvm.vit_b_16, 224),
    "swin_t": (tvm.swin_t, 224),
    "fcn_resnet50": (lambda: Seg(tvs.fcn_resnet50(
        weights_backbone=None, aux_loss=False)), 64),
    "lraspp_mobilenet_v3_large": (lambda: Seg(tvs.lraspp_mobilenet_v3_large(
        weights_backbone=None)), 64),
    "deeplabv3_mobilenet_v3_large": (lambda: Seg(
        tvs.deeplabv3_mobilenet_v3_large(weights_backbone=None,
                                         aux_loss=False)), 64),
}

METHODS = {
    "ptq": ["ptq"],
    "bf16": ["bf16"],
    "prune": [{"method": "prune",
               "params": {"kind": "structured", "sparsity": 0.5}}],
    "lowrank": [{"method": "lowrank"}],
}


def scramble(m, hw):
    """Heads get weights, layer scales O(1), BatchNorm the statistics of
    random images (and a random affine), so outputs are O(1) and vary."""
    nn = torch.nn
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "layer_scale" in n:
                p.uniform_(0.3, 1.0)
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)) \
                    and not mod.weight.abs().max() > 0:
                fan = mod.weight[0].numel()
                mod.weight.normal_(0, fan ** -0.5)
                if mod.bias is not None:
                    mod.bias.normal_(0, 0.1)
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.2)
        m.train()
        m(torch.randn(4, 3, hw, hw))
    return m.eval()


def rel(g, w):
    g = np.asarray(g, np.float64)
    return float(np.max(np.abs(g - w)) / max(1e-6, np.max(np.abs(w))))


def base(name):
    """MODELS' name of a sweep name (vgg11_lr -> vgg11)."""
    return name[:-3] if name.endswith("_lr") else name


def size_of(name):
    """The input side: MODELS' unless SWEEP_SIZE ("swin_t=112,...")
    names another."""
    for kv in filter(None, os.environ.get("SWEEP_SIZE", "").split(",")):
        k, v = kv.split("=")
        if k == base(name):
            return int(v)
    return MODELS[base(name)][1]


def lowrank(m, share=8, truncate=False):
    """Each Linear weight [n, k] gets rank min(n, k) / share: its largest
    singular values all equal, the rest 1% of theirs, the Frobenius norm
    kept (activations keep their scale) -- what lowrank (energy 0.999)
    should find and drop.  truncate: drop that tail instead (on a copy),
    the net lowrank's variant must compute."""
    if truncate:
        m = copy.deepcopy(m)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                u, s, vh = torch.linalg.svd(mod.weight, full_matrices=False)
                r, norm = max(1, len(s) // share), s.norm()
                if truncate:
                    s[r:] = 0
                else:
                    s[r:] *= 0.01
                    s[:r] = s[0]
                    s *= norm / s.norm()
                mod.weight.copy_(u @ torch.diag(s) @ vh)
    return m


def net(name):
    mk, hw = MODELS[base(name)][0], size_of(name)
    torch.manual_seed(1)
    # vit's positional embedding is sized by image_size
    m = mk(image_size=hw) if name.startswith("vit_") else mk()
    m = scramble(m, hw)
    return (lowrank(m) if name != base(name) else m), hw


def export(name, m, hw, opset):
    d = os.environ.get("SWEEP_ONNX", os.path.join(DIR, "onnx"))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "%s_op%d%s.onnx" % (
        name, opset, "" if hw == MODELS[base(name)][1] else "_%d" % hw))
    if not os.path.exists(p):
        torch.onnx.export(m, torch.randn(1, 3, hw, hw), p,
                          input_names=["x"], output_names=["y"],
                          opset_version=opset,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return p


def ort_run(model, x, optimization="all"):
    """ONNX Runtime's "y" for input "x" (None: no ORT here); optimization
    "disabled" computes a QDQ graph op by op as the spec reads it (float
    ops between Dequantize and Quantize), not with int8 kernels."""
    if not shutil.which("node") or not os.path.isdir(
            os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return None
    with tempfile.TemporaryDirectory(prefix="ort.") as d:
        xf = os.path.join(d, "x.bin")
        np.ascontiguousarray(x, np.float32).tofile(xf)
        jf = os.path.join(d, "job.json")
        with open(jf, "w") as f:
            json.dump({"model": model, "threads": 1, "outputs_dir": d,
                       "optimization": optimization,
                       "inputs": [{"name": "x", "dtype": "float32",
                                   "shape": list(x.shape), "file": xf}]}, f)
        p = subprocess.run(["node", ORT_JS, jf], capture_output=True,
                           text=True, cwd=ORT_DIR, env=dict(
                               os.environ, NODE_PATH=os.path.join(
                                   ORT_DIR, "node_modules")))
        if p.returncode:
            raise RuntimeError("ORT: " + p.stderr[-400:])
        with open(os.path.join(d, "y.json")) as f:
            dims = json.load(f)["dims"]
        return np.fromfile(os.path.join(d, "y.bin"), np.float32).reshape(dims)


def infer(d, name, x, binary=False, version=None):
    path = "/v2/models/%s%s/infer" % (
        name, "/versions/%s" % version if version else "")
    if binary:
        body, hd = kserve.binary_request({"x": x})
    else:
        body, hd = kserve.json_request({"x": x}), \
            {"Content-Type": "application/json"}
    st, h, data = d.request("POST", path, body=body, headers=hd, timeout=600)
    if st != 200:
        return None, "%d %s" % (st, data[:300])
    head, outs = kserve.parse_response(data, h)
    return outs.get("y"), head.get("model_version")


MATRIX = {}
DEFECTS = []


def verdict(name, col, text, defect=False):
    MATRIX.setdefault(name, {})[col] = ("DEFECT " if defect else "") + text
    if defect:
        DEFECTS.append("%s %s: %s" % (name, col, text))
    print("%-28s %-8s %s" % (name, col, text), flush=True)


def phase_infer(names, opsets):
    root = os.path.join(DIR, "repo_infer")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    want = {}
    for n in names:
        m, hw = net(n)
        torch.manual_seed(2)
        x = torch.randn(2, 3, hw, hw)
        with torch.no_grad():
            y = m(x).numpy()
        for op in opsets:
            try:
                p = export(n, m, hw, op)
            except Exception as e:  # noqa: BLE001 - the exporter's refusal
                verdict(n, "op%d" % op, "export fails: %s"
                        % str(e).splitlines()[0][:120])
                continue
            repolib.with_model(root, "%s_op%d" % (n, op), p)
            want["%s_op%d" % (n, op)] = (n, op, x.numpy(), y)
    with Daemon(["--admin-insecure"], repository=root,
                start_timeout=1800) as d:
        for key, (n, op, x, y) in want.items():
            res, bad = [], False
            for binary in (False, True):
                g, v = infer(d, key, x, binary)
                if g is None:
                    res.append("%s %s" % ("bin" if binary else "json", v))
                    bad = True
                    continue
                e = rel(g, y) if g.shape == y.shape else 99
                bad |= not (e <= 1e-4)
                res.append("%s %.1e" % ("bin" if binary else "json", e))
            verdict(n, "op%d" % op, ", ".join(res) + " (max|y| %.2g)"
                    % np.abs(y).max(), bad)


def weights(model):
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer)


def mark(method, src, var):
    """Whether var shows what method does to src; a text if not."""
    ops = [nd.op_type for nd in var.graph.node]
    if method == "ptq":
        return None if "QuantizeLinear" in ops else "no QuantizeLinear"
    if method == "bf16":
        md = {p.key: p.value for p in var.metadata_props}
        return None if md.get("slimserve.precision") == "bf16" \
            else "no slimserve.precision bf16"
    if weights(var) >= weights(src):
        return "weights %d >= source %d" % (weights(var), weights(src))
    return None


def torch_bf16_err(m, x, y):
    """PyTorch's own bf16 error: (autocast's, "autocast"); where autocast
    fails (torch 1.13: convnext's LayerNorm2d, vit's attention), the whole
    net in bf16 ("all bf16", a looser yardstick); None if that fails too."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return rel(m(torch.from_numpy(x)).float().numpy(), y), "autocast"
    except RuntimeError:
        pass
    mb = copy.deepcopy(m).bfloat16()
    try:
        with torch.no_grad():
            yb = mb(torch.from_numpy(x).bfloat16()).float().numpy()
    except RuntimeError:
        return None
    return rel(yb, y), "all bf16"


def ss_unfused(model, x):
    """Our answer with fusion off (SS_ENGINE_NO_FUSION: each op as the
    spec reads it, QDQ in float), by slimserve-infer."""
    with tempfile.TemporaryDirectory(prefix="ssnf.") as d:
        np.save(os.path.join(d, "x.npy"), x)
        subprocess.run([INFER, "-m", model, "-i", "x=" + os.path.join(
            d, "x.npy"), "-o", os.path.join(d, "y.npz"), "--threads", "1"],
            check=True, env=dict(os.environ, SS_ENGINE_NO_FUSION="1"))
        return np.load(os.path.join(d, "y.npz"))["y"]


def train_job(mdir, meth, log, lr=False):
    """Starts one job with slimserve-train on model folder mdir (lr: an
    `_lr` net, whose lowrank keeps 0.999 of the energy): -> (the process,
    its start time)."""
    jf = os.path.join(mdir, "job_%s.json" % meth)
    ms = METHODS[meth]
    if lr and meth == "lowrank":
        ms = [{"method": "lowrank", "params": {"energy": 0.999}}]
    with open(jf, "w") as f:
        json.dump({"methods": ms,
                   "calibration": {"file": "cal.npz"},
                   "gate": {"min_agreement": 0.0}}, f)
    t0 = time.time()
    with open(log, "w") as lf:
        p = subprocess.Popen([TRAIN, jf, "--model-dir", mdir, "--threads",
                              "1", "--latency-runs", "1"],
                             stdout=subprocess.PIPE, stderr=lf, text=True)
    return p, t0


def phase_compress(names, methods, opset):
    """Jobs run by slimserve-train (the daemon's job code, without the 20
    timed latency runs that dominate a small net's job), SWEEP_JOBS (2) at
    a time, each on its own copy of the model folder; then one daemon
    serves every written variant."""
    root = os.path.join(DIR, "repo_comp")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rng = np.random.default_rng(5)
    nets, todo = {}, []
    for n in names:
        m, hw = net(n)
        ncal = 8 if hw >= 224 else 16
        cal = rng.standard_normal((ncal, 3, hw, hw)).astype(np.float32)
        calf = os.path.join(DIR, "cal_%d.npz" % hw)
        np.savez(calf, x=cal)
        try:
            p = export(n, m, hw, opset)
        except Exception as e:  # noqa: BLE001
            verdict(n, "export", str(e).splitlines()[0][:120])
            continue
        nets[n] = (m, hw, p)
        for meth in methods:
            key = "%s__%s" % (n, meth)
            repolib.with_model(root, key, p, files={"cal.npz": calf})
            todo.append((n, meth, key))
    running, done = [], []
    while todo or running:
        while todo and len(running) < int(os.environ.get("SWEEP_JOBS", "2")):
            n, meth, key = todo.pop(0)
            log = os.path.join(DIR, "job_%s.log" % key)
            pr, t0 = train_job(os.path.join(root, key), meth, log,
                               n != base(n))
            running.append((n, meth, key, pr, t0, log))
        time.sleep(1)
        for r in list(running):
            n, meth, key, pr, t0, log = r
            if pr.poll() is None and time.time() - t0 < 3600:
                continue
            if pr.poll() is None:
                pr.kill()
            out = pr.communicate()[0]
            running.remove(r)
            done.append((n, meth, key, pr.returncode, out, time.time() - t0,
                         log))
            print("# job %s exit %s %.0fs" % (key, pr.returncode,
                                              time.time() - t0), flush=True)
    with Daemon(["--admin-insecure"], repository=root,
                start_timeout=1800) as d:
        for n, meth, key, rc, out, took, log in done:
            m, hw, p = nets[n]
            judge(d, root, n, meth, key, rc, out, took, log, m, p, hw)


def judge(d, root, n, meth, key, rc, out, took, log, m, p, hw):
    took = "%.0fs" % took
    try:
        res = json.loads(out)
    except ValueError:
        res = None
    with open(log) as f:
        tail = f.read()[-300:].replace("\n", " | ")
    if rc == 1 and res is not None:
        why = (res.get("gate") or {}).get("reason") or ""
        verdict(n, meth, "rejected(%s) %s" % (why[:200], took), not why)
        return
    if rc != 0 or res is None:
        verdict(n, meth, "exit %s: %s" % (rc, tail), True)
        return
    vs = [int(v) for v in os.listdir(os.path.join(root, key)) if v.isdigit()]
    if vs != [1] and sorted(vs) != [1, 2]:
        verdict(n, meth, "versions on disk %s" % vs, True)
        return
    if vs == [1]:
        verdict(n, meth, "exit 0 but no version written", True)
        return
    vp = os.path.join(root, key, "2", "model.onnx")
    with open(vp, "rb") as f, open(p, "rb") as g:
        if f.read() == g.read():
            verdict(n, meth, "v2 identical to the source", True)
            return
    srcm, var = onnx.load(p), onnx.load(vp)
    bad = mark(meth, srcm, var)
    if bad:
        verdict(n, meth, "v2 changed nothing: %s" % bad, True)
        return
    x = np.random.default_rng(7).standard_normal(
        (3, 3, hw, hw)).astype(np.float32)
    src, _ = infer(d, key, x)
    st, _, data = d.post("/admin/models/%s/versions/2/activate" % key, b"",
                         admin=True)
    got, ver = infer(d, key, x)
    if st != 200 or got is None or str(ver) != "2":
        verdict(n, meth, "v2 does not serve: %s %s %s" % (st, data[:200],
                                                           ver), True)
        return
    d.post("/admin/models/%s/versions/1/activate" % key, b"", admin=True)
    text = "ok vs-src %.1e w %.2f" % (rel(got, src),
                                      weights(var) / weights(srcm))
    bad = False
    if meth == "bf16":
        with torch.no_grad():
            y = m(torch.from_numpy(x)).numpy()
        te = torch_bf16_err(m, x, y)
        if te is None:
            text += " torch-bf16 n/a"
            bad = rel(got, src) > 0.05
        else:
            text += " torch-bf16 (%s) %.1e" % (te[1], te[0])
            bad = rel(got, src) > 3 * te[0] + 1e-3
    elif meth == "lowrank" and n != base(n):
        with torch.no_grad():
            e = rel(got, lowrank(m, truncate=True)(
                torch.from_numpy(x)).numpy())
        text += " vs-torch-truncated %.1e" % e
        bad = e > 1e-4
    if meth != "bf16":
        ref = ort_run(vp, x)
        if ref is not None:
            e = rel(got, ref)
            text += " vs-ORT %.1e" % e
            bad |= meth != "ptq" and e > 1e-4
        if meth == "ptq":
            ref = ort_run(vp, x, "disabled")
            if ref is not None:
                e = rel(got, ref)
                spread = rel(ss_unfused(vp, x), ref)
                text += " vs-ORT-unfused %.1e (spread %.1e)" % (e, spread)
                bad = e > max(2e-2, 3 * spread)
    verdict(n, meth, text + " " + took, bad)


def main():
    args = sys.argv[1:]
    phase = args.pop(0) if args and args[0] in ("infer", "compress",
                                                "all") else "all"
    names = [a for a in args if base(a) in MODELS] or list(MODELS)
    unknown = [a for a in args if base(a) not in MODELS]
    if unknown:
        sys.exit("unknown: %s" % unknown)
    os.makedirs(DIR, exist_ok=True)
    if phase in ("infer", "all"):
        phase_infer(names, [int(o) for o in
                            os.environ.get("OPSETS", "13,17").split(",")])
    if phase in ("compress", "all"):
        meths = os.environ.get("SWEEP_METHODS", ",".join(METHODS)).split(",")
        phase_compress(names, meths, int(os.environ.get("SWEEP_OPSET", "13")))
    cols = sorted({c for r in MATRIX.values() for c in r})
    print("\n# matrix")
    for n, r in MATRIX.items():
        print("%-28s %s" % (n, " | ".join("%s: %s" % (c, r[c])
                                          for c in cols if c in r)))
    print("\n# %d defect(s)" % len(DEFECTS))
    for t in DEFECTS:
        print("  " + t)
    sys.exit(1 if DEFECTS else 0)


if __name__ == "__main__":
    main()
