# SPDX-License-Identifier: Apache-2.0
"""Called by test_npy: checks with numpy the files the C code wrote.

Each .npy is named <kind><size>_<shape>.npy and must hold the test pattern
(i % 2 for bool, i for unsigned, i - 3 for signed, (i - 3) * 0.5 for
floats); out.npz and out64.npz hold one (2, d) array per dtype.  Exits 0
when all match, 1 otherwise, printing TAP diagnostics.
"""

import os
import sys

import numpy as np


def pattern(dtype, shape):
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    dt = np.dtype(dtype)
    if dt.kind == 'b':
        v = i % 2
    elif dt.kind == 'u':
        v = i
    elif dt.kind == 'f':
        v = (i - 3) * 0.5
    else:
        v = i - 3
    return v.astype(dt).reshape(shape)


SHAPES = {'3x5': (3, 5), 'scalar': (), '0': (0,), '2x1x4': (2, 1, 4)}


def main(d):
    bad = 0
    seen = 0
    for f in sorted(os.listdir(d)):
        p = os.path.join(d, f)
        try:
            if f.endswith('.npy'):
                kind, shape = f[:-4].split('_')
                want = pattern(kind, SHAPES[shape])
                got = np.load(p)
                good = (got.dtype == want.dtype and got.shape == want.shape
                        and np.array_equal(got, want))
            elif f.endswith('.npz'):
                with np.load(p) as z:
                    good = len(z.files) == 11
                    for j, name in enumerate(z.files):
                        want = pattern(name[1:], (2, j))
                        got = z[name]
                        good = good and got.dtype == want.dtype and \
                            got.shape == want.shape and \
                            np.array_equal(got, want)
            else:
                continue
        except Exception as e:  # noqa: BLE001 - report anything
            print('# %s: %s' % (f, e))
            good = False
        seen += 1
        if not good:
            print('# numpy disagrees about %s' % f)
            bad += 1
    print('# numpy checked %d files, %d bad' % (seen, bad))
    return 1 if bad or seen == 0 else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
