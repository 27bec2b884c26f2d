#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""3-D convolution and pooling (rank-5 tensors) against PyTorch (issue 12).

Video and volume nets: Conv3d, ConvTranspose3d, MaxPool3d, AvgPool3d,
BatchNorm3d, AdaptiveAvgPool3d(1) (GlobalAveragePool), residual adds,
Concat.  torchvision is not installed here, so r3d_18 is rebuilt small
in plain torch as torchvision writes it (a (3, 7, 7) stem with stride
(1, 2, 2), basic blocks with projection shortcuts), next to a 3-D
U-Net-like block (encoder, 2x max pool, ConvTranspose3d up, skip
concat, an AvgPool3d without the padding in its count) and a net of the
odd cases (dilated and grouped Conv3d, a ceil_mode MaxPool3d, an
AvgPool3d counting its padding, asymmetric strides).

Each is exported at opsets 11, 13 and 17 with a dynamic batch, run at
batch 1 and 3 and compared with PyTorch's own output on the same input:
|got - want| <= 1e-4 * max|want| + 1e-5 per element.  The plan must run
the 3-D convs and pools on oneDNN (plan_fuse_conv.c, plan_fuse_ops.c),
but a ceil_mode pool, which stays on the reference kernel as in 2-D.
A fourth net (mix3d) turns 3-D features into a 2-D head: a residual
3-D block, a 3-D max pool, a Reshape of [N, C, D, H, W] to [N, C*D, H,
W] into a Conv2d, and a Flatten of the 5-D pool output into a Linear.
The layout pass keeps 3-D convs of 16k channels in nCdhw16c on oneDNN's
direct kernels with reorders only where the chain ends (blocked_chain).

