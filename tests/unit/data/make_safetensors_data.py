# SPDX-License-Identifier: Apache-2.0
"""Writes the safetensors files test_safetensors.c reads (run once, output
committed), by hand with struct and json: the format is an 8-byte
little-endian header length, a JSON header, then the raw little-endian
bytes.  The layout is the one the `safetensors` package writes (compact
JSON, __metadata__ first, keys dtype/shape/data_offsets, the header padded
with spaces to a multiple of 8), so the C writer can be compared with it
byte for byte (ok_meta.safetensors).

Element i (row-major) of every valid tensor is (i - 3) * 0.5 for floats,
i - 3 for signed and i for unsigned integers, i % 2 for BOOL.  The bad_*
files are hostile: each breaks one rule the reader must enforce.

    /usr/bin/python3 tests/unit/data/make_safetensors_data.py \
        tests/unit/data/safetensors
"""

import json
import os
import struct
import sys

import numpy as np

DT = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4',
      'I16': '<i2', 'I8': 'i1', 'U8': 'u1', 'BOOL': '?'}


def pattern(dt, shape):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    if dt == 'BF16':
        f = ((i - 3) * 0.5).astype('<f4')
        return (f.view('<u4') >> 16).astype('<u2').tobytes()
    d = np.dtype(DT[dt])
    if d.kind == 'b':
        v = (i % 2).astype(d)
    elif d.kind == 'u':
        v = i.astype(d)
    elif d.kind == 'f':
        v = ((i - 3) * 0.5).astype(d)
    else:
        v = (i - 3).astype(d)
    return v.tobytes()


def pack(tensors, meta=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes) in data order."""
    hdr = {}
    if meta is not None:
        hdr['__metadata__'] = meta
    data = b''
    for name, dt, shape, raw in tensors:
        hdr[name] = {'dtype': dt, 'shape': list(shape),
                     'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(',', ':')).encode()
    if pad:
        h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + data


def raw(hdr_bytes, data=b'', hlen=None):
    if hlen is None:
        hlen = len(hdr_bytes)
    return struct.pack('<Q', hlen) + hdr_bytes + data


def t(name, dt, shape):
    return (name, dt, shape, pattern(dt, shape))


def main(out):
    os.makedirs(out, exist_ok=True)
    files = {
        'ok_f32': pack([t('w', 'F32', (2, 3))]),
        'ok_meta': pack([t('base_model.model.fc1.lora_A.weight', 'F32',
                           (4, 8)),
                         t('base_model.model.fc1.lora_B.weight', 'F32',
                           (16, 4))],
                        meta={'format': 'pt'}),
        'ok_types': pack([t('a', 'F64', (3,)), t('b', 'F16', (2, 2)),
                          t('c', 'BF16', (5,)), t('d', 'I64', (2,)),
                          t('e', 'I32', (1, 1, 3)), t('f', 'U8', (4,)),
                          t('g', 'BOOL', (3,)), t('h', 'I8', (2,))]),
        'ok_scalar_empty': pack([t('empty', 'F32', (0, 4)),
                                 t('s', 'F32', ()),
                                 t('z', 'I16', (0,))]),
        # Offsets out of file order: the reader sorts by offset.
        'ok_unordered': raw(json.dumps({
            'second': {'dtype': 'F32', 'shape': [2],
                       'data_offsets': [8, 16]},
            'first': {'dtype': 'F32', 'shape': [2],
                      'data_offsets': [0, 8]}}).encode(),
            pattern('F32', (2,)) + pattern('F32', (2,))),
        'ok_no_tensors': pack([], meta={'k': 'v'}),
    }
    one = {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}
    d8 = pattern('F32', (2,))

    def bad(**entry):
        e = dict(one)
        e.update(entry)
        return raw(json.dumps({'x': e}).encode(), d8)

    files.update({
        'bad_short': b'\x05\x00\x00',
        'bad_hlen_past_end': raw(b'{}', b'', hlen=1000),
        'bad_hlen_huge': raw(b'{}', b'', hlen=1 << 63),
        'bad_hlen_zero': raw(b'', b'', hlen=0),
        'bad_not_json': raw(b'{"x": ', d8),
        'bad_not_object': raw(b'[1, 2]  '),
        'bad_dup': raw(b'{"x":{"dtype":"F32","shape":[2],"data_offsets":'
                       b'[0,8]},"x":{"dtype":"F32","shape":[2],'
                       b'"data_offsets":[0,8]}}', d8),
        'bad_dtype': bad(dtype='F8_E4M3X'),
        'bad_dtype_type': bad(dtype=7),
        'bad_neg_dim': bad(shape=[-2]),
        'bad_float_dim': bad(shape=[2.0]),
        'bad_too_many_dims': bad(shape=[1] * 9, data_offsets=[0, 4]),
        'bad_size': bad(shape=[3]),
        'bad_overflow': bad(shape=[1 << 62, 1 << 62]),
        'bad_end_past_data': bad(data_offsets=[0, 800]),
        'bad_begin_after_end': bad(data_offsets=[8, 0]),
        'bad_neg_offset': bad(data_offsets=[-8, 0]),
        'bad_offsets_len': bad(data_offsets=[0]),
        'bad_extra_key': bad(extra=1),
        'bad_missing_key': raw(json.dumps({'x': {
            'dtype': 'F32', 'shape': [2]}}).encode(), d8),
        'bad_trailing': raw(json.dumps({'x': one}).encode(), d8 + b'junk'),
        'bad_overlap': raw(json.dumps({
            'x': one, 'y': {'dtype': 'F32', 'shape': [2],
                            'data_offsets': [4, 12]}}).encode(),
            d8 + d8[:4]),
        'bad_hole': raw(json.dumps({
            'x': one, 'y': {'dtype': 'F32', 'shape': [2],
                            'data_offsets': [12, 20]}}).encode(),
            d8 * 2 + b'\0' * 4),
        'bad_meta': raw(json.dumps({'__metadata__': {'a': 1}}).encode()),
        'bad_entry_type': raw(b'{"x": 3}'),
    })
    for name, b in files.items():
        with open(os.path.join(out, name + '.safetensors'), 'wb') as f:
            f.write(b)


if __name__ == '__main__':
    main(sys.argv[1])
