/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Numbers on the KServe wire, reading: the scanner that turns JSON number
 * text into float32/float64/integers (kserve_fmt.c writes them).
 *
 * Reading.  A token is first checked against the JSON grammar by hand
 * (strtod accepts hex, "inf", leading '+' and spaces, JSON does not), and
 * its digits are gathered into a uint64 w with a power-of-ten exponent q
 * (eight at a time where they run that long; more than 19 significant
 * digits overflow it and go the slow way).  The
 * value w * 10^q is then rounded to the target type by the first of:
 *
 *   1. Clinger's fast path: when w <= 2^53 and |q| <= 22, w and 10^|q|
 *      are exact doubles, so one IEEE multiply or divide gives the
 *      correctly rounded double.  (Exponents a little over 22 still work
 *      when w can absorb the excess and stay under 2^53.)  Short numbers,
 *      the shortest float32 text included, end here.
 *
 *   2. Eisel-Lemire, for up to 19 digits and any exponent: the 17-digit
 *      text of Python's json.dumps ends here.  With w normalised to
 *      w' = w << lz in [2^63, 2^64) and 5^q = P * 2^b with P in [2^127,
 *      2^128), the value is z * 2^(b + q - lz) where z = w' * P.  A table
 *      (kserve_pow5.h, made by gen_pow5.py with exact integers) holds
 *      T = floor(P) for q in [-342, 308]; the 192-bit product Z = w' * T
 *      is exact, and since 0 <= P - T < 1, z lies in [Z, Z + 2^64) (Z = z
 *      when 0 <= q <= 55, where T = P).  The result's significand plus one
 *      rounding bit is the top bits of z down to bit sh (>= 128 for both
 *      types), which Z gives whenever no multiple of 2^sh lies in
 *      (Z, Z + 2^64): that fails only when Z's bits 64..sh-1 are all ones,
 *      which happens for about 2^-73 of random inputs, and for decimals
 *      that are exact binary fractions with q < 0: those (5^-q divides w)
 *      are rounded exactly as (w / 5^-q) * 2^q instead.  Only the random
 *      rest goes the slow way.  Ties to even can only happen when z is
 *      exact, so they are settled on Z; with an inexact z, the bits below
 *      the rounding bit are never all zero.
 *      Subnormals are the same computation with a larger sh (the ulp is
 *      fixed), and the rounding carry into the exponent field and into
 *      infinity fall out of adding the rounded significand to the biased
 *      exponent.  float32 runs the same code with its own significand
 *      width, straight from the decimal: no double rounding.
 *
 *   3. strtod/strtof on a NUL-terminated copy of the token: more than 19
 *      digits, and the ambiguous cases above.  Exponents outside the
 *      table's range give zero or infinity without it.
 *
 * The results equal strtod's and strtof's for every input; the unit tests
 * compare millions of random strings of every kind against them.  This
 * relies on the C locale's decimal point, which the daemon never changes.
 *
 * float32 from Clinger's double: rounding the exact value to double and
 * then to float ("double rounding") differs from rounding it to float
 * once only when the double lands exactly halfway between two floats --
 * its 29 low significand bits are 1000...0.  (Every float tie is a
 * double, and rounding to double keeps the value on the same side of
 * each.)  Those cases (about 1 in 2^29 random inputs) go to Eisel-Lemire
 * for float32 instead, so every result equals strtof's.
 *
 * THREADS: pure functions; [any].
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/internal.h"
#include "server/kserve/kserve_pow5.h"

const double ss__kserve_pow10_tab[SS__KNUM_POW10_MAX - SS__KNUM_POW10_MIN + 1] = {
    1e-53, 1e-52, 1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46,
    1e-45, 1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39, 1e-38,
    1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32, 1e-31, 1e-30,
    1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22,
    1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14,
    1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6,
    1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2,
    1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
    1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26,
    1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34,
    1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42,
    1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50,
    1e51, 1e52, 1e53,
};

/* x * 10^k with one rounding where 10^|k| is exact. */
static inline double
scale10(double x, int k)
{
    if (k >= 0)
        return x * ss__kserve_p10(k);
    if (k >= -22)
        return x / ss__kserve_p10(-k);
    return x * ss__kserve_p10(k);
}

static inline int
isdig(char c)
{
    return (unsigned char)(c - '0') < 10;
}

/* The eight bytes at p as a number when they are all ASCII digits
 * (SWAR: the 17-digit numbers clients send are mostly two such runs).
 * Every byte is a digit iff its high nibble is 3 and adding 6 leaves it 3
 * (no byte can carry into the next one once all high nibbles are 3).
 * Then pairs, quads and the whole are combined in place: 10 * b[i] +
 * b[i+1] in each byte, 100 * pair + pair in each 16-bit lane, 10^4 * quad
 * + quad; no lane overflows into the next (99, 9999, 99999999). */