Compression of such a net (ptq, bf16, structured pruning) is checked in
tests/integration/test_compress_3d.py.
"""

import os
import re
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402

RTOL = 1e-4
ATOL = 1e-5


def models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def bn(c):
        return infer.random_norm(nn.BatchNorm3d(c))

    class Block(nn.Module):         # torchvision.models.video BasicBlock
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = bn(cout)
            self.c2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = bn(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv3d(cin, cout, 1, stride, bias=False), bn(cout))

        def forward(self, x):
            r = x if self.down is None else self.down(x)
            return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + r)

    class R3D(nn.Module):           # r3d_18's shape, two stages
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv3d(3, 16, (3, 7, 7), (1, 2, 2), (1, 3, 3),
                          bias=False), bn(16), nn.ReLU())
            self.l1 = Block(16, 16, 1)
            self.l2 = Block(16, 32, 2)
            self.pool = nn.MaxPool3d(3, 2, 1)
            self.l3 = Block(32, 32, 1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.l3(self.pool(self.l2(self.l1(self.stem(x)))))
            return self.fc(F.adaptive_avg_pool3d(x, 1).flatten(1))

    class UNet3(nn.Module):
        def __init__(self):
            super().__init__()

            def cbr(a, b):
                return nn.Sequential(nn.Conv3d(a, b, 3, 1, 1), bn(b),
                                     nn.ReLU())
            self.e1, self.e2, self.mid = cbr(2, 8), cbr(8, 16), cbr(16, 16)
            self.up = nn.ConvTranspose3d(16, 8, 2, 2)
            self.d1 = cbr(16, 8)
            self.avg = nn.AvgPool3d(3, 1, 1, count_include_pad=False)
            self.out = nn.Conv3d(8, 3, 1)

        def forward(self, x):
            a = self.e1(x)
            b = self.mid(self.e2(F.max_pool3d(a, 2)))
            y = self.d1(torch.cat([self.up(b), a], 1))
            return self.out(self.avg(y))

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv3d(4, 8, 3, (2, 1, 1), 2, dilation=2)
            self.c2 = nn.Conv3d(8, 8, (1, 3, 3), 1, (0, 1, 1), groups=4)
            self.c3 = nn.Conv3d(8, 8, 3, 1, 1, groups=8)    # depthwise
            self.mp = nn.MaxPool3d((2, 3, 3), (1, 2, 2), (1, 1, 0),
                                   ceil_mode=True)
            self.ap = nn.AvgPool3d(2, 2, 1, count_include_pad=True)
            self.ct = nn.ConvTranspose3d(8, 4, 3, (1, 2, 2), 1,
                                         output_padding=(0, 1, 1))

        def forward(self, x):
            x = F.relu(self.c1(x))
            x = self.mp(self.c3(self.c2(x)) + x)
            return self.ct(torch.sigmoid(self.ap(x)))

    class Mix(nn.Module):           # 3-D convs into a 2-D head
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv3d(4, 16, 3, 1, 1)
            self.b1 = bn(16)
            self.c2 = nn.Conv3d(16, 16, 3, 1, 1, bias=False)
            self.c3 = nn.Conv2d(32, 32, 3, 1, 1)
            self.fc = nn.Linear(32, 5)
            self.fc5 = nn.Linear(16 * 2 * 4 * 4, 5)

        def forward(self, x):
            a = F.relu(self.b1(self.c1(x)))
            a = F.max_pool3d(F.relu(self.c2(a) + a), 2)
            n, c, d, h, w = a.shape
            b = F.relu(self.c3(a.reshape(n, c * d, h, w)))
            return (self.fc(F.adaptive_avg_pool2d(b, 1).flatten(1))
                    + self.fc5(a.flatten(1)))

    return [("r3d", R3D, (3, 8, 56, 56)),
            ("unet3d", UNet3, (2, 8, 16, 16)),
            ("odd3d", Odd, (4, 9, 13, 11)),
            ("mix3d", Mix, (4, 4, 8, 8))]


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    with infer.Scratch() as s:
        for name, cls, shape in models():
            torch.manual_seed(len(name))
            m = cls().eval()
            xs = {b: torch.randn(b, *shape) for b in (1, 3)}
            with torch.no_grad():
                want = {b: m(x).numpy() for b, x in xs.items()}
            for b, x in xs.items():
                np.savez(s.file("x%d.npz" % b), x=x.numpy())
            for opset in (11, 13, 17):
                path = s.file("%s_%d.onnx" % (name, opset))
                torch.onnx.export(m, (xs[1],), path, input_names=["x"],
                                  output_names=["y"], opset_version=opset,
                                  dynamic_axes={"x": {0: "n"},
                                                "y": {0: "n"}})
                for b in (1, 3):
                    what = "%s opset %d batch %d" % (name, opset, b)
                    got, msg = infer.run(path, [s.file("x%d.npz" % b)],
                                         s.file("out.npz"),
                                         ("--threads", "1"))
                    if not tap.ok(got is not None, what + " runs", msg):
                        continue
                    ok, detail = infer.compare(got.get("y"), want[b], RTOL,
                                               ATOL)
                    tap.ok(ok, "%s matches PyTorch (rtol %g)" % (what, RTOL),
                           detail)
                on_onednn(name, path, s.file("x3.npz"))
                if name in CHAIN:
                    blocked_chain(name, path, s.file("x3.npz"))
    return tap.done()


def dump(path, x, **env):
    """One run of the CLI with the plan's steps printed (SS_ENGINE_DUMP)
    and env added: (exit status, stdout + stderr)."""
    p = subprocess.run([infer.cli_path(), "--model", path, "--input", x,
                        "--repeat", "1", "--threads", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, SS_ENGINE_DUMP="1", **env),
                       timeout=infer.TIMEOUT)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def on_onednn(name, path, x):
    """The plan runs every 3-D Conv, ConvTranspose, MaxPool, AveragePool
    and GlobalAveragePool on oneDNN (engine/plan/plan_fuse_conv.c) but
    ceil_mode pools (odd3d's MaxPool), which stay on the reference kernels
    as in 2-D."""
    rc, text = dump(path, x)
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    want = 1 if name == "odd3d" else 0
    if name == "mix3d":     # its one 2-D conv is the 2-D anchor's "Conv"
        steps = [ln for ln in steps if "Conv+" not in ln]
    ref = [ln.split()[2] for ln in steps if " ref " in ln
           and re.search(r" ref\s+(Conv|ConvTranspose|MaxPool|AveragePool|"
                         r"GlobalAveragePool)\s", ln)]
    dnn = [ln for ln in steps if " dnn " in ln
           and ("Conv3d" in ln or "ConvTranspose3d" in ln)]
    tap.ok(rc == 0 and dnn and len(ref) == want,
           "%s: 3-D convs and pools on oneDNN (%d fused convs, %d left on "
           "the reference kernels, want %d)" % (name, len(dnn), len(ref),
                                                want), "\n".join(steps))


# The reorder steps of the plan (SS_ENGINE_DUMP): r3d's chain is blocked
# from its first conv (which reads the plain input) to the global pool,
# whose [N, C, 1, 1, 1] output is the same bytes in every layout; mix3d's
# pool writes NCHW for the Reshape (a view) into its 2-D conv (one
# reorder before it), and the 2-D conv reads nChw16c (one after).
CHAIN = {"r3d": 0, "mix3d": 2}


def blocked_chain(name, path, x):
    """The 3-D convs of 16k channels run oneDNN's direct kernels on
    nCdhw16c (the layout pass, plan_layout_rules.c), not gemm over
    ncdhw, with reorders only at the chain's edges (CHAIN)."""
    rc, text = dump(path, x, ONEDNN_VERBOSE="1")
    reorders = [ln for ln in text.splitlines()
                if re.match(r"\s+\d+ dnn\s+Reorder>", ln)]
    bad, n3 = [], 0
    for ln in text.splitlines():
        f = ln.split(",")
        if len(f) < 10 or f[1] != "exec" or f[3] != "convolution" \
                or "_id" not in ln:
            continue
        m = re.search(r"_ic(\d+)oc(\d+)_", ln)
        ic, oc = int(m.group(1)), int(m.group(2))
        n3 += 1
        src = "src_f32::blocked:%s:" % ("aBcde16b" if ic % 16 == 0
                                        else "abcde")
        if oc % 16 == 0 and (src not in ln
                             or "dst_f32::blocked:aBcde16b:" not in ln
                             or f[4].startswith(("gemm", "ref"))):
            bad.append(ln)
    tap.ok(rc == 0 and n3 > 0 and not bad
           and len(reorders) == CHAIN[name],
           "%s: %d 3-D conv runs in nCdhw16c on direct kernels, %d reorder "
           "steps (want %d)" % (name, n3, len(reorders), CHAIN[name]),
           "\n".join(bad + reorders))


if __name__ == "__main__":
    sys.exit(main())
