# SPDX-License-Identifier: Apache-2.0
"""Run slimserve-infer on a model and compare its outputs with a reference.

Shared by the engine's end-to-end tests.  The CLI is the one users run:
    slimserve-infer --model M.onnx --input x.npz --output out.npz
so these tests go through the same .npz reading and writing they do.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

TIMEOUT = 300       # seconds per run: generous for ASan on a busy machine


def torch_for_test():
    """torch, for a test against PyTorch: skips the whole test (TAP) when
    torch is missing; warnings off, seed 12, one thread.  None (reported
    as a failure) when slimserve-infer is not built."""
    import tap
    try:
        import torch
    except ImportError as e:
        tap.skip_all("torch is not installed (%s)" % e)
    import warnings
    warnings.filterwarnings("ignore")
    torch.manual_seed(12)
    torch.set_num_threads(1)
    if not tap.ok(os.access(cli_path(), os.X_OK), "slimserve-infer is built",
                  cli_path()):
        return None
    return torch


def import_onnx():
    """The onnx module, or the whole test skipped (TAP) when it is
    missing (the CI image has python3-onnx)."""
    try:
        import onnx
    except ImportError as e:
        print("1..0 # SKIP needs python3-onnx: %s" % e)
        sys.exit(0)
    return onnx


def cli_path():
    """Where the build put slimserve-infer (SLIMSERVE_INFER overrides)."""
    p = os.environ.get("SLIMSERVE_INFER")
    if p:
        return p
    top = os.environ.get("top_builddir", ".")
    return os.path.join(top, "engine", "tools", "slimserve-infer")


def fixtures_dir():
    top = os.environ.get("top_srcdir")
    if top is None:
        top = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "..", "..")
    return os.path.join(top, "tests", "fixtures")


class Scratch:
    """A temporary directory removed on exit."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="ss-engine-test.")
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name):
        return os.path.join(self.path, name)


def run(model, inputs, out, extra=()):
    """Run the CLI.  inputs: list of --input values.

    Returns (outputs or None, message): outputs is a dict name -> array read
    from `out` when the CLI exited 0 and wrote it; message says what
    happened otherwise (exit status and the tail of stderr).
    """
    cmd = [cli_path(), "--model", model]
    for i in inputs:
        cmd += ["--input", i]
    cmd += ["--output", out] + list(extra)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=TIMEOUT)
    except FileNotFoundError:
        return None, "cannot run %s: no such file" % cmd[0]
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s: %s" % (TIMEOUT, " ".join(cmd))
    err = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode != 0:
        tail = "\n".join(err.splitlines()[-8:])
        return None, "exit status %d: %s\n%s" % (p.returncode, " ".join(cmd),
                                                 tail)
    if not os.path.exists(out):
        return None, "exit 0 but no %s written" % out
    try:
        with np.load(out) as z:
            got = {k: z[k] for k in z.files}
    except Exception as e:  # a corrupt .npz is a CLI bug: report, go on
        return None, "cannot read %s: %s" % (out, e)
    return got, p.stdout.decode("utf-8", "replace")


def compare(got, want, rtol, atol):
    """Per element |got - want| <= rtol * max|want| + atol, same shape and
    dtype; integers and booleans must be equal.  Returns (ok, detail)."""
    if got is None:
        return False, "output missing"
    if got.shape != want.shape:
        return False, "shape %s, want %s" % (got.shape, want.shape)
    if got.dtype != want.dtype:
        return False, "dtype %s, want %s" % (got.dtype, want.dtype)
    if want.size == 0:
        return True, "empty"
    if want.dtype.kind in "iub":
        bad = np.flatnonzero(got.ravel() != want.ravel())
        if bad.size:
            i = bad[0]
            return False, "%d of %d differ; first at flat %d: got %r, " \
                "want %r" % (bad.size, want.size, i, got.ravel()[i],
                             want.ravel()[i])
        return True, "exact"
    g = got.astype(np.float64).ravel()
    w = want.astype(np.float64).ravel()
    if not np.all(np.isfinite(g)):
        i = np.flatnonzero(~np.isfinite(g))[0]
        return False, "non-finite output at flat %d: %r" % (i, g[i])
    scale = float(np.max(np.abs(w)))
    tol = rtol * scale + atol
    diff = np.abs(g - w)
    i = int(np.argmax(diff))
    detail = "max |diff| %.3g at flat %d (got %.9g, want %.9g); " \
        "tolerance %.3g = %g * max|want| %.4g + %g" % (
            diff[i], i, g[i], w[i], tol, rtol, scale, atol)
    return bool(diff[i] <= tol), detail


def random_norm(b):
    """BatchNorm module b with non-trivial running statistics and affine
    parameters (a fresh one has mean 0, var 1, weight 1, bias 0, which
    folding errors would not show); returns b."""
    import torch
    with torch.no_grad():
        b.running_mean.uniform_(-0.5, 0.5)
        b.running_var.uniform_(0.5, 2.0)
        b.weight.uniform_(0.5, 1.5)
        b.bias.uniform_(-0.2, 0.2)
    return b


def conv_ref(x, w, pads, strides, group=1):
    """ONNX Conv in float64 for any spatial rank: x [N, C, *sp], w [OC,
    C/group, *k], pads [begin..., end...], strides per axis."""
    import itertools

    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nsp + i])
                                       for i in range(nsp)])
    k = w.shape[2:]
    out = [(xp.shape[2 + i] - k[i]) // strides[i] + 1 for i in range(nsp)]
    oc, cg = w.shape[0], x.shape[1] // group
    og = oc // group
    y = np.zeros((x.shape[0], oc) + tuple(out))
    for gi in range(group):
        src = xp[:, gi * cg:(gi + 1) * cg]
        for tap in itertools.product(*(range(kk) for kk in k)):
            win = src[(slice(None), slice(None)) + tuple(
                slice(tap[i], tap[i] + strides[i] * out[i], strides[i])
                for i in range(nsp))]
            y[:, gi * og:(gi + 1) * og] += np.tensordot(
                w[(slice(gi * og, (gi + 1) * og), slice(None)) + tap], win,
                axes=([1], [1])).swapaxes(0, 1)
    return y