static inline bool
eight_digits(const char *p, uint64_t *out)
{
    const uint64_t hi = 0xf0f0f0f0f0f0f0f0u, zeros = 0x3030303030303030u;
    uint64_t v;

    memcpy(&v, p, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);           /* the first digit in byte 0 */
#endif
    if ((v & hi) != zeros || ((v + 0x0606060606060606u) & hi) != zeros)
        return false;
    v -= zeros;
    v = v * 10 + (v >> 8);
    v = (v & 0x00ff00ff00ff00ffu) * 100 + ((v >> 16) & 0x00ff00ff00ff00ffu);
    v = (v & 0xffffu) * 10000 + ((v >> 32) & 0xffffu);
    *out = v;
    return true;
}

/* Accumulates the digits at p into *m (wrapping past 19 digits, which the
 * caller counts); returns the end of the run. */
static inline const char *
digits(const char *p, const char *end, uint64_t *m)
{
    uint64_t v = *m, e8;

    while (end - p >= 8 && eight_digits(p, &e8)) {
        v = v * 100000000 + e8;
        p += 8;
    }
    while (p < end && isdig(*p))
        v = v * 10 + (uint64_t)(*p++ - '0');
    *m = v;
    return p;
}

typedef struct decimal {
    uint64_t mant;      /* the significant digits */
    int64_t exp10;      /* value = mant * 10^exp10, unless many */
    bool neg;
    bool many;          /* over 19 digits: mant is meaningless */
} decimal_t;

/* Checks the JSON number grammar from p; returns the end of the token, or
 * NULL.  Digits accumulate without checks; past 19 significant digits the
 * significand has wrapped and "many" sends the caller to strtod.
 * Forced inline, as clinger and fast_f32: gcc -O2 kept them as calls, and
 * the decimal_t round trip through memory cost 15% of a 784-float decode
 * (json17 body: 20.6 -> 17.4 us; shortest: 15.6 -> 13.4 us). */
static inline __attribute__((always_inline)) const char *
scan_decimal(const char *p, const char *end, decimal_t *d)
{
    uint64_t m = 0;
    int64_t e = 0, ni = 0, nf = 0, z = 0;

    d->neg = false;
    if (p < end && *p == '-') {
        d->neg = true;
        p++;
    }
    if (p >= end || !isdig(*p))
        return NULL;
    if (*p == '0') {
        p++;                /* JSON allows no other leading zero */
    } else {
        const char *s0 = p;

        p = digits(p, end, &m);
        ni = p - s0;
    }
    if (p < end && *p == '.') {
        const char *f0 = ++p;

        if (ni == 0) {
            while (p < end && *p == '0')
                p++;
            z = p - f0;     /* zeros before the first significant digit */
        }
        p = digits(p, end, &m);
        nf = p - f0;
        if (nf == 0)
            return NULL;
        e = -nf;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        bool eneg = false;
        int64_t x = 0;

        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || !isdig(*p))
            return NULL;
        for (; p < end && isdig(*p); p++) {
            if (x < 100000000)
                x = x * 10 + (*p - '0');
        }
        e += eneg ? -x : x;
    }
    d->mant = m;
    d->exp10 = e;
    d->many = ni + nf - z > 19;
    return p;
}

/* Clinger: true and *out the correctly rounded double when w and 10^|q|
 * are exact doubles (w != 0). */
static inline __attribute__((always_inline)) bool
clinger(const decimal_t *d, double *out)
{
    double v;

    if (d->mant > ((uint64_t)1 << 53))
        return false;
    if (d->exp10 >= -22 && d->exp10 <= 22) {
        v = scale10((double)(int64_t)d->mant, (int)d->exp10);
    } else if (d->exp10 > 22 && d->exp10 <= 22 + 16) {
        uint64_t m = d->mant;

        for (int64_t i = 22; i < d->exp10; i++) {
            if (m > ((uint64_t)1 << 53) / 10)
                return false;
            m *= 10;
        }
        v = (double)(int64_t)m * 1e22;
    } else {
        return false;
    }
    *out = d->neg ? -v : v;
    return true;
}

/* An IEEE binary format: significand bits after the point, exponent bias,
 * and the decimal exponents past which any 1..19 digit w * 10^q is zero
 * (q < qmin: below half the least subnormal) or infinite (q > qmax). */
typedef struct binfmt {
    int mbits;
    int bias;
    int qmin, qmax;
} binfmt_t;

static const binfmt_t fmt64 = { 52, 1023, -342, 308 };
static const binfmt_t fmt32 = { 23, 127, -64, 38 };

