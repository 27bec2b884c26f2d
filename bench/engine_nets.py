#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""torchvision's classification nets, written by hand, for bench/engine.py.

torchvision is not installable here (no wheel for Debian's torch 1.13), so
this module builds resnet18, mobilenet_v2, convnext_tiny and vit_b_16 with
the same layers, in the same order, with the same hyper-parameters as
torchvision 0.14's definitions (torchvision/models/{resnet,mobilenetv2,
convnext,vision_transformer}.py): what matters for an engine is the graph
the exporter writes (Conv+BN folded, the depthwise 7x7 and LayerNorm over
channels of ConvNeXt, nn.MultiheadAttention of ViT), not pretrained
weights.  Weights are random (seeded), BatchNorm running statistics too
(so folding them is not the identity).

    engine_nets.py export OUTDIR NAME [NAME...]
        writes OUTDIR/NAME.onnx (opset 17, batch axis dynamic) and
        OUTDIR/NAME.pt (the state_dict); prints one JSON line
        {"NAME": {"onnx": path, "params": n, "export_s": t}, ...}
    engine_nets.py run JOB.json
        the PyTorch-eager peer: JOB {"threads", "runs": [{"net", "state",
        "batch", "input", "repeat", "warmup", "output"}]}; prints one
        JSON line {"net/batch": [latency_ms, ...]}
"""

import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17


# ---- resnet18 (torchvision.models.resnet) ---------------------------------

class BasicBlock(nn.Module):
    def __init__(self, inp, out, stride=1, down=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = down

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inp = [], 64
        for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            down = None
            if stride != 1 or inp != out:
                down = nn.Sequential(nn.Conv2d(inp, out, 1, stride,
                                               bias=False),
                                     nn.BatchNorm2d(out))
            layers.append(nn.Sequential(BasicBlock(inp, out, stride, down),
                                        BasicBlock(out, out)))
            inp = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- mobilenet_v2 (torchvision.models.mobilenetv2) -------------------------

def conv_bn_act(inp, out, k=3, stride=1, groups=1, act=nn.ReLU6):
    layers = [nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, t):
        super().__init__()
        hid = int(round(inp * t))
        self.use_res = stride == 1 and inp == out
        layers = []
        if t != 1:
            layers.append(conv_bn_act(inp, hid, 1))
        layers += [conv_bn_act(hid, hid, 3, stride, groups=hid),
                   nn.Conv2d(hid, out, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, classes=1000):
        super().__init__()
        feats, inp = [conv_bn_act(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                feats.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        feats.append(conv_bn_act(inp, 1280, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2),
                                        nn.Linear(1280, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---- convnext_tiny (torchvision.models.convnext) ---------------------------

class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        # stochastic depth is the identity in eval
        return self.layer_scale * self.block(x) + x


class ConvNeXtTiny(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
        layers = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4, bias=True),
                                LayerNorm2d(dims[0], eps=1e-6))]
        for i, (d, n) in enumerate(zip(dims, depths)):
            layers.append(nn.Sequential(*[CNBlock(d) for _ in range(n)]))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(
                    LayerNorm2d(d, eps=1e-6),
                    nn.Conv2d(d, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6),
                                        nn.Flatten(1),
                                        nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


# ---- vit_b_16 (torchvision.models.vision_transformer) ----------------------

class EncoderBlock(nn.Module):
    def __init__(self, heads, dim, mlp):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads,
                                                    batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(),
                                 nn.Dropout(0.0), nn.Linear(mlp, dim),
                                 nn.Dropout(0.0))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = self.dropout(y) + x
        return x + self.mlp(self.ln_2(x))


class ViTB16(nn.Module):
    def __init__(self, classes=1000, image=224, patch=16, layers=12,
                 heads=12, dim=768, mlp=3072):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        seq = (image // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(
            torch.empty(1, seq, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(*[EncoderBlock(heads, dim, mlp)
                                      for _ in range(layers)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x)
        x = x.reshape(n, self.dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.ln(self.layers(self.dropout(x + self.pos_embedding)))
        return self.head(x[:, 0])


NETS = {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2,
        "convnext_tiny": ConvNeXtTiny, "vit_b_16": ViTB16}


def build(name, seed=0):
    torch.manual_seed(seed)
    m = NETS[name]()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
            if isinstance(mod, CNBlock):
                # torchvision's 1e-6 makes every block the identity to
                # float precision: a wrong block would still match
                mod.layer_scale.uniform_(0.1, 0.5)
            if isinstance(mod, ViTB16):
                mod.class_token.normal_(std=0.02)
    return m.eval()


def export(outdir, names):
    os.makedirs(outdir, exist_ok=True)
    info = {}
    for name in names:
        t0 = time.perf_counter()
        m = build(name)
        x = torch.randn(1, 3, 224, 224)
        path = os.path.join(outdir, name + ".onnx")
        torch.onnx.export(m, x, path, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"},
                                        "logits": {0: "N"}},
                          do_constant_folding=True)
        torch.save(m.state_dict(), os.path.join(outdir, name + ".pt"))
        info[name] = {"onnx": path,
                      "params": sum(p.numel() for p in m.parameters()),
                      "export_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(info))


def run(job_file):
    with open(job_file) as f:
        job = json.load(f)
    torch.set_num_threads(job.get("threads", 2))
    result, models = {}, {}
    with torch.inference_mode():
        for r in job["runs"]:
            if r["net"] not in models:
                m = NETS[r["net"]]()
                m.load_state_dict(torch.load(r["state"]))
                models[r["net"]] = m.eval()
            m = models[r["net"]]
            x = torch.from_numpy(np.load(r["input"]))
            for _ in range(r.get("warmup", 0)):
                y = m(x)
            lat = []
            for _ in range(r["repeat"]):
                t0 = time.perf_counter()
                y = m(x)
                lat.append((time.perf_counter() - t0) * 1e3)
            np.save(r["output"], y.numpy())
            result["%s/%d" % (r["net"], r["batch"])] = lat
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "export":
        export(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(__doc__)
