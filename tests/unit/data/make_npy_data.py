# SPDX-License-Identifier: Apache-2.0
"""Writes the small numpy files test_npy.c reads (run once, output committed).

Every array holds a known pattern so the C test can check each element:
element i in row-major order is i % 2 for bool, i for unsigned types, and
i - 3 (times 0.5 for floats) otherwise.

    /usr/bin/python3 tests/unit/data/make_npy_data.py tests/unit/data/npy
"""

import os
import sys

import numpy as np


def pattern(dtype, shape):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    dt = np.dtype(dtype)
    if dt.kind == 'b':
        v = (i % 2).astype(dt)
    elif dt.kind == 'u':
        v = i.astype(dt)
    elif dt.kind == 'f':
        v = ((i - 3) * 0.5).astype(dt)
    else:
        v = (i - 3).astype(dt)
    return v.reshape(shape)


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = {
        'f4_2x3': ('<f4', (2, 3)),
        'f8_4': ('<f8', (4,)),
        'f2_3': ('<f2', (3,)),
        'i8_2x2x2': ('<i8', (2, 2, 2)),
        'i4_5': ('<i4', (5,)),
        'i2_3': ('<i2', (3,)),
        'i1_4': ('|i1', (4,)),
        'u1_6': ('|u1', (6,)),
        'u2_3': ('<u2', (3,)),
        'u4_3': ('<u4', (3,)),
        'u8_3': ('<u8', (3,)),
        'b1_5': ('|b1', (5,)),
        'f4_scalar': ('<f4', ()),
        'f4_0x3': ('<f4', (0, 3)),
        'f4_be_2x3': ('>f4', (2, 3)),
        'i8_be_4': ('>i8', (4,)),
    }
    arrays = {}
    for name, (dt, shape) in cases.items():
        a = pattern(dt, shape)
        np.save(os.path.join(out, name + '.npy'), a)
        arrays[name] = a
    # Fortran order: the logical array is the same pattern.
    a = np.asfortranarray(pattern('<f4', (2, 3, 4)))
    np.save(os.path.join(out, 'f4_fortran_2x3x4.npy'), a)
    # Format version 2.0 and 3.0 headers.
    for ver in ((2, 0), (3, 0)):
        with open(os.path.join(out, 'f4_v%d_2x3.npy' % ver[0]), 'wb') as f:
            a = pattern('<f4', (2, 3))
            np.lib.format.write_array(f, a, version=ver)
    small = {k: arrays[k] for k in ('f4_2x3', 'i8_2x2x2', 'f4_scalar',
                                    'f4_0x3', 'b1_5')}
    np.savez(os.path.join(out, 'stored.npz'), **small)
    np.savez_compressed(os.path.join(out, 'deflated.npz'), **small)
    # An archive with a non-.npy member and a directory, which readers skip.
    import zipfile
    with zipfile.ZipFile(os.path.join(out, 'mixed.npz'), 'w') as z:
        z.writestr('readme.txt', 'not an array\n')
        z.writestr('sub/', '')
        with z.open('x.npy', 'w', force_zip64=True) as f:
            np.lib.format.write_array(f, arrays['f4_2x3'])


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'npy')
