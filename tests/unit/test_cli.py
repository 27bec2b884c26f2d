# SPDX-License-Identifier: Apache-2.0
"""slimserve-infer, black-box: outputs against PyTorch's, usage and errors.

The models, inputs and expected outputs are the committed fixtures under
tests/fixtures/ (written by make_fixtures.py from PyTorch).  Agreement is
max |ours - torch| <= 1e-4 * max |torch| per output.  Every fixture must
run: an unsupported op is a failure, as any other error.
"""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get('top_srcdir', '.'), 'tests',
                                'lib'))
import tap  # noqa: E402

SRC = os.environ.get('top_srcdir', '.')
BUILD = os.environ.get('top_builddir', '.')
BIN = os.path.join(BUILD, 'engine', 'tools', 'slimserve-infer')
FIX = os.path.join(SRC, 'tests', 'fixtures')
RTOL = 1e-4


def run(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def agree(out_path, expected_path):
    got = np.load(out_path)
    want = np.load(expected_path)
    if sorted(got.files) != sorted(want.files):
        return False, 'outputs %r, want %r' % (got.files, want.files)
    for k in want.files:
        a, b = got[k], want[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, '%s: %s %s, want %s %s' % (k, a.dtype, a.shape,
                                                     b.dtype, b.shape)
        err = float(np.max(np.abs(a.astype(np.float64) - b)))
        scale = float(np.max(np.abs(b))) or 1.0
        if err > RTOL * scale:
            return False, '%s: max error %g, scale %g' % (k, err, scale)
    return True, ''


def fixtures():
    if not os.path.isdir(FIX):
        return []
    return sorted(d for d in os.listdir(FIX)
                  if os.path.isfile(os.path.join(FIX, d, 'model.onnx')))


def test_fixtures(tmp):
    for name in fixtures():
        d = os.path.join(FIX, name)
        for b in (1, 7, 64):
            inp = os.path.join(d, 'batch%d.npz' % b)
            exp = os.path.join(d, 'expected%d.npz' % b)
            if not os.path.exists(inp):
                continue
            out = os.path.join(tmp, '%s_%d.npz' % (name, b))
            rc, _, err = run('--model', os.path.join(d, 'model.onnx'),
                             '--input', inp, '--output', out)
            good = rc == 0
            why = err
            if good:
                good, why = agree(out, exp)
            tap.ok(good, '%s batch %d matches PyTorch (rtol %g)'
                   % (name, b, RTOL), why)


def test_inputs(tmp):
    d = os.path.join(FIX, 'mlp_op13')
    model = os.path.join(d, 'model.onnx')
    x = np.load(os.path.join(d, 'batch7.npz'))['input']
    exp = os.path.join(d, 'expected7.npz')
    out = os.path.join(tmp, 'o.npz')

    np.save(os.path.join(tmp, 'x.npy'), x)
    rc, _, err = run('--model', model, '--input', os.path.join(tmp, 'x.npy'),
                     '--output', out)
    tap.ok(rc == 0 and agree(out, exp)[0], 'a lone .npy feeds the only input',
           err)
    rc, _, err = run('--model', model,
                     '--input', 'input=' + os.path.join(tmp, 'x.npy'),
                     '--output', out)
    tap.ok(rc == 0 and agree(out, exp)[0], 'NAME=FILE.npy', err)
    np.save(os.path.join(tmp, 'x64.npy'), x.astype(np.float64))
    rc, _, err = run('--model', model, '-i', os.path.join(tmp, 'x64.npy'),
                     '-o', out)
    tap.ok(rc == 0 and agree(out, exp)[0], 'float64 is converted', err)
    np.savez_compressed(os.path.join(tmp, 'xc.npz'), input=x)
    rc, _, err = run('--model', model, '-i', os.path.join(tmp, 'xc.npz'),
                     '-o', out)
    tap.ok(rc == 0 and agree(out, exp)[0], 'compressed .npz input', err)
    left = [f for f in os.listdir(tmp) if '.tmp.' in f]
    tap.eq(left, [], 'no temporary files left next to the output')

    # Wrong inputs: exit 1 with a message that says what is wrong.
    cases = [
        ('wrong.npz', {'wrong': x}, ["unknown input 'wrong'",
                                     "missing input 'input'"]),
        ('i64.npz', {'input': x.astype(np.int64)}, ['int64', 'float32']),
        ('shape.npz', {'input': x[:, :63]}, ['shape (7, 63)', '64)']),
        ('rank.npz', {'input': x.reshape(7, 8, 8)}, ['shape (7, 8, 8)']),
        ('extra.npz', {'input': x, 'more': x}, ["unknown input 'more'"]),
    ]
    for fname, arrays, words in cases:
        p = os.path.join(tmp, fname)
        np.savez(p, **arrays)
        rc, _, err = run('--model', model, '--input', p, '--output', out)
        tap.ok(rc == 1 and all(w in err for w in words),
               '%s: exit 1 naming %s' % (fname, words), 'rc %d: %s'
               % (rc, err))
    rc, _, err = run('--model', model, '-i', os.path.join(tmp, 'x.npy'),
                     '-i', 'input=' + os.path.join(tmp, 'x.npy'), '-o', out)
    tap.ok(rc == 1 and 'unnamed' in err, 'unnamed .npy with others: error',
           err)
    rc, _, err = run('--model', model, '-i', '/nonexistent/x.npy', '-o', out)
    tap.ok(rc == 1 and '/nonexistent/x.npy' in err, 'missing input file',
           err)
    with open(os.path.join(tmp, 'bad.onnx'), 'wb') as f:
        f.write(b'\x08\x07garbage\xff\xff\xff')
    rc, _, err = run('--model', os.path.join(tmp, 'bad.onnx'), '-i',
                     os.path.join(tmp, 'x.npy'), '-o', out)
    tap.ok(rc == 1 and 'bad.onnx' in err, 'corrupt model: exit 1', err)
    with open(os.path.join(tmp, 'bad.npy'), 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00\x10\x00{"descr": "<f4"')
    rc, _, err = run('--model', model, '-i', os.path.join(tmp, 'bad.npy'),
                     '-o', out)
    tap.ok(rc == 1 and 'bad.npy' in err, 'truncated .npy: exit 1', err)

    # --repeat: per-run lines on stderr, one summary line on stdout.
    rc, so, err = run('--model', model, '-i', os.path.join(tmp, 'x.npy'),
                      '--repeat', '5', '--threads', '1')
    m = re.fullmatch(r'latency_ms median=([\d.]+) min=([\d.]+) '
                     r'mean=([\d.]+) max=([\d.]+) runs=5 load_ms=[\d.]+ '
                     r'compile_ms=[\d.]+ threads=1 load_rss_mb=[\d.]+ '
                     r'peak_rss_mb=[\d.]+\n', so)
    tap.ok(rc == 0 and m is not None, '--repeat prints the summary line',
           so + err)
    if m:
        med, lo, mean, hi = map(float, m.groups())
        tap.ok(0 < lo <= med <= hi and lo <= mean <= hi,
               'min <= median <= max and min <= mean <= max')
    tap.eq(len(re.findall(r'^run \d+: [\d.]+ ms cpu [\d.]+ ms$', err,
                          re.M)), 5,
           'one latency and CPU time line per run on stderr')


def test_usage(tmp):
    rc, so, _ = run('--help')
    tap.ok(rc == 0 and 'Usage' in so and '--repeat' in so, '--help: exit 0')
    rc, so, _ = run('--version')
    tap.ok(rc == 0 and re.match(r'slimserve-infer \d', so), '--version')
    x = os.path.join(tmp, 'x.npy')
    model = os.path.join(FIX, 'mlp_op13', 'model.onnx')
    for args, why in [
            ([], 'no arguments'),
            (['--model', model], 'no input'),
            (['--model', model, '-i', x], 'no output and no --repeat'),
            (['-i', x, '-o', 'o.npz'], 'no model'),
            (['--bogus'], 'unknown option'),
            (['--model'], 'missing argument'),
            (['--model', model, '-i', x, '--repeat', '0'], '--repeat 0'),
            (['--model', model, '-i', x, '--threads', 'two', '-o', 'o.npz'],
             '--threads two'),
            (['--model', model, '-i', x, '-o', 'o.npz', 'extra'],
             'stray argument')]:
        rc, so, err = run(*args)
        tap.ok(rc == 2 and '--help' in err, 'usage error (%s): exit 2' % why,
               'rc %d: %s' % (rc, err))


def main():
    if not os.access(BIN, os.X_OK):
        tap.skip_all('no %s' % BIN)
    if not os.path.isfile(os.path.join(FIX, 'mlp_op13', 'model.onnx')):
        tap.skip_all('no fixtures')
    with tempfile.TemporaryDirectory() as tmp:
        test_usage(tmp)
        test_inputs(tmp)
        test_fixtures(tmp)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