/* The high and low halves of a * b. */
static inline void
mul64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 p = (unsigned __int128)a * b;

    *hi = (uint64_t)(p >> 64);
    *lo = (uint64_t)p;
#else
    uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;

    *lo = (mid << 32) | (uint32_t)ll;
    *hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
#endif
}

/* Eisel-Lemire (see the top of the file): the bits of the binary number
 * of format f nearest w * 10^q * 2^e2, sign excluded, infinity when it
 * overflows.  w != 0; e2 is 0, or in [-27, -1] with q = 0 (then nothing
 * overflows or underflows).  1 and *bits set, or 0 when the product
 * cannot decide and the caller must use strtod/strtof. */
static int
eisel_lemire(uint64_t w, int64_t q, int e2, const binfmt_t *f,
             uint64_t *bits)
{
    const uint64_t inf = (uint64_t)(2 * f->bias + 1) << f->mbits;
    const struct pow5 *t;
    uint64_t z2, z1, z0, h, l, r, a, mask;
    int lz, top, eb, off, sh;
    bool exact;

    if (q < f->qmin) {
        *bits = 0;
        return 1;
    }
    if (q > f->qmax) {
        *bits = inf;
        return 1;
    }
    t = &pow5_tab[q - POW5_QMIN];
    lz = __builtin_clzll(w);
    w <<= lz;
    /* Z = w * (t->hi * 2^64 + t->lo), 192 bits exact, as z2:z1:z0. */
    mul64(w, t->lo, &h, &z0);
    mul64(w, t->hi, &z2, &l);
    z1 = l + h;
    z2 += z1 < l;
    /* Z >= 2^190: its top bit is bit 191 or 190.  If z crossed into 2^191
     * while Z did not, Z's bits 64..190 are all ones and the check below
     * refuses it. */
    top = 190 + (int)(z2 >> 63);
    off = t->b + (int)q + e2 - lz;      /* value = z * 2^off */
    eb = top + off + f->bias;           /* biased exponent, if normal */
    if (eb >= 2 * f->bias + 1) {
        *bits = inf;
        return 1;
    }
    /* sh: the bit of z that is the rounding bit; the ulp is bit sh + 1. */
    if (eb >= 1)
        sh = top - f->mbits - 1;
    else
        sh = 1 - f->bias - f->mbits - off - 1;
    if (sh >= 192) {                    /* z < 2^192: under half the ulp */
        *bits = 0;
        return 1;
    }
    /* sh >= 128 here (normal: 190 - 53 for double, 190 - 24 for float). */
    mask = ((uint64_t)1 << (sh - 128)) - 1;
    exact = q >= 0 && q <= 55;
    if (!exact && (z2 & mask) == mask && z1 == UINT64_MAX)
        return 0;
    r = z2 >> (sh - 128);
    a = r >> 1;
    /* Round half to even; an inexact z is never on the tie itself. */
    if ((r & 1) && (!exact || (z2 & mask) != 0 || z1 != 0 || z0 != 0 ||
                    (a & 1)))
        a++;
    if (eb >= 1)
        a += (uint64_t)(eb - 1) << f->mbits;   /* a holds the hidden bit */
    *bits = a >= inf ? inf : a;
    return 1;
}

/* Eisel-Lemire for w * 10^q, and for the one kind of input it cannot
 * decide often: with -27 <= q < 0 and 5^-q dividing w, the decimal is the
 * binary fraction (w / 5^-q) * 2^q, maybe a tie, which the product
 * approaches from below (e.g. 8095834033131405.5, 20% of 17-digit
 * numbers with one decimal); rounding that exact value decides. */
static int
eisel_lemire_dec(uint64_t w, int64_t q, const binfmt_t *f, uint64_t *bits)
{
    uint64_t p5 = 1;

    if (eisel_lemire(w, q, 0, f, bits))
        return 1;
    if (q >= 0 || q < -27)
        return 0;
    for (int64_t i = q; i < 0; i++)
        p5 *= 5;
    if (w % p5 != 0)
        return 0;
    return eisel_lemire(w / p5, 0, (int)q, f, bits);
}

/* The fast paths for a double: true and *out, or false for strtod. */
static bool
fast_f64(const decimal_t *d, double *out)
{
    uint64_t b;

    if (d->many)
        return false;
    if (d->mant == 0) {
        *out = d->neg ? -0.0 : 0.0;
        return true;
    }
    if (clinger(d, out))
        return true;
    if (!eisel_lemire_dec(d->mant, d->exp10, &fmt64, &b))
        return false;
    b |= (uint64_t)d->neg << 63;
    memcpy(out, &b, sizeof(*out));
    return true;
}

/* True when (float)v, v from Clinger, is the correctly rounded float of
 * the decimal: v is not exactly halfway between two floats. */
