#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ConvTranspose and channel Concat on oneDNN (issue 12) against PyTorch.

Each case is one ConvTranspose node (written with onnx.helper, so every
attribute the spec has can be set: group, strides, pads, output_padding,
dilations, auto_pad SAME_UPPER / SAME_LOWER / VALID, output_shape), 1-D,
2-D and 3-D, with and without a bias, some with a Relu after it (a
post-op of the fused step).  The reference is PyTorch's conv_transpose
over the whole window (no padding) cut to the output as the spec places
it: the begin pads dropped, the length the spec gives (explicit pads,
or output_shape / SAME's in * stride with the total padding split as
the spec says -- SAME_UPPER the smaller half first); an output longer
than the window (output_shape past it) ends in the bias.  Per element
|got - want| <= 1e-5 * max|want|.

The plan must run each on oneDNN: the dump (SS_ENGINE_DUMP) shows a dnn
ConvTranspose step and no reference one, and ONEDNN_VERBOSE shows a
deconvolution executed; but the output longer than the window by a
stride or more, which oneDNN cannot express, must stay on the reference
kernel (and still match).  A decoder chain (Conv 16 -> 32, ConvTranspose
32 -> 16 stride 2, Conv) runs the deconvolution in nChw16c / nCdhw16c
with no reorder between the convs.

