#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""DFT, STFT and MelWeightMatrix through slimserve-infer, beyond the node
suite's six cases.

DFT against numpy.fft (float64): real and complex signals, axis 1, 2 and
-2, dft_length shorter (cut) and longer (zero-padded) than the signal,
onesided, inverse, float32 and float64.  STFT against torch.stft
(center=False, a periodic Hann window, onesided) and, for a complex signal
and frame_length without a window, numpy.  MelWeightMatrix against a numpy
transcription of ONNX's definition, and a log-mel front end (STFT, power,
MatMul by the filter bank, Log) against numpy.  float32 results must match
within |got - want| <= 1e-5 * max|want| + 1e-5 (the sums are over up to
512 terms), float64 within 1e-12 * max|want| + 1e-12.

Bad input is an error with a message: frame_step 0, a frame longer than
the signal, a mel upper edge above the Nyquist frequency."""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import infer  # noqa: E402
import tap  # noqa: E402


def pairs(z):
    return np.stack([z.real, z.imag], -1)


def mel_np(mels, dft, rate, lo, hi):
    """ONNX's MelWeightMatrix, transcribed from its definition."""
    nb = dft // 2 + 1
    lm = 2595 * np.log10(1 + lo / 700)
    step = (2595 * np.log10(1 + hi / 700) - lm) / (mels + 2)
    f = 700 * (10 ** ((np.arange(mels + 2) * step + lm) / 2595) - 1)
    e = np.floor((dft + 1) * f / rate).astype(int)
    w = np.zeros((nb, mels))
    for i in range(mels):
        lo_, c, h = e[i], e[i + 1], e[i + 2]
        if c == lo_:
            w[c, i] = 1
        for j in range(lo_, c + 1 if c > lo_ else lo_):
            w[j, i] = (j - lo_) / (c - lo_)
        for j in range(c, h):
            w[j, i] = (h - j) / (h - c)
    return w.astype(np.float32)


class Case:
    def __init__(self, onnx, helper, TP, s):
        self.onnx, self.helper, self.TP, self.s = onnx, helper, TP, s

    def model(self, nodes, ins, outs, inits=(), opset=17):
        h = self.helper
        g = h.make_graph(nodes, "s",
                         [h.make_tensor_value_info(n, t, None)
                          for n, t in ins],
                         [h.make_tensor_value_info(n, self.TP.FLOAT, None)
                          for n in outs], list(inits))
        m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
        m.ir_version = 8
        self.onnx.save(m, self.s.file("m.onnx"))

    def run(self, feeds):
        np.savez(self.s.file("in.npz"), **feeds)
        return infer.run(self.s.file("m.onnx"), [self.s.file("in.npz")],
                         self.s.file("out.npz"))

    def check(self, what, feeds, want, out="y", tol=1e-5):
        got, msg = self.run(feeds)
        if not tap.ok(got is not None, what + ": runs", msg):
            return
        ok, detail = infer.compare(got.get(out), want.astype(
            got[out].dtype if out in got else want.dtype), tol, tol)
        tap.ok(ok, what + ": equals the reference", detail)

    def refused(self, what, feeds, text):
        got, msg = self.run(feeds)
        tap.ok(got is None and text in msg and "exit status 1" in msg,
               what + " is refused", msg)


