#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""RoiAlign and MaxUnpool through slimserve-infer, beyond the node suite's
four cases.

RoiAlign: torchvision.ops.roi_align (what Mask R-CNN exports) wrapped in a
module and exported by PyTorch at opsets 11 and 16, aligned and not,
sampling_ratio 0 (adaptive) and 2, spatial_scale 0.25, regions partly
outside the map and degenerate ones, against PyTorch's own output where
the export keeps `aligned` (torchvision 0.14 drops it: aligned=False at
16 and aligned=True at 11 export the other mode; those files are checked
against ONNX's definition, which ONNX Runtime 1.30 matches to 2.4e-7):
|got - want| <= 1e-5 * max|want| + 1e-6.  Mode max (which torchvision
lacks) against a numpy transcription of ONNX's definition: per sample the
largest weighted corner term, then the largest over the bin.

MaxUnpool: MaxPool (with its Indices) then MaxUnpool, with and without
output_shape, 1-D and 2-D, against numpy: every window's maximum back in
its place, zeros elsewhere.

Bad input changes nothing and is an error with a message, not a crash: a
batch index outside the batch, an unpool index outside the tensor.

The hand-built RoiAlign models declare their inputs without a shape (ONNX:
rank unknown), which slimserve-infer must accept at any rank."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def boxes(rng, k, h, w, scale):
    """k regions in image coordinates (the map is h x w at scale), some
    reaching outside the map, one degenerate (a point)."""
    x1 = rng.uniform(-2, w / scale, k)
    y1 = rng.uniform(-2, h / scale, k)
    b = np.stack([x1, y1, x1 + rng.uniform(0, w / scale * 0.8, k),
                  y1 + rng.uniform(0, h / scale * 0.8, k)], 1)
    b[0, 2:] = b[0, :2]
    return b.astype(np.float32)


def roialign_np(x, rois, bidx, oh, ow, ratio, scale, half, is_max):
    """ONNX's RoiAlign, transcribed from its definition."""
    n_r, C, H, W = len(rois), x.shape[1], x.shape[2], x.shape[3]
    y = np.zeros((n_r, C, oh, ow), np.float64)
    off = 0.5 if half else 0.0
    for k in range(n_r):
        x1, y1, x2, y2 = [float(v) * scale - off for v in rois[k]]
        rw, rh = x2 - x1, y2 - y1
        if not half:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = ratio if ratio > 0 else int(np.ceil(bh))
        gw = ratio if ratio > 0 else int(np.ceil(bw))
        img = x[bidx[k]].astype(np.float64)
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(C) if not is_max else None
                for iy in range(gh):
                    for ix in range(gw):
                        yy = y1 + ph * bh + (iy + .5) * bh / gh
                        xx = x1 + pw * bw + (ix + .5) * bw / gw
                        if yy < -1 or yy > H or xx < -1 or xx > W:
                            terms = np.zeros((4, C))
                        else:
                            yy, xx = max(yy, 0.0), max(xx, 0.0)
                            yl, xl = int(yy), int(xx)
                            if yl >= H - 1:
                                yl = yh = H - 1
                                yy = float(yl)
                            else:
                                yh = yl + 1
                            if xl >= W - 1:
                                xl = xh = W - 1
                                xx = float(xl)
                            else:
                                xh = xl + 1
                            ly, lx = yy - yl, xx - xl
                            terms = np.stack([
                                (1 - ly) * (1 - lx) * img[:, yl, xl],
                                (1 - ly) * lx * img[:, yl, xh],
                                ly * (1 - lx) * img[:, yh, xl],
                                ly * lx * img[:, yh, xh]])
                        if is_max:
                            m = terms.max(0)
                            acc = m if acc is None else np.maximum(acc, m)
                        else:
                            acc += terms.sum(0)
                if acc is None:         # no samples (an empty region)
                    acc = np.zeros(C)
                y[k, :, ph, pw] = acc if is_max else acc / max(gh * gw, 1)
    return y.astype(x.dtype)


def check_torchvision(torch, onnx, s, rng):
    import torchvision

    class Roi(torch.nn.Module):
        def __init__(self, aligned, ratio):
            super().__init__()
            self.aligned, self.ratio = aligned, ratio

        def forward(self, x, rois):
            return torchvision.ops.roi_align(x, rois, (3, 4), 0.25,
                                             self.ratio, self.aligned)

    x = torch.randn(2, 5, 12, 10)
    b = torch.from_numpy(boxes(rng, 7, 12, 10, 0.25))
    rois = torch.cat([torch.tensor([[0.], [1.], [1.], [0.], [1.], [0.],
                                    [1.]]), b], 1)
    for opset in (11, 16):
        for aligned in (False, True):
            for ratio in (0, 2):
                what = "torchvision roi_align, opset %d, aligned %s, " \
                       "sampling_ratio %d" % (opset, aligned, ratio)
                m = Roi(aligned, ratio).eval()
                try:
                    torch.onnx.export(m, (x, rois), s.file("r.onnx"),
                                      opset_version=opset,
                                      input_names=["x", "rois"],
                                      output_names=["y"])
                except Exception as e:  # noqa: BLE001
                    tap.ok(False, what + ": exports", str(e))
                    continue
                ops = {n.op_type for n in onnx.load(s.file("r.onnx"))
                       .graph.node}
                np.savez(s.file("in.npz"), x=x.numpy(), rois=rois.numpy())
                got, msg = infer.run(s.file("r.onnx"), [s.file("in.npz")],
                                     s.file("out.npz"))
                if not tap.ok(got is not None and "RoiAlign" in ops,
                              what + ": runs", msg):
                    continue
                # torchvision 0.14 writes no coordinate_transformation_mode
                # (so half_pixel from opset 16, output_half_pixel before)
                # whatever `aligned` says: where they disagree the file
                # means ONNX's definition, which ONNX Runtime computes too
                if aligned == (opset >= 16):
                    with torch.no_grad():
                        want = m(x, rois).numpy()
                    ref = "PyTorch"
                else:
                    want = roialign_np(x.numpy(), rois[:, 1:].numpy(),
                                       rois[:, 0].long().numpy(), 3, 4,
                                       ratio, 0.25, opset >= 16, False)
                    ref = "ONNX's definition (the export drops aligned)"
                ok, detail = infer.compare(got.get("y"), want, 1e-5, 1e-6)
                tap.ok(ok, what + ": equals " + ref, detail)


def roi_model(helper, TensorProto, opset, **attrs):
    g = helper.make_graph(
        [helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], **attrs)],
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("b", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def check_max_and_errors(onnx, helper, TensorProto, s, rng):
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = boxes(rng, 6, 9, 11, 0.5)
    b = np.array([0, 1, 1, 0, 1, 0], np.int64)
    for opset, ctm, ratio in ((10, None, 0), (16, "half_pixel", 0),
                              (16, "output_half_pixel", 3)):
        attrs = dict(mode="max", output_height=2, output_width=3,
                     spatial_scale=0.5, sampling_ratio=ratio)
        if ctm:
            attrs["coordinate_transformation_mode"] = ctm
        onnx.save(roi_model(helper, TensorProto, opset, **attrs),
                  s.file("m.onnx"))
        np.savez(s.file("in.npz"), x=x, rois=rois, b=b)
        got, msg = infer.run(s.file("m.onnx"), [s.file("in.npz")],
                             s.file("out.npz"))
        what = "RoiAlign max, opset %d, %s, sampling_ratio %d" % (
            opset, ctm or "default", ratio)
        if not tap.ok(got is not None, what + ": runs", msg):
            continue
        want = roialign_np(x, rois, b, 2, 3, ratio, 0.5,
                           ctm == "half_pixel", True)
        ok, detail = infer.compare(got.get("y"), want, 1e-5, 1e-6)
        tap.ok(ok, what + ": equals ONNX's definition", detail)
    # a batch index outside the batch: an error naming it
    np.savez(s.file("in.npz"), x=x, rois=rois,
             b=np.array([0, 1, 2, 0, 1, 0], np.int64))
    got, msg = infer.run(s.file("m.onnx"), [s.file("in.npz")],
                         s.file("out.npz"))
    tap.ok(got is None and "batch_indices[2] is 2" in msg
           and "exit status 1" in msg,
           "RoiAlign: a batch index outside the batch is refused", msg)


def unpool_np(x, k, st):
    """MaxPool (no padding, no ties) then MaxUnpool: each window's maximum
    in its place, zeros elsewhere; the unpooled shape."""
    sp = x.ndim - 2
    outs = [(x.shape[2 + i] - k) // st + 1 for i in range(sp)]
    shape = list(x.shape[:2]) + [(o - 1) * st + k for o in outs]
    y = np.zeros(shape, x.dtype)
    for idx in np.ndindex(*x.shape[:2], *outs):
        win = tuple(slice(idx[2 + i] * st, idx[2 + i] * st + k)
                    for i in range(sp))
        w = x[idx[:2] + win]
        at = np.unravel_index(np.argmax(w), w.shape)
        y[idx[:2] + tuple(win[i].start + at[i] for i in range(sp))] = w[at]
    return y


def check_unpool(onnx, helper, TensorProto, s, rng):
    for shape, k, st, extra in (((2, 3, 8, 10), 2, 2, None),
                                ((1, 2, 7, 7), 3, 2, None),
                                ((2, 2, 6, 6), 2, 2, (2, 2, 7, 8)),
                                ((3, 4, 10), 2, 2, None)):
        sp = len(shape) - 2
        x = rng.standard_normal(shape).astype(np.float32)
        nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"],
                                  kernel_shape=[k] * sp, strides=[st] * sp)]
        ins = ["p", "i"]
        inits = []
        if extra is not None:
            inits.append(helper.make_tensor("os", TensorProto.INT64,
                                            [len(extra)], list(extra)))
            ins.append("os")
        nodes.append(helper.make_node("MaxUnpool", ins, ["y"],
                                      kernel_shape=[k] * sp,
                                      strides=[st] * sp))
        g = helper.make_graph(
            nodes, "u",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
        m.ir_version = 7
        onnx.save(m, s.file("u.onnx"))
        np.savez(s.file("in.npz"), x=x)
        got, msg = infer.run(s.file("u.onnx"), [s.file("in.npz")],
                             s.file("out.npz"))
        what = "MaxPool + MaxUnpool %s kernel %d stride %d%s" % (
            shape, k, st, " output_shape %s" % (extra,) if extra else "")
        if not tap.ok(got is not None, what + ": runs", msg):
            continue
        want = unpool_np(x, k, st)
        if extra is not None:
            big = np.zeros(extra, np.float32)
            big[tuple(slice(0, d) for d in want.shape)] = want
            want = big
        ok, detail = infer.compare(got.get("y"), want, 0, 0)
        tap.ok(ok, what + ": equals numpy", detail)
    # an index outside the unpooled tensor
    g = helper.make_graph(
        [helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2],
                          strides=[2, 2])], "u",
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, (1, 1, 2, 2)),
         helper.make_tensor_value_info("i", TensorProto.INT64, (1, 1, 2, 2))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    onnx.save(m, s.file("u.onnx"))
    np.savez(s.file("in.npz"), p=np.ones((1, 1, 2, 2), np.float32),
             i=np.array([0, 5, 10, 16], np.int64).reshape(1, 1, 2, 2))
    got, msg = infer.run(s.file("u.onnx"), [s.file("in.npz")],
                         s.file("out.npz"))
    tap.ok(got is None and "I[3] is 16" in msg and "exit status 1" in msg,
           "MaxUnpool: an index outside the tensor is refused", msg)


def main():
    onnx = infer.import_onnx()
    from onnx import TensorProto, helper
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    rng = np.random.default_rng(12)
    with infer.Scratch() as s:
        check_torchvision(torch, onnx, s, rng)
        check_max_and_errors(onnx, helper, TensorProto, s, rng)
        check_unpool(onnx, helper, TensorProto, s, rng)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