Concat along channels runs as oneDNN's concat in its inputs' layouts
(plan_fuse_cat.c): convs of 16+16, 24+40 (a blocked output at offset 24
falls back to NHWC), 8+8 (NHWC), 16+5+11 channels and a 3-D 32+16 join,
then a conv; and a small 2-D U-Net (the bench's unet2d) -- each against
PyTorch (rtol 1e-4 of max|want| + 1e-5, BatchNorm folded), with its
Concats as dnn steps and reorder steps only at the net's edges.
"""

import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402
from test_conv3d import dump  # noqa: E402  (the CLI with the plan dumped)

RTOL = 1e-5

# (name, x shape, cout, kernel, attributes, bias, relu, oneDNN expected)
CASES = [
    ("1d_s2_p1_op1", (2, 4, 9), 6, (3,),
     dict(strides=[2], pads=[1, 1], output_padding=[1]), True, False, True),
    ("1d_g2_dil2", (1, 4, 7), 6, (3,),
     dict(group=2, dilations=[2], strides=[3], pads=[2, 0]), True, True,
     True),
    ("2d_k2s2_blocked", (2, 16, 8, 8), 16, (2, 2), dict(strides=[2, 2]),
     True, True, True),
    ("2d_16_8_op", (1, 16, 7, 6), 8, (3, 3),
     dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), True,
     False, True),
    ("2d_asym", (2, 6, 5, 7), 4, (3, 2),
     dict(strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2],
          dilations=[1, 2]), True, False, True),
    ("2d_g4_blocked", (1, 32, 6, 6), 64, (3, 3),
     dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
     False, True, True),
    ("2d_depthwise", (1, 8, 6, 5), 8, (3, 3),
     dict(group=8, strides=[2, 1], pads=[0, 1, 0, 1]), True, False, True),
    ("2d_dil2_s2", (1, 5, 6, 6), 3, (3, 3),
     dict(dilations=[2, 2], strides=[2, 2], pads=[2, 1, 1, 2]), True, False,
     True),
    ("2d_same_upper", (1, 4, 5, 6), 6, (3, 3),
     dict(auto_pad="SAME_UPPER", strides=[2, 2]), True, False, True),
    ("2d_same_lower", (2, 4, 5, 6), 6, (4, 3),
     dict(auto_pad="SAME_LOWER", strides=[2, 3]), True, True, True),
    ("2d_valid", (1, 4, 5, 5), 3, (3, 3),
     dict(auto_pad="VALID", strides=[2, 2], pads=[1, 1, 1, 1]), True, False,
     True),
    ("2d_output_shape", (1, 4, 5, 6), 3, (3, 3),
     dict(strides=[2, 2], output_shape=[10, 12]), True, False, True),
    ("2d_output_shape_op", (1, 4, 5, 6), 3, (3, 3),
     dict(strides=[3, 2], output_shape=[15, 12], output_padding=[1, 0]),
     True, False, True),
    # output_shape a stride past the window: no oneDNN deconvolution
    ("2d_output_long", (1, 4, 4, 4), 3, (3, 3),
     dict(strides=[2, 2], output_shape=[11, 9]), True, False, False),
    ("3d_k2s2", (2, 16, 4, 4, 4), 8, (2, 2, 2), dict(strides=[2, 2, 2]),
     True, True, True),
    ("3d_odd", (1, 8, 3, 5, 4), 4, (3, 3, 3),
     dict(strides=[1, 2, 2], pads=[1, 1, 1, 1, 1, 1],
          output_padding=[0, 1, 1]), True, False, True),
    ("3d_g2_blocked", (1, 32, 3, 4, 4), 32, (3, 3, 3),
     dict(group=2, strides=[2, 2, 2], pads=[1, 1, 1, 1, 1, 1],
          output_padding=[1, 1, 1], dilations=[1, 1, 1]), False, True, True),
    ("3d_same_upper", (1, 4, 3, 4, 5), 4, (2, 3, 3),
     dict(auto_pad="SAME_UPPER", strides=[2, 2, 1]), True, False, True),
]


def geometry(xs, ks, a):
    """Per spatial axis: (begin pad, output length, full length, output
    padding) as the ONNX spec reads the attributes."""
    nsp = len(ks)
    s = a.get("strides", [1] * nsp)
    d = a.get("dilations", [1] * nsp)
    op = a.get("output_padding", [0] * nsp)
    pads = a.get("pads", [0] * 2 * nsp)
    ap = a.get("auto_pad", "NOTSET")
    os_ = a.get("output_shape")
    out = []
    for i in range(nsp):
        full = s[i] * (xs[2 + i] - 1) + op[i] + (ks[i] - 1) * d[i] + 1
        if os_ is not None or ap.startswith("SAME"):
            want = os_[i] if os_ is not None else xs[2 + i] * s[i]
            total = full - want
            if total <= 0:
                pb = 0
            elif ap == "SAME_UPPER":
                pb = total // 2
            else:
                pb = total - total // 2
            out.append((pb, want, full, op[i]))
        elif ap == "VALID":
            out.append((0, full, full, op[i]))
        else:
            out.append((pads[i], full - pads[i] - pads[nsp + i], full, op[i]))
    return out


def reference(torch, x, w, b, a, relu):
    """PyTorch's transposed conv over the whole window, cut (or extended
    with the bias) to the spec's output."""
    import torch.nn.functional as F
    nsp = w.ndim - 2
    f = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nsp - 1]
    g = geometry(x.shape, w.shape[2:], a)
    s = a.get("strides", [1] * nsp)
    d = a.get("dilations", [1] * nsp)
    # torch takes output_padding < stride or dilation: the window's rows
    full = f(torch.from_numpy(x), torch.from_numpy(w), None, s, 0,
             [gi[3] for gi in g], a.get("group", 1), d).numpy()
    y = np.zeros(full.shape[:2] + tuple(gi[1] for gi in g), np.float32)
    src = [slice(None), slice(None)]
    dst = [slice(None), slice(None)]
    for pb, n, fl, _ in g:
        m = min(n, fl - pb)
        src.append(slice(pb, pb + m))
        dst.append(slice(0, m))
    y[tuple(dst)] = full[tuple(src)]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nsp)
    return np.maximum(y, 0) if relu else y