def check_dft(c, rng):
    TP, h = c.TP, c.helper
    for dt, tp, tol in ((np.float32, TP.FLOAT, 1e-5),
                        (np.float64, TP.DOUBLE, 1e-12)):
        for cplx in (False, True):
            for axis, length, onesided, inverse in (
                    (1, None, 0, 0), (2, None, 0, 0), (-2, None, 1, 0),
                    (1, 7, 0, 0), (1, 20, 1, 0), (2, 16, 0, 1),
                    (1, None, 0, 1)):
                shape = (2, 12, 9)
                z = rng.standard_normal(shape) + (
                    1j * rng.standard_normal(shape) if cplx else 0)
                x = pairs(z) if cplx else z.real[..., None]
                x = x.astype(dt)
                ins = [("x", tp)]
                feeds = {"x": x}
                names = ["x"]
                if length is not None:
                    ins.append(("n", TP.INT64))
                    feeds["n"] = np.array(length, np.int64)
                    names.append("n")
                c.model([h.make_node("DFT", names, ["y"], axis=axis,
                                     onesided=onesided, inverse=inverse)],
                        ins, ["y"])
                ax = axis if axis > 0 else axis + 4   # of the rank-4 input
                zz = z.astype(np.complex128)
                ref = (np.fft.ifft if inverse else np.fft.fft)(
                    zz, n=length, axis=ax)
                if onesided:
                    ref = np.take(ref, range(ref.shape[ax] // 2 + 1), ax)
                c.check("DFT %s %s axis %d length %s onesided %d inverse %d"
                        % (np.dtype(dt).name, "complex" if cplx else "real",
                           axis, length, onesided, inverse),
                        feeds, pairs(ref).astype(dt), tol=tol)


def check_stft(c, torch, rng):
    TP, h = c.TP, c.helper
    sig = rng.standard_normal((3, 300)).astype(np.float32)
    win = torch.hann_window(64, periodic=True)
    ref = torch.stft(torch.from_numpy(sig), 64, hop_length=16,
                     window=win, center=False, onesided=True,
                     return_complex=True).numpy()     # [B, bins, frames]
    c.model([h.make_node("STFT", ["x", "step", "w"], ["y"])],
            [("x", TP.FLOAT), ("step", TP.INT64), ("w", TP.FLOAT)], ["y"])
    feeds = {"x": sig[..., None], "step": np.array(16, np.int64),
             "w": win.numpy()}
    c.check("STFT n_fft 64 hop 16 Hann window vs torch.stft", feeds,
            pairs(ref.transpose(0, 2, 1)))
    # a complex signal, frame_length without a window, two-sided
    z = rng.standard_normal((2, 50)) + 1j * rng.standard_normal((2, 50))
    c.model([h.make_node("STFT", ["x", "step", "", "fl"], ["y"],
                         onesided=0)],
            [("x", TP.FLOAT), ("step", TP.INT64), ("fl", TP.INT64)], ["y"])
    frames = [np.fft.fft(z[:, f * 7:f * 7 + 10], axis=1)
              for f in range(1 + (50 - 10) // 7)]
    c.check("STFT complex signal, frame_length 10, step 7, two-sided",
            {"x": pairs(z).astype(np.float32),
             "step": np.array(7, np.int64), "fl": np.array(10, np.int64)},
            pairs(np.stack(frames, 1)).astype(np.float32))
    c.refused("STFT frame_step 0", {"x": pairs(z).astype(np.float32),
                                     "step": np.array(0, np.int64),
                                     "fl": np.array(10, np.int64)},
              "frame_step must be an integer in [1,")
    c.refused("STFT a frame longer than the signal",
              {"x": pairs(z).astype(np.float32),
               "step": np.array(1, np.int64), "fl": np.array(51, np.int64)},
              "does not fit the signal's 50 samples")


def check_mel(c, rng):
    TP, h = c.TP, c.helper
    names = ["m", "d", "r", "lo", "hi"]
    tps = [TP.INT64, TP.INT64, TP.INT64, TP.FLOAT, TP.FLOAT]
    c.model([h.make_node("MelWeightMatrix", names, ["y"])],
            list(zip(names, tps)), ["y"])
    for mels, dft, rate, lo, hi in ((40, 512, 16000, 0.0, 8000.0),
                                    (80, 400, 16000, 20.0, 7600.0),
                                    (13, 64, 8000, 100.0, 3000.0)):
        feeds = {"m": np.array(mels, np.int64), "d": np.array(dft, np.int64),
                 "r": np.array(rate, np.int64),
                 "lo": np.array(lo, np.float32),
                 "hi": np.array(hi, np.float32)}
        c.check("MelWeightMatrix %d mels, dft %d, %d Hz, %g-%g Hz"
                % (mels, dft, rate, lo, hi), feeds,
                mel_np(mels, dft, rate, lo, hi), tol=1e-6)
    c.refused("MelWeightMatrix with the upper edge above Nyquist",
              {"m": np.array(10, np.int64), "d": np.array(64, np.int64),
               "r": np.array(8000, np.int64), "lo": np.array(0, np.float32),
               "hi": np.array(6000, np.float32)},
              "above the Nyquist frequency")
    # a log-mel front end: STFT -> power -> MatMul by the filter bank -> Log
    n_fft, hop, mels = 128, 32, 20
    fb = mel_np(mels, n_fft, 16000, 0.0, 8000.0)
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))
    win = win.astype(np.float32)
    nodes = [
        h.make_node("STFT", ["x", "step", "w"], ["s"]),
        h.make_node("Mul", ["s", "s"], ["sq"]),
        h.make_node("ReduceSum", ["sq", "ax"], ["pw"], keepdims=0),
        h.make_node("MelWeightMatrix", ["m", "d", "r", "lo", "hi"], ["fb"]),
        h.make_node("MatMul", ["pw", "fb"], ["mel"]),
        h.make_node("Add", ["mel", "eps"], ["mel1"]),
        h.make_node("Log", ["mel1"], ["y"]),
    ]
    consts = [
        h.make_tensor("step", TP.INT64, [], [hop]),
        h.make_tensor("w", TP.FLOAT, [n_fft], win.tolist()),
        h.make_tensor("ax", TP.INT64, [1], [-1]),
        h.make_tensor("m", TP.INT64, [], [mels]),
        h.make_tensor("d", TP.INT64, [], [n_fft]),
        h.make_tensor("r", TP.INT64, [], [16000]),
        h.make_tensor("lo", TP.FLOAT, [], [0.0]),
        h.make_tensor("hi", TP.FLOAT, [], [8000.0]),
        h.make_tensor("eps", TP.FLOAT, [], [1e-6]),
    ]
    c.model(nodes, [("x", TP.FLOAT)], ["y"], consts)
    sig = rng.standard_normal((2, 1000))
    fr = np.stack([sig[:, f * hop:f * hop + n_fft] * win
                   for f in range(1 + (1000 - n_fft) // hop)], 1)
    spec = np.fft.rfft(fr, axis=2)
    want = np.log((np.abs(spec) ** 2) @ fb.astype(np.float64) + 1e-6)
    c.check("log-mel front end (STFT, power, mel MatMul, Log)",
            {"x": sig[..., None].astype(np.float32)},
            want.astype(np.float32), tol=1e-4)


def main():
    onnx = infer.import_onnx()
    from onnx import TensorProto, helper
    torch = infer.torch_for_test()
    if torch is None:
        return tap.done()
    rng = np.random.default_rng(12)
    with infer.Scratch() as s:
        c = Case(onnx, helper, TensorProto, s)
        check_dft(c, rng)
        check_stft(c, torch, rng)
        check_mel(c, rng)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
