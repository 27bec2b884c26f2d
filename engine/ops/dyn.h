/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_OPS_DYN_H
#define SS_ENGINE_OPS_DYN_H

/*
 * Element access by run-time dtype, for the reference kernels that take
 * many types (the node suite's Mod on int8..uint64 and float16, Sign,
 * ArgMax, GatherElements, ...): read any element as double or int64,
 * write one back.  Correct first: a switch per element costs far less
 * than these ops' share of any real model.  float16 and bfloat16 convert
 * exactly to float and back with round-to-nearest-even.
 *
 * THREADS: [any]; no state.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/ops/ops.h"

static inline float
ss__dyn_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff, bits;
    float f;

    if (e == 0x1f) {
        bits = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (m << 13);
    } else {
        f = ldexpf((float)m, -24);      /* zero and subnormals */
        return sign ? -f : f;
    }
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static inline uint16_t
ss__dyn_f2h(float f)
{
    uint32_t x, sign, mant;
    int32_t e;

    memcpy(&x, &f, sizeof(x));
    sign = (x >> 16) & 0x8000;
    e = (int32_t)((x >> 23) & 0xff);
    mant = x & 0x7fffff;
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    e = e - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        uint32_t full, shift, half, r;

        if (e < -10)
            return (uint16_t)sign;
        full = mant | 0x800000;
        shift = (uint32_t)(14 - e);
        half = 1u << (shift - 1);
        r = full >> shift;
        if ((full & ((1u << shift) - 1)) > half
            || ((full & ((1u << shift) - 1)) == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    {
        uint32_t r = ((uint32_t)e << 10) | (mant >> 13);
        uint32_t rest = mant & 0x1fff;

        if (rest > 0x1000 || (rest == 0x1000 && (r & 1)))
            r++;                /* may carry into the exponent: right */
        return (uint16_t)(sign | r);
    }
}

static inline double
ss__dyn_get(const void *p, ss_dtype_t t, int64_t i)
{
    switch (t) {
    case SS_DTYPE_F16:
        return ss__dyn_h2f(((const uint16_t *)p)[i]);
    case SS_DTYPE_BF16: {
        uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;

        memcpy(&f, &bits, sizeof(f));
        return f;
    }
    case SS_DTYPE_U64:
        return (double)((const uint64_t *)p)[i];
    default:
        return ss__ops_get_f64(p, t, i);
    }
}

static inline int64_t
ss__dyn_geti(const void *p, ss_dtype_t t, int64_t i)
{
    if (t == SS_DTYPE_F16 || t == SS_DTYPE_BF16) {
        double v = ss__dyn_get(p, t, i);

        return v == v ? (int64_t)v : 0;     /* |v| < 2^63 for halfs */
    }
    return ss__ops_get_i64(p, t, i);
}

/* Stores v, converted as a C cast would (integers: saturated). */
static inline void
ss__dyn_set(void *p, ss_dtype_t t, int64_t i, double v)
{
    int64_t iv;

    switch (t) {
    case SS_DTYPE_F32: ((float *)p)[i] = (float)v; return;
    case SS_DTYPE_F64: ((double *)p)[i] = v; return;
    case SS_DTYPE_F16: ((uint16_t *)p)[i] = ss__dyn_f2h((float)v); return;
    case SS_DTYPE_BF16: {
        float f = (float)v;
        uint32_t bits;

        memcpy(&bits, &f, sizeof(bits));
        if ((bits & 0x7fffffff) > 0x7f800000)
            bits |= 0x400000;
        else
            bits += 0x7fff + ((bits >> 16) & 1);
        ((uint16_t *)p)[i] = (uint16_t)(bits >> 16);
        return;
    }
    case SS_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0; return;
    case SS_DTYPE_U64:
        ((uint64_t *)p)[i] = !(v > 0) ? 0 : v >= 1.8446744073709552e19
                             ? UINT64_MAX : (uint64_t)v;
        return;
    default:
        break;
    }
    iv = !(v == v) ? 0 : v >= 9.2233720368547758e18 ? INT64_MAX
         : v <= -9.2233720368547758e18 ? INT64_MIN : (int64_t)v;
    switch (t) {
    case SS_DTYPE_I64: ((int64_t *)p)[i] = iv; break;
    case SS_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)iv; break;
    case SS_DTYPE_I16: ((int16_t *)p)[i] = (int16_t)iv; break;
    case SS_DTYPE_I8: ((int8_t *)p)[i] = (int8_t)iv; break;
    case SS_DTYPE_U8: ((uint8_t *)p)[i] = (uint8_t)iv; break;
    case SS_DTYPE_U16: ((uint16_t *)p)[i] = (uint16_t)iv; break;
    case SS_DTYPE_U32: ((uint32_t *)p)[i] = (uint32_t)iv; break;
    default: break;
    }
}

/* Stores an integer exactly (wrapping to the type's width). */
static inline void
ss__dyn_seti(void *p, ss_dtype_t t, int64_t i, int64_t v)
{
    switch (t) {
    case SS_DTYPE_I64: ((int64_t *)p)[i] = v; break;
    case SS_DTYPE_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    case SS_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case SS_DTYPE_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case SS_DTYPE_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case SS_DTYPE_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case SS_DTYPE_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case SS_DTYPE_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case SS_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: ss__dyn_set(p, t, i, (double)v); break;
    }
}

static inline bool
ss__dyn_is_float(ss_dtype_t t)
{
    return t == SS_DTYPE_F32 || t == SS_DTYPE_F64 || t == SS_DTYPE_F16
           || t == SS_DTYPE_BF16;
}

/* Copies element si of src to element di of dst (same dtype). */
static inline void
ss__dyn_copy(void *dst, int64_t di, const void *src, int64_t si, size_t es)
{
    memcpy((char *)dst + di * (int64_t)es,
           (const char *)src + si * (int64_t)es, es);
}

#endif