def model(onnx, path, xs, cout, ks, a, bias, relu, rng):
    from onnx import helper, numpy_helper, TensorProto
    g = a.get("group", 1)
    w = rng.standard_normal((xs[1], cout // g) + ks).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(b, "b"))
        ins.append("b")
    nodes = [helper.make_node("ConvTranspose", ins,
                              ["t" if relu else "y"], **a)]
    if relu:
        nodes.append(helper.make_node("Relu", ["t"], ["y"]))
    graph = helper.make_graph(
        nodes, "convt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.save(m, path)
    return w, b


def deconv_execs(text):
    return [ln for ln in text.splitlines()
            if ",exec," in ln and ",deconvolution," in ln]


def which_ran(name, path, xf, want_dnn):
    """The plan dump names the step that ran the ConvTranspose (dnn
    ConvTranspose* or ref ConvTranspose); oneDNN's verbose log has the
    deconvolution it executed, or none."""
    rc, text = dump(path, xf, ONEDNN_VERBOSE="1")
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    dnn = [ln for ln in steps if re.search(r" dnn\s+ConvTranspose", ln)]
    ref = [ln for ln in steps if re.search(r" ref\s+ConvTranspose", ln)]
    execs = deconv_execs(text)
    if want_dnn:
        ok = rc == 0 and len(dnn) == 1 and not ref and len(execs) >= 1
    else:
        ok = rc == 0 and not dnn and len(ref) == 1 and not execs
    tap.ok(ok, "%s: %s (%d dnn, %d ref steps, %d deconvolutions run)"
           % (name, "on oneDNN's deconvolution" if want_dnn
              else "on the reference kernel", len(dnn), len(ref),
              len(execs)), "\n".join(steps + execs))


def chain(torch, s, nsp):
    """Conv 16 -> 32 + Relu, ConvTranspose 32 -> 16 (2, stride 2) + Relu,
    Conv 16 -> 16: the deconvolution reads and writes the blocked layout
    (aBcd16b / aBcde16b), no reorder step between the convs (one before
    the first, which reads 16 channels blocked, and one after the last
    for the graph output)."""
    import torch.nn as nn
    C, CT = (nn.Conv2d, nn.ConvTranspose2d) if nsp == 2 else \
        (nn.Conv3d, nn.ConvTranspose3d)
    m = nn.Sequential(C(16, 32, 3, 1, 1), nn.ReLU(), CT(32, 16, 2, 2),
                      nn.ReLU(), C(16, 16, 3, 1, 1)).eval()
    shape = (2, 16) + ((6, 6) if nsp == 2 else (3, 4, 4))
    x = torch.randn(*shape)
    path = s.file("chain%d.onnx" % nsp)
    torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"],
                      opset_version=13)
    xf = s.file("chain%d.npz" % nsp)
    np.savez(xf, x=x.numpy())
    with torch.no_grad():
        want = m(x).numpy()
    got, msg = infer.run(path, [xf], s.file("out.npz"), ("--threads", "1"))
    ok, detail = infer.compare(None if got is None else got.get("y"), want,
                               1e-4, 1e-5)
    tap.ok(ok, "chain %d-D matches PyTorch" % nsp, detail or msg)
    rc, text = dump(path, xf, ONEDNN_VERBOSE="1")
    blk = "aBcd16b" if nsp == 2 else "aBcde16b"
    ex = deconv_execs(text)
    reorders = [ln for ln in text.splitlines()
                if re.match(r"\s+\d+ dnn\s+Reorder>", ln)]
    tap.ok(rc == 0 and ex
           and "src_f32::blocked:%s:" % blk in ex[0]
           and "dst_f32::blocked:%s:" % blk in ex[0]
           and not ex[0].split(",")[4].startswith("ref")
           and len(reorders) == 2,
           "chain %d-D: the deconvolution runs in %s on a jit kernel, %d "
           "reorder steps (want 2)" % (nsp, blk, len(reorders)),
           "\n".join(ex + reorders))


def models():
    """The nets of the concat checks and of bench/conv3d.py: cat2d joins
    convs of odd channel counts, unet2d is a small 2-D U-Net (two levels,
    ConvTranspose 2x2 stride 2 up, skip Concats) at 128x128."""
    import torch
    import torch.nn as nn

    class Cat(nn.Module):
        def __init__(self, cin, outs, nsp):
            super().__init__()
            C = nn.Conv2d if nsp == 2 else nn.Conv3d
            self.convs = nn.ModuleList(C(cin, o, 3, 1, 1) for o in outs)
            self.head = C(sum(outs), 16, 3, 1, 1)

        def forward(self, x):
            y = torch.cat([torch.relu(c(x)) for c in self.convs], 1)
            return self.head(y)

    def cbr(a, b):
        return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1),
                             infer.random_norm(nn.BatchNorm2d(b)), nn.ReLU())

    class UNet2(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1 = nn.Sequential(cbr(3, 16), cbr(16, 16))
            self.e2 = nn.Sequential(cbr(16, 32), cbr(32, 32))
            self.mid = nn.Sequential(cbr(32, 64), cbr(64, 64))
            self.up2 = nn.ConvTranspose2d(64, 32, 2, 2)
            self.d2 = nn.Sequential(cbr(64, 32), cbr(32, 32))
            self.up1 = nn.ConvTranspose2d(32, 16, 2, 2)
            self.d1 = nn.Sequential(cbr(32, 16), cbr(16, 16))
            self.out = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            a = self.e1(x)
            b = self.e2(nn.functional.max_pool2d(a, 2))
            c = self.mid(nn.functional.max_pool2d(b, 2))
            y = self.d2(torch.cat([self.up2(c), b], 1))
            return self.out(self.d1(torch.cat([self.up1(y), a], 1)))

    return [("cat16_16", lambda: Cat(16, (16, 16), 2), (16, 10, 12)),
            ("cat24_40", lambda: Cat(16, (24, 40), 2), (16, 9, 7)),
            ("cat8_8", lambda: Cat(4, (8, 8), 2), (4, 8, 8)),
            ("cat16_5_11", lambda: Cat(16, (16, 5, 11), 2), (16, 6, 6)),
            ("cat3d_32_16", lambda: Cat(16, (32, 16), 3), (16, 3, 5, 5)),
            ("unet2d", UNet2, (3, 128, 128))]


# The reorder steps of each net's plan: none around a Concat, only at the
# net's edges -- the output's back to NCHW, and the input's to the layouts
# its convs read: nChw16c for a conv of 16 channels in and out, NHWC for
# one with 8, 5 or 11 out (cat8_8's 4-channel input; cat16_5_11's input
# both ways); unet2d's first conv reads its 3 channels as NCHW.
CAT_REORDERS = {"cat16_16": 2, "cat24_40": 2, "cat8_8": 2, "cat16_5_11": 3,
                "cat3d_32_16": 2, "unet2d": 1}


def concats(torch, s):
    """Each net vs PyTorch at batch 1 and 3 (opset 13), its Concats on
    oneDNN (a dnn Concat step, oneDNN's concat executed) with no reorder
    step but at the net's edges (CAT_REORDERS)."""
    for name, make, shape in models():
        torch.manual_seed(len(name))
        m = make().eval()
        path = s.file(name + ".onnx")
        torch.onnx.export(m, (torch.randn(1, *shape),), path,
                          input_names=["x"], output_names=["y"],
                          opset_version=13,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        for b in (1, 3):
            x = torch.randn(b, *shape)
            xf = s.file("%s%d.npz" % (name, b))
            np.savez(xf, x=x.numpy())
            with torch.no_grad():
                want = m(x).numpy()
            got, msg = infer.run(path, [xf], s.file("out.npz"),
                                 ("--threads", "1"))
            ok, detail = infer.compare(
                None if got is None else got.get("y"), want, 1e-4, 1e-5)
            tap.ok(ok, "%s batch %d matches PyTorch" % (name, b),
                   detail or msg)
        rc, text = dump(path, xf, ONEDNN_VERBOSE="1")
        lines = text.splitlines()
        cats = [ln for ln in lines if re.match(r"\s+\d+ dnn\s+Concat\s", ln)]
        refs = [ln for ln in lines
                if re.match(r"\s+\d+ ref\s+(Concat|ConvTranspose)\s", ln)]
        ex = [ln for ln in lines if ",exec," in ln and ",concat," in ln]
        reorders = [ln for ln in lines
                    if re.match(r"\s+\d+ dnn\s+Reorder>", ln)]
        ncat = 2 if name == "unet2d" else 1
        tap.ok(rc == 0 and len(cats) == ncat and not refs and ex
               and len(reorders) == CAT_REORDERS[name],
               "%s: %d Concat steps on oneDNN (want %d), %d reorder steps "
               "(want %d)" % (name, len(cats), ncat, len(reorders),
                              CAT_REORDERS[name]),
               "\n".join(cats + refs + reorders + ex[:4]))


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    onnx = infer.import_onnx()
    rng = np.random.default_rng(7)
    with infer.Scratch() as s:
        for name, xs, cout, ks, a, bias, relu, dnn in CASES:
            path = s.file(name + ".onnx")
            w, b = model(onnx, path, xs, cout, ks, a, bias, relu, rng)
            x = rng.standard_normal(xs).astype(np.float32)
            xf = s.file(name + ".npz")
            np.savez(xf, x=x)
            want = reference(torch, x, w, b, a, relu)
            got, msg = infer.run(path, [xf], s.file("out.npz"),
                                 ("--threads", "1"))
            ok, detail = infer.compare(None if got is None else got.get("y"),
                                       want, RTOL, 0.0)
            tap.ok(ok, "%s matches PyTorch (%s)" % (name, want.shape),
                   detail or msg)
            which_ran(name, path, xf, dnn)
        chain(torch, s, 2)
        chain(torch, s, 3)
        concats(torch, s)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