static inline bool
no_double_rounding(double v)
{
    uint64_t b;

    memcpy(&b, &v, sizeof(b));
    return (b & 0x1fffffffu) != 0x10000000u;
}

/* The fast paths for a float: true and *out, or false for strtof. */
static inline __attribute__((always_inline)) bool
fast_f32(const decimal_t *d, float *out)
{
    uint64_t b;
    uint32_t b32;
    double v;

    if (d->many)
        return false;
    if (d->mant == 0) {
        *out = d->neg ? -0.0f : 0.0f;
        return true;
    }
    if (clinger(d, &v) && no_double_rounding(v)) {
        *out = (float)v;
        return true;
    }
    if (!eisel_lemire_dec(d->mant, d->exp10, &fmt32, &b))
        return false;
    b32 = (uint32_t)b | (uint32_t)d->neg << 31;
    memcpy(out, &b32, sizeof(*out));
    return true;
}

bool
ss__kserve_fast_f64(const char *p, const char *end, double *out)
{
    decimal_t d;

    if (scan_decimal(p, end, &d) == NULL)
        return false;
    return fast_f64(&d, out);
}

bool
ss__kserve_fast_f32(const char *p, const char *end, float *out)
{
    decimal_t d;

    if (scan_decimal(p, end, &d) == NULL)
        return false;
    return fast_f32(&d, out);
}

/* strtod/strtof on a copy of [p, q), which holds a valid JSON number.
 * Returns 0, or SS_ENOMEM. */
static int
slow_parse(const char *p, const char *q, bool single, double *dout,
           float *fout)
{
    char small[128];
    char *s = small;
    size_t n = (size_t)(q - p);

    if (n >= sizeof(small) && (s = ss_malloc(n + 1)) == NULL)
        return SS_ENOMEM;
    memcpy(s, p, n);
    s[n] = '\0';
    if (single)
        *fout = strtof(s, NULL);
    else
        *dout = strtod(s, NULL);
    if (s != small)
        ss_free(s);
    return 0;
}

/* NaN, Infinity, -Infinity: 1 and *out set, or 0. */
static int
special(const char *p, const char *end, double *out, const char **next)
{
    size_t n = (size_t)(end - p);

    if (n >= 3 && memcmp(p, "NaN", 3) == 0) {
        *out = NAN;
        *next = p + 3;
        return 1;
    }
    if (n >= 8 && memcmp(p, "Infinity", 8) == 0) {
        *out = INFINITY;
        *next = p + 8;
        return 1;
    }
    if (n >= 9 && memcmp(p, "-Infinity", 9) == 0) {
        *out = -INFINITY;
        *next = p + 9;
        return 1;
    }
    return 0;
}

int
ss__kserve_parse_f64(const char *p, const char *end, double *out,
                     const char **next)
{
    decimal_t d;
    const char *q;
    double v;

    *next = p;
    if ((q = scan_decimal(p, end, &d)) == NULL)
        return special(p, end, out, next) ? 0 : SS__KNUM_SYNTAX;
    if (!fast_f64(&d, &v) && slow_parse(p, q, false, &v, NULL) < 0)
        return SS_ENOMEM;
    if (isinf(v))
        return SS__KNUM_RANGE;
    *out = v;
    *next = q;
    return 0;
}

int
ss__kserve_parse_f32(const char *p, const char *end, float *out,
                     const char **next)
{
    decimal_t d;
    const char *q;
    double v;
    float f;

    *next = p;
    if ((q = scan_decimal(p, end, &d)) == NULL) {
        if (!special(p, end, &v, next))
            return SS__KNUM_SYNTAX;
        *out = (float)v;
        return 0;
    }
    if (!fast_f32(&d, &f) && slow_parse(p, q, true, NULL, &f) < 0)
        return SS_ENOMEM;
    if (isinf(f))
        return SS__KNUM_RANGE;
    *out = f;
    *next = q;
    return 0;
}

int
ss__kserve_parse_int(const char *p, const char *end, bool *neg,
                     uint64_t *mag, const char **next)
{
    uint64_t m = 0;
    bool over = false;

    *next = p;
    *neg = false;
    if (p < end && *p == '-') {
        *neg = true;
        p++;
    }
    if (p >= end || !isdig(*p))
        return SS__KNUM_SYNTAX;
    if (*p == '0') {
        p++;
    } else {
        for (; p < end && isdig(*p); p++) {
            unsigned dg = (unsigned)(*p - '0');

            if (m > (UINT64_MAX - dg) / 10)
                over = true;
            else
                m = m * 10 + dg;
        }
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E'))
        return SS__KNUM_SYNTAX;
    if (over)
        return SS__KNUM_RANGE;
    *mag = m;
    *next = p;
    return 0;
}
