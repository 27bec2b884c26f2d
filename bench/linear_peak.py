#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""vit_b_16's Linear layers alone: slimserve vs ONNX Runtime vs the FMA peak.

vit_b_16 spends ~95% of a batch-1 run in four Linear shapes (197 tokens
per image; K x N = qkv 768x2304, out-projection 768x768, fc1 768x3072,
fc2 3072x768).  This bench asks how close each engine's GEMMs come to what
one core can do.  Each chain of widths is its own ONNX model (opset 13,
random weights, input [batch, 197, 768]): 12 times (as vit's 12 blocks,
each layer its own weights, so they stream from memory as in the net)
MatMul + bias Add per layer -- mlp 768 -> 3072 -> 768 (fc1, fc2), out
768 -> 768, qkv 768 -> 2304 -> 768.  slimserve-infer and onnxruntime-node
(bench/engine_ort.js, all graph optimizations) run it in turns, --rounds
times; medians of per-run CPU time; GFLOPS = the chain's 2*B*197*K*N over
it.  The "peak" is a C probe compiled here (cc -O2 -mavx512f -mfma) that
runs 24 independent AVX-512 FMA chains on one thread: the f32 FMA rate the
core gives now (on a shared VM it moves with the host's load; probed once
per round, median printed).  Without AVX-512F or a C compiler the peak
column says so and the rest runs.  Both engines' outputs are checked
against float64 numpy.

  bench/linear_peak.py [--cli PATH] [--batches 1,8] [--rounds 3]
                       [--threads 1] [--chains mlp,out,qkv]

At batch 1 ss/ORT of the whole net cannot exceed these ratios by more than
what the steps around the GEMMs add (bench/README.md, session 30).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import engine  # noqa: E402  (ab_options, run_slimserve, run_ort, ...)

# vit_b_16's Linear layers as chains that end where they start: the MLP
# (fc1, fc2), the out-projection, and qkv followed by a 2304 -> 768 layer
# (not one of vit's: it only brings the chain back to 768)
CHAINS = {"mlp": (768, 3072, 768), "out": (768, 768),
          "qkv": (768, 2304, 768)}
BLOCKS = 12
TOKENS = 197

