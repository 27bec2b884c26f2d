#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""torchvision-style architectures, small and with random weights, exported
by PyTorch at opsets 11, 13 and 17 and run through slimserve-infer (issue 12:
"every one loads and matches PyTorch within 1e-4 relative").

torchvision is not installed here (Debian's torch 1.13 has no matching
torchvision), so the blocks that made its models fail are rebuilt in plain
torch, each as torchvision writes it:

  densenet   dense layers (BN-ReLU-Conv1x1-BN-ReLU-Conv3x3) concatenated,
             a transition (BN-ReLU-Conv1x1-AvgPool), and an F.pad
  swin       windows of a padded map (F.pad to a multiple of the window),
             a cyclic shift (torch.roll), the shifted-window attention mask
             built with % (Mod) and slicing, LayerNorm, GELU, softmax
             attention with a relative position bias, patch merging
  mobilenet  inverted residuals with depthwise convs, HardSwish,
             squeeze-excitation (AdaptiveAvgPool-Conv-ReLU-Conv-
             HardSigmoid-Mul), a HardSwish classifier
  convnext   depthwise 7x7, permute, LayerNorm over channels, Linear,
             GELU, layer scale, residual, a LayerNorm2d downsample
  shufflenet_v2  channel split (Split), depthwise convs, channel shuffle
             (Reshape-Transpose-Reshape)
  squeezenet fire modules (Concat), ceil_mode max pools, a conv head
  efficientnet  MBConv: SiLU, depthwise 5x5, sigmoid squeeze-excitation
  resnext    bottlenecks with grouped 3x3 convs (8 and 16 groups),
             projection shortcuts
  googlenet  inception branches: ceil_mode max pool, 1x7 / 7x1 convs,
             average pool without padding in the count

