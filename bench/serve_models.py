# SPDX-License-Identifier: Apache-2.0
"""The MNIST-sized models of bench/serve.py's scale part, written as ONNX.

The engine fixtures (tests/fixtures/{mlp,cnn}_op17) read the 8x8 digits
set; issue 9 measures models of MNIST's size, so this writes two with
fixed random weights (numpy, seeded: the same files every time), built
with onnx.helper the way tests/fixtures/make_op_cases.py builds its cases:

  mlp  float32 [N, 784]        Gemm 784-512, Relu, Gemm 512-256, Relu,
                               Gemm 256-10 (535,818 weights)
  cnn  float32 [N, 1, 28, 28]  the TensorFlow tutorial's CNN: 3x3 Conv
                               1-32, Relu, MaxPool (14x14), Conv 32-64,
                               Relu, MaxPool (7x7), Conv 64-64, Relu,
                               Flatten, Gemm 3136-64, Relu, Gemm 64-10
                               (5.8 M multiply-adds per image)

and one input image: a held-out digit (tests/fixtures/digits) scaled to
28x28 bilinearly and normalised as MNIST pipelines do ((x - 0.1307) /
0.3081), so all 784 values are non-zero floats, as a real client sends.
The answers are not meant to be right (the weights are random); the
bench checks that slimserve and ONNX Runtime give the same logits.

    /usr/bin/python3 bench/serve_models.py OUTDIR

writes OUTDIR/mlp.onnx, OUTDIR/cnn.onnx and OUTDIR/image.npy.  Needs
Debian's python3-onnx and python3-numpy.
"""

import os
import sys

import numpy as np

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(TOP, "tests", "fixtures", "digits", "mlp_heldout.npz")
OPSET = 17
MLP_LAYERS = (784, 512, 256, 10)
CNN_CHANNELS = (1, 32, 64, 64)
CNN_HIDDEN = 64


def _he(rs, shape, fan_in):
    return (rs.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(
        np.float32)


def mlp_weights(seed=9):
    rs = np.random.RandomState(seed)
    return [(_he(rs, (o, i), i), (rs.standard_normal(o) * 0.01).astype(
        np.float32)) for i, o in zip(MLP_LAYERS[:-1], MLP_LAYERS[1:])]


def cnn_weights(seed=9):
    rs = np.random.RandomState(seed)
    convs = [(_he(rs, (o, i, 3, 3), 9 * i),
              (rs.standard_normal(o) * 0.01).astype(np.float32))
             for i, o in zip(CNN_CHANNELS[:-1], CNN_CHANNELS[1:])]
    flat = CNN_CHANNELS[-1] * 7 * 7
    fc = [(_he(rs, (o, i), i), (rs.standard_normal(o) * 0.01).astype(
        np.float32)) for i, o in ((flat, CNN_HIDDEN), (CNN_HIDDEN, 10))]
    return convs, fc


def mlp_forward(layers, x):
    """The MLP in numpy (the bench's reference for slimserve's answer)."""
    x = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        x = x @ w.T.astype(np.float64) + b
        if k < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def _save(nodes, inits, in_shape, name, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N"] + list(in_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits])
    m = helper.make_model(g, producer_name="bench/serve_models.py",
                          opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def write_mlp(path, layers):
    from onnx import helper
    nodes, inits, x = [], [], "input"
    for k, (w, b) in enumerate(layers):
        inits += [("w%d" % k, w), ("b%d" % k, b)]
        last = k == len(layers) - 1
        y = "logits" if last else "fc%d" % k
        nodes.append(helper.make_node("Gemm", [x, "w%d" % k, "b%d" % k],
                                      [y], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], ["relu%d" % k]))
            y = "relu%d" % k
        x = y
    _save(nodes, inits, [MLP_LAYERS[0]], "mlp784", path)


def write_cnn(path, convs, fc):
    from onnx import helper
    nodes, inits, x = [], [], "input"
    for k, (w, b) in enumerate(convs):
        inits += [("conv%d_w" % k, w), ("conv%d_b" % k, b)]
        nodes += [
            helper.make_node("Conv", [x, "conv%d_w" % k, "conv%d_b" % k],
                             ["conv%d" % k], kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv%d" % k], ["relu%d" % k])]
        x = "relu%d" % k
        if k < len(convs) - 1:
            nodes.append(helper.make_node("MaxPool", [x], ["pool%d" % k],
                                          kernel_shape=[2, 2],
                                          strides=[2, 2]))
            x = "pool%d" % k
    inits += [("fc0_w", fc[0][0]), ("fc0_b", fc[0][1]),
              ("fc1_w", fc[1][0]), ("fc1_b", fc[1][1])]
    nodes += [helper.make_node("Flatten", [x], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fc0_w", "fc0_b"], ["fc0"],
                               transB=1),
              helper.make_node("Relu", ["fc0"], ["fc0_relu"]),
              helper.make_node("Gemm", ["fc0_relu", "fc1_w", "fc1_b"],
                               ["logits"], transB=1)]
    _save(nodes, inits, [1, 28, 28], "cnn28", path)


def image28():
    """-> float32 [28, 28]: a held-out 8x8 digit, scaled and normalised."""
    with np.load(DIGITS) as z:
        small = z["input"][0].reshape(8, 8).astype(np.float64)  # 0..1
    pos = np.linspace(0, 7, 28)
    lo = np.minimum(np.floor(pos).astype(int), 6)
    f = pos - lo
    rows = small[lo] * (1 - f)[:, None] + small[lo + 1] * f[:, None]
    img = rows[:, lo] * (1 - f)[None, :] + rows[:, lo + 1] * f[None, :]
    return ((img - 0.1307) / 0.3081).astype(np.float32)


def write_all(outdir):
    """-> {"mlp": path, "cnn": path, "image": float32 [28, 28],
    "mlp_layers": weights}."""
    os.makedirs(outdir, exist_ok=True)
    layers = mlp_weights()
    convs, fc = cnn_weights()
    paths = {"mlp": os.path.join(outdir, "mlp.onnx"),
             "cnn": os.path.join(outdir, "cnn.onnx")}
    write_mlp(paths["mlp"], layers)
    write_cnn(paths["cnn"], convs, fc)
    img = image28()
    np.save(os.path.join(outdir, "image.npy"), img)
    return dict(paths, image=img, mlp_layers=layers)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: serve_models.py OUTDIR")
    out = write_all(sys.argv[1])
    print("wrote %s, %s and image.npy" % (out["mlp"], out["cnn"]))