PEAK_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
int main(void)
{
    __m512 c[24], a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++) c[i] = _mm512_set1_ps((float)i);
    long n = 4000000;
    double t0 = cpu_ms();
    for (long k = 0; k < n; k++)
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) c[i] = _mm512_fmadd_ps(c[i], a, b);
    double t = cpu_ms() - t0;
    float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(c[i]);
    printf("%.1f %g\n", n * 24 * 32.0 / t / 1e6, s);
    return 0;
}
"""


def build_peak(tmp):
    """The FMA probe's path, or None with the reason."""
    with open("/proc/cpuinfo") as f:
        if " avx512f" not in f.read():
            return None, "no AVX-512F"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler"
    src, exe = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
    with open(src, "w") as f:
        f.write(PEAK_C)
    p = subprocess.run([cc, "-O2", "-mavx512f", "-mfma", src, "-o", exe],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        return None, "probe did not build: %s" % p.stderr.decode()[-200:]
    return exe, None


def peak_gflops(exe):
    out = subprocess.run([exe], stdout=subprocess.PIPE).stdout.decode()
    return float(out.split()[0])


def make_model(path, dims, batch, seed):
    """BLOCKS x the chain of Linear layers dims (e.g. 768 -> 3072 -> 768),
    each MatMul + bias Add with its own weights (cold, as in the net):
    one run does enough GEMMs that a run's fixed cost (node's session.run
    and output, ~2 ms CPU) stays small.  -> the layers' (W, b) in order."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rs = np.random.RandomState(seed)
    nodes, inits, wb, cur = [], [], [], "input"
    pairs = list(zip(dims[:-1], dims[1:])) * BLOCKS
    for i, (k, n) in enumerate(pairs):
        w = (rs.randn(k, n) / np.sqrt(k)).astype(np.float32)
        b = (rs.randn(n) * 0.02).astype(np.float32)
        inits += [numpy_helper.from_array(w, "W%d" % i),
                  numpy_helper.from_array(b, "B%d" % i)]
        out = "logits" if i == len(pairs) - 1 else "y%d" % i
        nodes += [helper.make_node("MatMul", [cur, "W%d" % i], ["m%d" % i]),
                  helper.make_node("Add", ["m%d" % i, "B%d" % i], [out])]
        wb.append((w, b))
        cur = out
    g = helper.make_graph(
        nodes, "linears",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       [batch, TOKENS, dims[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       [batch, TOKENS, dims[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, path)
    return wb


def reference(x, wb):
    y = x.astype(np.float64)
    for w, b in wb:
        y = y @ w + b
    return y


def main():
    ap = engine.ab_options(__doc__, "1,8", 3)
    ap.add_argument("--chains", default="mlp,out,qkv")
    a = ap.parse_args()
    cli = engine.ab_cli(a, "linear_peak.py")
    if not engine.ort_available():
        sys.exit("linear_peak.py: onnxruntime-node not installed "
                 "(cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm ci)")
    batches = [int(b) for b in a.batches.split(",")]
    tmp = tempfile.mkdtemp(prefix="ss-bench-linear.")
    load0 = engine.loadavg()
    peak_exe, why = build_peak(tmp)
    peaks, rows, isa = [], [], None
    try:
        for name in a.chains.split(","):
            dims = CHAINS[name]
            for bt in batches:
                model = os.path.join(tmp, "%s_%d.onnx" % (name, bt))
                wb = make_model(model, dims, bt, len(rows))
                x = np.random.RandomState(bt).randn(bt, TOKENS, dims[0])
                x = x.astype(np.float32)
                xf = os.path.join(tmp, "x.npy")
                np.save(xf, x)
                if isa is None:
                    isa = engine.onednn_isa(cli, model, xf, "input")
                runs = 10 if bt == 1 else 3
                scpu, ocpu = [], []
                for _ in range(max(1, a.rounds)):
                    if peak_exe:
                        peaks.append(peak_gflops(peak_exe))
                    _, _, y = engine.run_slimserve(
                        cli, model, xf, "input", os.path.join(tmp, "o.npz"),
                        runs, 2, a.threads)
                    scpu += engine.CPU_MS[cli]
                    _, oy = engine.run_ort(tmp, model, x, "input", runs, 2,
                                           a.threads)
                    ocpu += engine.CPU_MS["ort"]
                ref = reference(x, wb)
                fl = 2.0 * bt * TOKENS * BLOCKS * sum(
                    k * n for k, n in zip(dims[:-1], dims[1:]))
                s, o = statistics.median(scpu), statistics.median(ocpu)
                rows.append((name, " -> ".join(map(str, dims)), bt, s, fl / s / 1e6, o,
                             fl / o / 1e6, o / s, engine.rel_diff(y, ref),
                             engine.rel_diff(oy, ref)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pk = statistics.median(peaks) if peaks else None
    print("# CPU %s; oneDNN ISA %s; threads %d; load %s -> %s"
          % (engine.cpu_model(), isa, a.threads, load0, engine.loadavg()))
    print("# FMA peak (1 thread, median of %d probes): %s"
          % (len(peaks), "%.0f GFLOPS" % pk if pk else why))
    print("| chain | widths (x%d) | batch | ss ms | ss GFLOPS | ORT ms "
          "| ORT GFLOPS | ORT/ss | ss, ORT vs float64 |" % BLOCKS)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = (lambda g: " (%.0f%%)" % (100 * g / pk / a.threads)) if pk \
            else (lambda g: "")
        print("| %s | %s | %d | %.2f | %.0f%s | %.2f | %.0f%s | %.2f "
              "| %.1e, %.1e |" % (r[0], r[1], r[2], r[3], r[4], per(r[4]),
                                  r[5], r[6], per(r[6]), r[7], r[8], r[9]))
    print("# ms: median CPU time per run (every thread); GFLOPS over it")


if __name__ == "__main__":
    main()