Each is compared with PyTorch's own output on the same input:
|got - want| <= 1e-4 * max|want| + 1e-5 per element.  Batch 2 of 3x32x32
(swin: 3x30x30, so the padding path runs; the five after convnext
3x64x64); the whole test takes seconds.
"""

import os
import re
import subprocess
import sys
import tempfile

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
        return infer.random_norm(nn.BatchNorm2d(c))

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth):
            super().__init__()
            self.n1, self.c1 = bn(cin), nn.Conv2d(cin, 4 * growth, 1,
                                                  bias=False)
            self.n2 = bn(4 * growth)
            self.c2 = nn.Conv2d(4 * growth, growth, 3, padding=1,
                                bias=False)

        def forward(self, feats):
            x = torch.cat(feats, 1)
            x = self.c1(F.relu(self.n1(x)))
            return self.c2(F.relu(self.n2(x)))

    class DenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False),
                                      bn(16), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            self.layers = nn.ModuleList(DenseLayer(16 + 8 * i, 8)
                                        for i in range(3))
            self.trans = nn.Sequential(bn(40), nn.ReLU(),
                                       nn.Conv2d(40, 20, 1, bias=False),
                                       nn.AvgPool2d(2, 2))
            self.norm = bn(20)
            self.fc = nn.Linear(20, 10)

        def forward(self, x):
            feats = [self.stem(x)]
            for layer in self.layers:
                feats.append(layer(feats))
            x = self.trans(torch.cat(feats, 1))
            x = F.pad(x, (1, 0, 1, 0))          # a Pad, as issue 12 saw
            x = F.relu(self.norm(x))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    class WindowAttention(nn.Module):
        def __init__(self, dim, heads, ws, shift):
            super().__init__()
            self.dim, self.heads, self.ws, self.shift = dim, heads, ws, shift
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.bias_table = nn.Parameter(
                torch.randn((2 * ws - 1) ** 2, heads) * 0.2)
            c = torch.stack(torch.meshgrid(torch.arange(ws),
                                           torch.arange(ws),
                                           indexing="ij")).flatten(1)
            rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0)
            rel[:, :, 0] += ws - 1
            rel[:, :, 1] += ws - 1
            rel[:, :, 0] *= 2 * ws - 1
            self.register_buffer("index", rel.sum(-1).flatten())

        def forward(self, x):
            # torchvision's shifted_window_attention, condensed
            B, H, W, C = x.shape
            ws, sh = self.ws, self.shift
            pad_r = (ws - W % ws) % ws
            pad_b = (ws - H % ws) % ws
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            _, pH, pW, _ = x.shape
            if sh > 0:
                x = torch.roll(x, shifts=(-sh, -sh), dims=(1, 2))
            nw = (pH // ws) * (pW // ws)
            x = x.view(B, pH // ws, ws, pW // ws, ws, C)
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * nw, ws * ws, C)
            qkv = self.qkv(x).reshape(x.size(0), x.size(1), 3, self.heads,
                                      C // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = q * (C // self.heads) ** -0.5
            attn = q.matmul(k.transpose(-2, -1))
            bias = self.bias_table[self.index].view(ws * ws, ws * ws, -1)
            attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
            if sh > 0:
                mask = x.new_zeros((pH, pW))
                hs = ((0, -ws), (-ws, -sh), (-sh, None))
                cnt = 0
                for h in hs:
                    for w in hs:
                        mask[h[0]:h[1], w[0]:w[1]] = cnt
                        cnt += 1
                mask = mask.view(pH // ws, ws, pW // ws, ws)
                mask = mask.permute(0, 2, 1, 3).reshape(nw, ws * ws)
                mask = mask.unsqueeze(1) - mask.unsqueeze(2)
                mask = mask.masked_fill(mask != 0, -100.0)
                mask = mask.masked_fill(mask == 0, 0.0)
                attn = attn.view(x.size(0) // nw, nw, self.heads,
                                 x.size(1), x.size(1))
                attn = attn + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.heads, x.size(1), x.size(1))
            attn = F.softmax(attn, dim=-1)
            x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1),
                                                       C)
            x = self.proj(x)
            x = x.view(B, pH // ws, pW // ws, ws, ws, C)
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pH, pW, C)
            if sh > 0:
                x = torch.roll(x, shifts=(sh, sh), dims=(1, 2))
            return x[:, :H, :W, :].contiguous()

    class SwinBlock(nn.Module):
        def __init__(self, dim, heads, ws, shift):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, heads, ws, shift)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                     nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.n1(x))
            return x + self.mlp(self.n2(x))

    class PatchMerging(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.norm = nn.LayerNorm(4 * dim)
            self.red = nn.Linear(4 * dim, 2 * dim, bias=False)

        def forward(self, x):
            H, W = x.shape[-3:-1]
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                           x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
            return self.red(self.norm(x))

    class Swin(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 16, 4, 4)
            self.pnorm = nn.LayerNorm(16)
            self.b1 = SwinBlock(16, 2, 3, 0)
            self.b2 = SwinBlock(16, 2, 3, 1)
            self.merge = PatchMerging(16)
            self.b3 = SwinBlock(32, 4, 2, 0)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.pnorm(self.patch(x).permute(0, 2, 3, 1))
            x = self.b3(self.merge(self.b2(self.b1(x))))
            x = self.norm(x).permute(0, 3, 1, 2)
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))

    class SE(nn.Module):
        def __init__(self, c, s, act=nn.ReLU, gate=nn.Hardsigmoid):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)
            self.act, self.gate = act(), gate()

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(self.act(self.fc1(s))))

    class InvRes(nn.Module):
        def __init__(self, cin, exp, cout, k, stride, se, hs):
            super().__init__()
            act = nn.Hardswish if hs else nn.ReLU
            self.block = nn.Sequential(
                nn.Conv2d(cin, exp, 1, bias=False), bn(exp), act(),
                nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp,
                          bias=False), bn(exp), act(),
                SE(exp, max(8, exp // 4)) if se else nn.Identity(),
                nn.Conv2d(exp, cout, 1, bias=False), bn(cout))
            self.res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.res else y

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False),
                                      bn(16), nn.Hardswish())
            self.blocks = nn.Sequential(
                InvRes(16, 16, 16, 3, 2, True, False),
                InvRes(16, 48, 24, 3, 2, False, False),
                InvRes(24, 72, 24, 5, 1, True, True),
                InvRes(24, 96, 40, 5, 2, True, True))
            self.last = nn.Sequential(nn.Conv2d(40, 96, 1, bias=False),
                                      bn(96), nn.Hardswish())
            self.head = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(),
                                      nn.Dropout(0.2), nn.Linear(64, 10))

        def forward(self, x):
            x = self.last(self.blocks(self.stem(x)))
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight,
                             self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    class CNBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim,
                                                                    dim)
            self.scale = nn.Parameter(torch.rand(dim, 1, 1) * 0.5 + 0.1)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(F.gelu(self.fc1(self.norm(y))))
            return x + self.scale * y.permute(0, 3, 1, 2)

    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4),
                                      LayerNorm2d(16, eps=1e-6))
            self.s1 = nn.Sequential(CNBlock(16), CNBlock(16))
            self.down = nn.Sequential(LayerNorm2d(16, eps=1e-6),
                                      nn.Conv2d(16, 32, 2, 2))
            self.s2 = CNBlock(32)
            self.norm = LayerNorm2d(32, eps=1e-6)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.s2(self.down(self.s1(self.stem(x))))
            x = self.norm(F.adaptive_avg_pool2d(x, 1))
            return self.head(x.flatten(1))

    def cbr(cin, cout, k, stride=1, groups=1, act=nn.ReLU, pad=None):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride,
                      (k // 2 if isinstance(k, int) else 0) if pad is None
                      else pad, groups=groups, bias=False), bn(cout), act())

    class ShuffleUnit(nn.Module):
        def __init__(self, c, stride):
            super().__init__()
            h = c // 2
            self.stride = stride
            self.b1 = nn.Sequential(
                nn.Conv2d(c, c, 3, 2, 1, groups=c, bias=False), bn(c),
                cbr(c, h, 1)) if stride > 1 else None
            self.b2 = nn.Sequential(
                cbr(c if stride > 1 else h, h, 1),
                nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), bn(h),
                cbr(h, h, 1))

        def forward(self, x):
            if self.stride == 1:
                x1, x2 = x.chunk(2, dim=1)          # Split
                y = torch.cat((x1, self.b2(x2)), 1)
            else:
                y = torch.cat((self.b1(x), self.b2(x)), 1)
            n, c, h, w = y.shape                    # channel shuffle
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous()
            return y.view(n, c, h, w)

    class ShuffleNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
            self.units = nn.Sequential(*(ShuffleUnit(24, s)
                                         for s in (2, 1, 2, 1)))
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            return self.fc(self.units(self.stem(x)).mean([2, 3]))

    class Fire(nn.Module):
        def __init__(self, cin, sq, e):
            super().__init__()
            self.sq = nn.Conv2d(cin, sq, 1)
            self.e1, self.e3 = nn.Conv2d(sq, e, 1), nn.Conv2d(sq, e, 3,
                                                             padding=1)

        def forward(self, x):
            x = F.relu(self.sq(x))
            return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)

    class SqueezeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                nn.Conv2d(3, 32, 3, 2), nn.ReLU(),
                nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 8, 16),
                Fire(32, 8, 16), nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(32, 16, 32), nn.Dropout(0.5), nn.Conv2d(64, 10, 1),
                nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)))

        def forward(self, x):
            return torch.flatten(self.f(x), 1)

    class MBConv(nn.Module):            # EfficientNet: SiLU, SE (sigmoid)
        def __init__(self, cin, cout, e, k, stride):
            super().__init__()
            m = cin * e
            self.block = nn.Sequential(
                cbr(cin, m, 1, act=nn.SiLU),
                cbr(m, m, k, stride, groups=m, act=nn.SiLU),
                SE(m, max(1, cin // 4), nn.SiLU, nn.Sigmoid),
                nn.Conv2d(m, cout, 1, bias=False), bn(cout))
            self.res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.res else y

    class EfficientNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                cbr(3, 16, 3, 2, act=nn.SiLU), MBConv(16, 16, 1, 3, 1),
                MBConv(16, 24, 6, 5, 2), MBConv(24, 24, 6, 5, 1),
                cbr(24, 64, 1, act=nn.SiLU))
            self.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))

    class Bottleneck(nn.Module):        # ResNeXt / RegNet: grouped 3x3
        def __init__(self, cin, cout, stride, groups):
            super().__init__()
            w = cout // 2
            self.block = nn.Sequential(
                cbr(cin, w, 1), cbr(w, w, 3, stride, groups),
                nn.Conv2d(w, cout, 1, bias=False), bn(cout))
            self.down = nn.Identity() if stride == 1 and cin == cout else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                              bn(cout))

        def forward(self, x):
            return F.relu(self.block(x) + self.down(x))

    class ResNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                cbr(3, 32, 7, 2), nn.MaxPool2d(3, 2, 1),
                Bottleneck(32, 64, 1, 8), Bottleneck(64, 64, 1, 8),
                Bottleneck(64, 128, 2, 16))
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))

    class Inception(nn.Module):         # GoogLeNet / Inception v3 branches
        def __init__(self, cin):
            super().__init__()
            self.br = nn.ModuleList([
                cbr(cin, 16, 1),
                nn.Sequential(cbr(cin, 8, 1), cbr(8, 16, 3)),
                nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                              cbr(cin, 16, 1)),
                nn.Sequential(cbr(cin, 8, 1), cbr(8, 8, (1, 7), pad=(0, 3)),
                              cbr(8, 16, (7, 1), pad=(3, 0))),
                nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                              cbr(cin, 16, 1))])

        def forward(self, x):
            return torch.cat([b(x) for b in self.br], 1)

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(
                cbr(3, 32, 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True),
                Inception(32), nn.MaxPool2d(2, 2, ceil_mode=True),
                Inception(80))
            self.fc = nn.Linear(80, 10)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))

    return [("densenet", DenseNet, (2, 3, 32, 32)),
            ("swin", Swin, (2, 3, 30, 30)),
            ("mobilenet_v3", MobileNetV3, (2, 3, 32, 32)),
            ("convnext", ConvNeXt, (2, 3, 32, 32)),
            ("shufflenet_v2", ShuffleNetV2, (2, 3, 64, 64)),
            ("squeezenet", SqueezeNet, (2, 3, 64, 64)),
            ("efficientnet", EfficientNet, (2, 3, 64, 64)),
            ("resnext", ResNeXt, (2, 3, 64, 64)),
            ("googlenet", GoogLeNet, (2, 3, 64, 64))]


def main():
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    with infer.Scratch() as s:
        for name, cls, shape in models():
            torch.manual_seed(len(name))
            m = cls().eval()
            x = torch.randn(*shape)
            with torch.no_grad():
                want = m(x).numpy()
            np.savez(s.file("x.npz"), x=x.numpy())
            for opset in (11, 13, 17):
                path = s.file("%s_%d.onnx" % (name, opset))
                torch.onnx.export(m, (x,), path, input_names=["x"],
                                  output_names=["y"], opset_version=opset,
                                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
                out = s.file("out.npz")
                got, msg = infer.run(path, [s.file("x.npz")], out,
                                     ("--threads", "1"))
                if not tap.ok(got is not None, "%s opset %d runs"
                              % (name, opset), msg):
                    continue
                ok, detail = infer.compare(got.get("y"), want, RTOL, ATOL)
                tap.ok(ok, "%s opset %d matches PyTorch (rtol %g)"
                       % (name, opset, RTOL), detail)
                tap.diag("%s opset %d: %s" % (name, opset, detail))
                if name == "convnext":
                    transposes_absorbed(path, s.file("x.npz"))
                    residual_sums(path, s.file("x.npz"), got.get("y"),
                                  want, opset)
    return tap.done()


def transposes_absorbed(path, x):
    """ConvNeXt's permutes around LayerNorm move no byte: the steps that
    write their sources write the transposed values in the other order
    (plan_fuse_ops.c, ss__fuse_transpose), so the plan keeps no Transpose
    of a map larger than 1x1 (after the global pool, NCHW and NHWC are
    the same bytes, and that one may stay)."""
    env = dict(os.environ, SS_ENGINE_DUMP="1")
    p = subprocess.run([infer.cli_path(), "--model", path, "--input", x,
                        "--repeat", "1", "--threads", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=120)
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    steps = [ln for ln in text.splitlines()
             if re.match(r"\s+\d+ (ref|dnn) ", ln)]
    left = [ln.strip() for ln in steps
            if " ref " in ln and "Transpose" in ln
            and not ln.rstrip().endswith(",1,1]")]
    tap.ok(p.returncode == 0 and steps and not left,
           "convnext: no Transpose left in the plan (%d steps)" % len(steps),
           "left: %s" % left[:4])


def residual_sums(path, x, got, want, opset):
    """Each CNBlock's tail -- fc2, the permute back, the layer scale, the
    residual Add -- is one GEMM (plan_fuse_scale.c): the scale folded
    into fc2's weights, the residual added as a SUM post-op into its own
    bytes; within 1e-5 of PyTorch, and of the unfused plan
    (SS_ENGINE_NO_RESIDUAL_SUM=1), which keeps the Mul+Add steps."""
    def dump(extra):
        env = dict(os.environ, SS_ENGINE_DUMP="1", **extra)
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "o.npz")
            p = subprocess.run([infer.cli_path(), "--model", path, "--input",
                                x, "--output", out, "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, timeout=120)
            y = np.load(out)["y"] if p.returncode == 0 else None
        return (p.stdout + p.stderr).decode("utf-8", "replace"), y

    text, _ = dump({})
    lines = text.splitlines()
    tails = [i for i, ln in enumerate(lines) if "MatMul+Scale+Add" in ln]
    inplace = [i for i in tails if i + 2 < len(lines)
               and "adds its residual in place" in lines[i + 2]]
    tap.ok(len(tails) == 3 and len(inplace) == 3,
           "convnext opset %d: 3 block tails are one GEMM each, adding the "
           "residual in place" % opset, "tails %d, in place %d"
           % (len(tails), len(inplace)))
    ok, detail = infer.compare(got, want, 1e-5, 1e-6)
    tap.ok(ok, "convnext opset %d: within 1e-5 of PyTorch" % opset, detail)
    text0, y0 = dump({"SS_ENGINE_NO_RESIDUAL_SUM": "1"})
    tap.ok("Scale+Add" not in text0 and y0 is not None
           and infer.compare(got, y0, 1e-5, 1e-6)[0],
           "convnext opset %d: SS_ENGINE_NO_RESIDUAL_SUM=1 keeps the steps, "
           "same answer" % opset)


if __name__ == "__main__":
    sys.exit(main())
