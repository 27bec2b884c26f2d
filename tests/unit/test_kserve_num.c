/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KServe codec's numbers: shortest float32 text against a brute-force
 * "%.{1..9}g" reference; the float32 and float64 readers and their fast
 * paths (Clinger, Eisel-Lemire) against strtof/strtod, bit for bit, on a
 * few million strings: random floats written as %.9g, %.17g, Python's
 * json.dumps and our shortest text, random decimals of 1-25 digits across
 * both types' exponent ranges, strings at and next to float and double
 * ties (subnormals, the underflow and overflow thresholds), every power of
 * ten, and known traps; that the fast paths leave nothing of at most 19
 * digits to libc; that every float the encoder writes reads back to the
 * same bits; integer ranges, and the NaN/Infinity tokens.
 *
 * SS_TEST_NUM_SCALE=P runs P% of the random cases (default 100, 25 in a
 * sanitizer build; 100% is about 3 million strings).
 */

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/kserve/internal.h"
#include "tests/tap.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float
bits_float(uint32_t b)
{
    float f;

    memcpy(&f, &b, sizeof(f));
    return f;
}

static uint32_t
float_bits(float f)
{
    uint32_t b;

    memcpy(&b, &f, sizeof(b));
    return b;
}

/* Significant digits in a decimal string. */
static int
sig_digits(const char *s)
{
    int n = 0, lead = 1, zeros = 0;

    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s < '0' || *s > '9')
            continue;
        if (lead && *s == '0')
            continue;
        lead = 0;
        if (*s == '0') {
            zeros++;
        } else {
            n += zeros + 1;
            zeros = 0;
        }
    }
    return n;
}

/* The brute-force reference: the fewest %.{p}g digits that read back. */
static int
shortest_ref(float f)
{
    char s[64];

    for (int p = 1; p <= 9; p++) {
        snprintf(s, sizeof(s), "%.*g", p, (double)f);
        if (strtof(s, NULL) == f)
            return p;
    }
    return 99;
}

/* 0 when out is f's shortest round-tripping text, else a reason. */
static const char *
check_format(float f, char *out)
{
    const char *next;
    float back;
    int n = ss_kserve_format_f32(f, out);

    if (n <= 0 || n > 16)
        return "length out of 1..16";
    out[n] = '\0';
    if (ss__kserve_parse_f32(out, out + n, &back, &next) != 0 ||
        next != out + n)
        return "not a JSON number";
    if (float_bits(strtof(out, NULL)) != float_bits(f))
        return "does not read back with strtof";
    if (float_bits(back) != float_bits(f))
        return "does not read back with our reader";
    if (sig_digits(out) > shortest_ref(f))
        return "longer than the shortest %.{p}g";
    return NULL;
}

static void
test_format_f32(void)
{
    static const float fixed[] = {
        0.1f, 0.2f, 0.3f, 1.0f, -1.0f, 0.5f, 2.5f, 100.0f, 1000.0f,
        123456.0f, 16777216.0f, 16777217.0f, 3.14159265f, 1e-5f, 1e-7f,
        1e10f, 1e38f, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, 1.4e-45f,
        FLT_EPSILON, 0.0f, -0.0f, 9.999999e-5f, 33554432.0f, 8388608.5f,
        1.17549421e-38f, 0.3333333f, 2.0f / 3.0f,
    };
    static const struct { float f; const char *s; } exact[] = {
        { 0.1f, "0.1" }, { -2.5f, "-2.5" }, { 100.0f, "100" },
        { 1000.0f, "1e3" }, { 1e-5f, "1e-5" }, { 0.001f, "1e-3" },
        { 0.01f, "0.01" },
        { 0.0f, "0" }, { -0.0f, "-0" }, { FLT_MAX, "3.4028235e38" },
        { 1.4e-45f, "1e-45" }, { 16777216.0f, "16777216" },
        { 0.3f, "0.3" }, { 123.456f, "123.456" },
    };
    char out[40], bad[200] = "";
    const char *why;
    long n_bad = 0, n = 0;

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        why = check_format(fixed[i], out);
        ok(why == NULL, "format %.9g -> %s%s%s", (double)fixed[i], out,
           why ? ": " : "", why ? why : "");
    }
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        out[ss_kserve_format_f32(exact[i].f, out)] = '\0';
        is_str(out, exact[i].s, "format %.9g", (double)exact[i].f);
    }
    out[ss_kserve_format_f32(NAN, out)] = '\0';
    is_str(out, "NaN", "NaN token");
    out[ss_kserve_format_f32(INFINITY, out)] = '\0';
    is_str(out, "Infinity", "Infinity token");
    out[ss_kserve_format_f32(-INFINITY, out)] = '\0';
    is_str(out, "-Infinity", "-Infinity token");

    /* Random bit patterns: every exponent, subnormals included. */
    for (int i = 0; i < 120000; i++, n++) {
        float f = bits_float((uint32_t)rnd());

        if (isnan(f) || isinf(f))
            continue;
        if ((why = check_format(f, out)) != NULL && n_bad++ == 0)
            snprintf(bad, sizeof(bad), "%a -> %s: %s", (double)f, out, why);
    }
    /* Short decimals, the values a model's outputs are often near. */
    for (int i = 0; i < 60000; i++, n++) {
        float f = (float)((double)(rnd() % 200001) / 1000.0 - 100.0);

        if ((why = check_format(f, out)) != NULL && n_bad++ == 0)
            snprintf(bad, sizeof(bad), "%a -> %s: %s", (double)f, out, why);
    }
    /* Neighbours of powers of two and ten, where intervals are lopsided. */
    for (int e = -149; e <= 127; e++) {
        float f = ldexpf(1.0f, e);
        float g[3] = { f, nextafterf(f, 0.0f), nextafterf(f, INFINITY) };

        for (int k = 0; k < 3; k++, n++)
            if (!isinf(g[k]) && (why = check_format(g[k], out)) != NULL &&
                n_bad++ == 0)
                snprintf(bad, sizeof(bad), "%a -> %s: %s", (double)g[k],
                         out, why);
    }
    for (int e = -45; e <= 38; e++) {
        float f = strtof((snprintf(out, sizeof(out), "1e%d", e), out), NULL);
        float g[3] = { f, nextafterf(f, 0.0f), nextafterf(f, INFINITY) };

        for (int k = 0; k < 3; k++, n++)
            if (f != 0 && !isinf(g[k]) &&
                (why = check_format(g[k], out)) != NULL && n_bad++ == 0)
                snprintf(bad, sizeof(bad), "%a -> %s: %s", (double)g[k],
                         out, why);
    }
    ok(n_bad == 0, "%ld floats: shortest text, reads back exactly (%ld bad)",
       n, n_bad);
    if (n_bad)
        tap_diag("first: %s", bad);
}

static void
test_clinger(void)
{
    char s[96];
    long n_fast = 0, n_bad = 0, n_bad32 = 0, n = 200000;
    char bad[128] = "";

    for (long i = 0; i < n; i++) {
        int nd = 1 + (int)(rnd() % 17), o = 0;
        int point = (int)(rnd() % (unsigned)(nd + 1));
        int ex = (int)(rnd() % 51) - 25;    /* the power of ten of digits */
        double want, got;
        const char *next;
        char dig[20];

        for (int d = 0; d < nd; d++)
            dig[d] = (char)(d == 0 ? '1' + rnd() % 9 : '0' + rnd() % 10);
        if (rnd() & 1)
            s[o++] = '-';
        if (point == 0) {
            memcpy(s + o, "0.", 2);
            o += 2;
        } else {
            memcpy(s + o, dig, (size_t)point);
            o += point;
            if (point < nd)
                s[o++] = '.';
        }
        memcpy(s + o, dig + point, (size_t)(nd - point));
        o += nd - point;
        o += snprintf(s + o, sizeof(s) - (size_t)o, "e%d", ex + (nd - point));
        want = strtod(s, NULL);
        if (ss__kserve_fast_f64(s, s + o, &got)) {
            n_fast++;
            if (memcmp(&got, &want, sizeof(got)) != 0 && n_bad++ == 0)
                snprintf(bad, sizeof(bad), "fast %s: %.17g vs %.17g", s, got,
                         want);
        }
        if (ss__kserve_parse_f64(s, s + o, &got, &next) != 0 ||
            next != s + o || memcmp(&got, &want, sizeof(got)) != 0) {
            if (n_bad++ == 0)
                snprintf(bad, sizeof(bad), "f64 %s", s);
        }
        {
            float g32 = 0, w32 = strtof(s, NULL);

            int rc32 = ss__kserve_parse_f32(s, s + o, &g32, &next);

            /* Finite text past float's range is refused, not inf. */
            if (isinf(w32) ? rc32 != SS__KNUM_RANGE :
                rc32 != 0 || float_bits(g32) != float_bits(w32))
                if (n_bad32++ == 0)
                    snprintf(bad, sizeof(bad), "f32 %s: %a vs %a", s,
                             (double)g32, (double)w32);
        }
    }
    ok(n_bad == 0, "fast path and parse_f64 equal strtod on %ld strings", n);
    ok(n_bad32 == 0, "parse_f32 equals strtof on the same strings");
    ok(n_fast == n, "the fast paths took %ld of %ld", n_fast, n);
    tap_diag("fast path: %ld of %ld random decimal strings", n_fast, n);
    if (n_bad || n_bad32)
        tap_diag("first: %s", bad);
}

/* Decimal strings on or next to float ties, truncated to 17 digits, where
 * going through double would round twice. */
static void
test_double_rounding(void)
{
    long n_bad = 0, n = 0;
    char s[128], bad[160] = "";

    for (int i = 0; i < 20000; i++) {
        float f = bits_float(0x3f800000u | (uint32_t)(rnd() & 0x7fffff));
        double mid = ((double)f + (double)nextafterf(f, 2.0f)) / 2;

        for (int prec = 8; prec <= 20; prec += 3) {
            const char *next;
            float got;

            snprintf(s, sizeof(s), "%.*f", prec, mid);
            n++;
            if (ss__kserve_parse_f32(s, s + strlen(s), &got, &next) != 0 ||
                float_bits(got) != float_bits(strtof(s, NULL)))
                if (n_bad++ == 0)
                    snprintf(bad, sizeof(bad), "%s", s);
        }
        snprintf(s, sizeof(s), "%.30f", mid);       /* the exact tie */
        {
            const char *next;
            float got;

            n++;
            if (ss__kserve_parse_f32(s, s + strlen(s), &got, &next) != 0 ||
                float_bits(got) != float_bits(strtof(s, NULL)))
                if (n_bad++ == 0)
                    snprintf(bad, sizeof(bad), "%s", s);
        }
    }
    /* The documented trap: 1.00000005960464477 is just below the tie
     * 1 + 2^-24 but its nearest double is the tie itself. */
    {
        const char *t = "1.00000005960464477", *next;
        float got;

        ss__kserve_parse_f32(t, t + strlen(t), &got, &next);
        ok(got == strtof(t, NULL) && got == 1.0f, "%s reads as 1.0f", t);
    }
    ok(n_bad == 0, "%ld strings at float ties read as strtof does", n);
    if (n_bad)
        tap_diag("first: %s", bad);
}

/* Random cases are scaled by SS_TEST_NUM_SCALE percent (default 100, or
 * 25 in a sanitizer build, which runs the same suite more slowly). */
static long
scaled(long n)
{
    const char *e = getenv("SS_TEST_NUM_SCALE");
    long pct = 100;

#if defined(__SANITIZE_ADDRESS__)
    pct = 25;
#endif
    if (e != NULL && atol(e) > 0)
        pct = atol(e);
    return n * pct / 100 > 0 ? n * pct / 100 : 1;
}

/* One family of strings: how many, how many read differently from libc,
 * how many the fast paths left to strtof/strtod. */
typedef struct tally {
    const char *what;
    long n, bad, slow32, slow64;
    char first[200];
} tally_t;

static void
note_bad(tally_t *t, const char *s, const char *why, double got, double want)
{
    if (t->bad++ == 0)
        snprintf(t->first, sizeof(t->first), "%s: %s: got %a, want %a", s,
                 why, got, want);
}

/* Reads the NUL-terminated JSON number s with the parsers and the fast
 * paths alone, both types, and compares every result bit for bit with
 * strtof and strtod (a value past the type's range must be refused by the
 * parsers and be infinity from the fast paths). */
static void
check_num(tally_t *t, const char *s)
{
    size_t len = strlen(s);
    const char *end = s + len, *next = NULL;
    float w32 = strtof(s, NULL), g32 = 0;
    double w64 = strtod(s, NULL), g64 = 0;
    int rc;

    t->n++;
    rc = ss__kserve_parse_f32(s, end, &g32, &next);
    if (isinf(w32) ? rc != SS__KNUM_RANGE :
        rc != 0 || next != end || float_bits(g32) != float_bits(w32))
        note_bad(t, s, "parse_f32", g32, w32);
    rc = ss__kserve_parse_f64(s, end, &g64, &next);
    if (isinf(w64) ? rc != SS__KNUM_RANGE :
        rc != 0 || next != end || memcmp(&g64, &w64, sizeof(g64)) != 0)
        note_bad(t, s, "parse_f64", g64, w64);
    if (!ss__kserve_fast_f32(s, end, &g32))
        t->slow32++;
    else if (float_bits(g32) != float_bits(w32))
        note_bad(t, s, "fast_f32", g32, w32);
    if (!ss__kserve_fast_f64(s, end, &g64))
        t->slow64++;
    else if (memcmp(&g64, &w64, sizeof(g64)) != 0)
        note_bad(t, s, "fast_f64", g64, w64);
}

/* all_fast: every string has at most 19 significant digits and is far
 * from a rounding boundary or exactly on one, so none may go the slow
 * way (the odds of a random one doing so are about 2^-73). */
static void
report(const tally_t *t, bool all_fast)
{
    ok(t->bad == 0, "%s: %ld strings read exactly as strtof and strtod",
       t->what, t->n);
    if (t->bad)
        tap_diag("%ld differ; first: %s", t->bad, t->first);
    if (all_fast)
        ok(t->slow32 == 0 && t->slow64 == 0, "%s: all on the fast paths "
           "(float32 %ld slow, float64 %ld slow)", t->what, t->slow32,
           t->slow64);
    else
        tap_diag("%s: slow way for float32 %ld, float64 %ld of %ld", t->what,
                 t->slow32, t->slow64, t->n);
}

/* A finite float: uniform bits, with extra weight on subnormals, the
 * smallest normals, the largest binade, and data-like values. */
static float
rand_float(void)
{
    for (;;) {
        uint32_t b = (uint32_t)rnd();
        uint64_t k = rnd() % 16;
        float f;

        if (k == 0)
            b &= 0x807fffffu;                   /* subnormal */
        else if (k == 1)
            b = (b & 0x807fffffu) | 0x00800000u;    /* exponent 1 */
        else if (k == 2)
            b = (b & 0x807fffffu) | 0x7f000000u;    /* exponent 254 */
        else if (k < 6)
            return (float)(((double)(rnd() >> 11) / 9007199254740992.0 *
                            2 - 1) * pow(10, (double)(rnd() % 7) - 3));
        f = bits_float(b);
        if (!isnan(f) && !isinf(f))
            return f;
    }
}

static double
rand_double(void)
{
    for (;;) {
        uint64_t b = rnd(), k = rnd() % 16;
        double d;

        if (k == 0)
            b &= 0x800fffffffffffffull;
        else if (k == 1)
            b = (b & 0x800fffffffffffffull) | 0x0010000000000000ull;
        else if (k == 2)
            b = (b & 0x800fffffffffffffull) | 0x7fe0000000000000ull;
        memcpy(&d, &b, sizeof(d));
        if (!isnan(d) && !isinf(d))
            return d;
    }
}

/* Python's repr of a double (what json.dumps writes): the shortest of
 * "%.15g".."%.17g" that reads back.  (Shorter ones occur for short
 * values only, which other families cover.) */
static void
py_repr(double d, char *s, size_t len)
{
    for (int p = 15; p <= 17; p++) {
        snprintf(s, len, "%.*g", p, d);
        if (p == 17 || strtod(s, NULL) == d)
            return;
    }
}

/* Float32 values written the ways clients write them. */
static void
test_float_texts(void)
{
    tally_t t9 = { .what = "float32 as %.9g" };
    tally_t t17 = { .what = "float32 as %.17g" };
    tally_t tpy = { .what = "float32 as Python's json.dumps" };
    tally_t tsh = { .what = "float32 as our shortest text" };
    long n = scaled(300000), back_bad = 0;
    char s[64];

    for (long i = 0; i < n; i++) {
        float f = rand_float();
        int k;

        snprintf(s, sizeof(s), "%.9g", (double)f);
        check_num(&t9, s);
        snprintf(s, sizeof(s), "%.17g", (double)f);
        check_num(&t17, s);
        py_repr((double)f, s, sizeof(s));
        check_num(&tpy, s);
        k = ss_kserve_format_f32(f, s);
        s[k] = '\0';
        check_num(&tsh, s);
        if (float_bits(strtof(s, NULL)) != float_bits(f) && back_bad++ == 0)
            tap_diag("format %a -> %s does not read back", (double)f, s);
    }
    report(&t9, true);
    report(&t17, true);
    report(&tpy, true);
    report(&tsh, true);
    ok(back_bad == 0, "%ld floats written shortest read back to the same "
       "bits", n);
}

/* A lattice over all 2^32 bit patterns (every exponent, both signs):
 * each finite float's shortest text reads back to the same bits. */
static void
test_format_sweep(void)
{
    long stride = 997 * 100 / scaled(100), n = 0, bad = 0;
    char s[40], first[80] = "";

    for (uint64_t b = 0; b <= UINT32_MAX; b += (uint64_t)stride) {
        float f = bits_float((uint32_t)b), g = 0;
        const char *next;
        int k;

        if (isnan(f) || isinf(f))
            continue;
        n++;
        k = ss_kserve_format_f32(f, s);
        if (k < 1 || k > 16 || ss__kserve_parse_f32(s, s + k, &g, &next) ||
            next != s + k || float_bits(g) != float_bits(f)) {
            if (bad++ == 0)
                snprintf(first, sizeof(first), "%a -> %.*s", (double)f,
                         k > 0 && k < 40 ? k : 0, s);
        }
    }
    ok(bad == 0, "%ld floats (every %ld-th bit pattern) written shortest "
       "read back to the same bits", n, stride);
    if (bad)
        tap_diag("%ld bad; first: %s", bad, first);
}

/* Doubles (FP64 tensors) as %.17g and as Python writes them. */
static void
test_double_texts(void)
{
    tally_t t17 = { .what = "float64 as %.17g" };
    tally_t tpy = { .what = "float64 as Python repr" };
    long n = scaled(200000);
    char s[64];

    for (long i = 0; i < n; i++) {
        double d = rand_double();

        snprintf(s, sizeof(s), "%.17g", d);
        check_num(&t17, s);
        py_repr(d, s, sizeof(s));
        check_num(&tpy, s);
    }
    report(&t17, true);
    report(&tpy, true);
}

/* Random decimal strings: 1..25 significant digits, the point anywhere,
 * leading and trailing zeros, exponents across the whole double range or
 * float's, in every JSON spelling. */
static void
test_random_decimals(void)
{
    tally_t tw = { .what = "random decimals, 1-25 digits" };
    tally_t t19 = { .what = "random decimals, 1-19 digits" };
    long n = scaled(800000);
    char s[128];

    for (long i = 0; i < n; i++) {
        int nd = 1 + (int)(rnd() % 25), o = 0, lead = 0, trail = 0;
        int point = (int)(rnd() % (unsigned)(nd + 1)), ex;
        uint64_t sel = rnd();
        char dig[32];

        for (int d = 0; d < nd; d++)
            dig[d] = (char)(d == 0 ? '1' + rnd() % 9 : '0' + rnd() % 10);
        if (sel & 1)
            s[o++] = '-';
        if ((sel >> 1) % 4 == 0)
            lead = (int)(rnd() % 6);            /* 0.000ddd */
        if ((sel >> 3) % 4 == 0 && nd + 3 <= 25)
            trail = (int)(rnd() % 4);           /* ddd000 */
        if ((sel >> 5) % 2)
            ex = (int)(rnd() % 700) - 365;      /* past double's range */
        else
            ex = (int)(rnd() % 100) - 55;       /* past float's range */
        if (point == 0 || lead > 0) {
            memcpy(s + o, "0.", 2);
            o += 2;
            memset(s + o, '0', (size_t)lead);
            o += lead;
            point = 0;
        } else {
            memcpy(s + o, dig, (size_t)point);
            o += point;
            if (point < nd || trail)
                s[o++] = '.';
        }
        memcpy(s + o, dig + point, (size_t)(nd - point));
        o += nd - point;
        memset(s + o, '0', (size_t)trail);
        o += trail;
        /* ex was the power of ten of the leading digit; now that of the
         * text's exponent. */
        ex = point == 0 ? ex + lead + 1 : ex - (point - 1);
        s[o] = '\0';
        switch ((sel >> 6) % 4) {
        case 0:
            if (ex != 0)
                o += snprintf(s + o, sizeof(s) - (size_t)o, "e%d", ex);
            break;
        case 1:
            o += snprintf(s + o, sizeof(s) - (size_t)o, "E%d", ex);
            break;
        case 2:
            o += snprintf(s + o, sizeof(s) - (size_t)o, "e%+d", ex);
            break;
        default:
            o += snprintf(s + o, sizeof(s) - (size_t)o, "e%s%03d",
                          ex < 0 ? "-" : "", abs(ex));
            break;
        }
        check_num(nd + trail <= 19 ? &t19 : &tw, s);
    }
    report(&t19, true);
    report(&tw, false);
}

/* Splits "%.Ne" text into its digits w and the power of ten q of the last
 * digit; false when the digits do not fit. */
static bool
split_e(const char *s, uint64_t *w, int *q)
{
    uint64_t m = 0;
    int nf = 0, nd = 0;
    bool frac = false;

    for (; *s && *s != 'e'; s++) {
        if (*s == '.') {
            frac = true;
            continue;
        }
        if (*s < '0' || *s > '9')
            continue;
        if (nd++ == 19)
            return false;
        m = m * 10 + (uint64_t)(*s - '0');
        nf += frac;
    }
    *w = m;
    *q = (*s == 'e' ? atoi(s + 1) : 0) - nf;
    return true;
}

/* The digits w, trailing zeros dropped, as "w" or "weq". */
static void
put_wq(char *s, size_t len, bool neg, uint64_t w, int q)
{
    while (w != 0 && w % 10 == 0) {
        w /= 10;
        q++;
    }
    if (q == 0)
        snprintf(s, len, "%s%llu", neg ? "-" : "", (unsigned long long)w);
    else
        snprintf(s, len, "%s%llue%d", neg ? "-" : "", (unsigned long long)w,
                 q);
}

/* mid written the ways that stress rounding: its nearest 17 and 19 digit
 * decimals (exactly mid when it has that few digits: a tie), their
 * neighbours one unit in the last digit away, and many digits. */
static void
check_near(tally_t *t19, tally_t *tlong, const char *e19,
           const char *e17, const char *elong, bool neg)
{
    char s[160];
    uint64_t w;
    int q;

    if (split_e(e19, &w, &q)) {
        for (int dw = -1; dw <= 1; dw++) {
            put_wq(s, sizeof(s), neg, w + (uint64_t)(int64_t)dw, q);
            check_num(t19, s);
        }
    }
    if (split_e(e17, &w, &q)) {
        put_wq(s, sizeof(s), neg, w, q);
        check_num(t19, s);
    }
    snprintf(s, sizeof(s), "%s%s", neg ? "-" : "", elong);
    check_num(tlong, s);
}

/* Halfway between neighbouring floats and neighbouring doubles (both
 * exact in long double), subnormals, the zero/least-subnormal tie and the
 * overflow threshold included. */
static void
test_halfway(void)
{
    tally_t t32 = { .what = "near float32 ties, <= 19 digits" };
    tally_t t64 = { .what = "near float64 ties, <= 19 digits" };
    tally_t tl = { .what = "float ties written with 40 digits" };
    long n = scaled(80000);
    char e19[64], e17[64], el[96];

    for (long i = 0; i < n; i++) {
        float f = fabsf(rand_float());
        double hi = f == FLT_MAX ? 0x1p128 : (double)nextafterf(f, INFINITY);
        double mid = ((double)f + hi) / 2;
        double d = fabs(rand_double());
        long double dhi = d == DBL_MAX ? 0x1p1024L :
            (long double)nextafter(d, INFINITY);
        long double dmid = ((long double)d + dhi) / 2;
        bool neg = rnd() & 1;

        snprintf(e19, sizeof(e19), "%.18e", mid);
        snprintf(e17, sizeof(e17), "%.16e", mid);
        snprintf(el, sizeof(el), "%.39e", mid);
        check_near(&t32, &tl, e19, e17, el, neg);
        snprintf(e19, sizeof(e19), "%.18Le", dmid);
        snprintf(e17, sizeof(e17), "%.16Le", dmid);
        snprintf(el, sizeof(el), "%.39Le", dmid);
        check_near(&t64, &tl, e19, e17, el, neg);
    }
    /* Ties that are integers (binades 2^24.. for float, 2^53.. for
     * double): written without trailing zeros they are exact decimals with
     * q >= 0, settled on the exact product. */
    for (int e = 0; e < 40; e++) {
        for (int k = 0; k < 64; k++) {
            float f = ldexpf(1.0f + (float)(rnd() % 8388608) / 8388608.0f,
                             24 + e);
            double mid = ((double)f + (double)nextafterf(f, INFINITY)) / 2;
            double d = ldexp(1.0 + (double)(rnd() >> 12) * 0x1p-52, 53 + e);
            long double dmid = ((long double)d +
                                (long double)nextafter(d, INFINITY)) / 2;

            snprintf(e19, sizeof(e19), "%.18e", mid);
            snprintf(e17, sizeof(e17), "%.16e", mid);
            snprintf(el, sizeof(el), "%.39e", mid);
            check_near(&t32, &tl, e19, e17, el, false);
            snprintf(e19, sizeof(e19), "%.18Le", dmid);
            snprintf(e17, sizeof(e17), "%.16Le", dmid);
            snprintf(el, sizeof(el), "%.39Le", dmid);
            check_near(&t64, &tl, e19, e17, el, false);
        }
    }
    report(&t32, true);
    report(&t64, true);
    report(&tl, false);
}

/* Every table entry: 1..19 digit significands at every power of ten from
 * past the zero threshold to past the infinity one. */
static void
test_every_exponent(void)
{
    tally_t t = { .what = "every power of ten, 1-19 digits" };
    char s[64];

    for (int q = -365; q <= 330; q++) {
        for (int nd = 1; nd <= 19; nd++) {
            uint64_t lo = 1, w;

            for (int k = 1; k < nd; k++)
                lo *= 10;
            for (int k = 0; k < 3; k++) {
                w = k == 0 ? lo : k == 1 ? lo * 10 - 1 :
                    lo + rnd() % (lo * 9);
                snprintf(s, sizeof(s), "%llue%d", (unsigned long long)w, q);
                check_num(&t, s);
            }
        }
    }
    report(&t, true);
}

/* Known traps, each against libc. */
static void
test_known_cases(void)
{
    static const char *cases[] = {
        "0.12345678901234568", "1.2345678e-05", "-3.4028234663852886e+38",
        "9007199254740993", "9007199254740995", "9007199254740993.0",
        "90071992547409930e-1", "16777217", "16777219", "16777217.0",
        "1.6777217e7", "33554434", "2.2250738585072011e-308",
        "2.2250738585072012e-308", "2.2250738585072014e-308",
        "4.9406564584124654e-324", "2.4703282292062327e-324",
        "2.4703282292062328e-324", "1.7976931348623157e308",
        "1.7976931348623158e308", "1.7976931348623159e308",
        "3.4028235e38", "3.40282356779733661e38", "3.40282356779733662e38",
        "3.4028235677973366e38", "3.4028235677973362e38",
        "1.4012984643e-45", "7.006492321624085e-46",
        "7.006492321624086e-46", "7.0064923216240854e-46",
        "1.1754942e-38", "1.17549428e-38", "1.1754943508222875e-38",
        "-0.0", "-0", "0.0000", "-0e5", "1e-400", "-1e-400", "1e400",
        "9999999999999999999e-343", "1e-342", "1e308", "1e309",
        "9999999999999999999", "18446744073709551615", "1e23",
        "8.589973e9", "1.00000005960464477539", "1.0000000596046448",
        "0.000000000000000000000000000000000000000000001",
        "100000000000000000000000000000000000000",
    };
    tally_t t = { .what = "known cases" };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_num(&t, cases[i]);
    report(&t, false);
}

/* The encoder's JSON data, scanned back by the decoder's scanner: every
 * float comes back with the same bits. */
static void
test_encode_scan(void)
{
    enum { NV = 4096 };
    static float v[NV], back[NV];
    int64_t dims[2] = { 1, NV };
    ss_kserve_output_t out = { "y", SS_DTYPE_F32, 2, dims, v, false };
    ss_kserve_input_t in = { 0 };
    char *body = NULL, *p, *q;
    size_t len, hlen;
    ss_err_t err;
    long bad = 0;

    for (int i = 0; i < NV; i++)
        v[i] = rand_float();
    v[0] = 0.0f;
    v[1] = -0.0f;
    v[2] = FLT_MAX;
    v[3] = -FLT_TRUE_MIN;
    if (!ok(ss_kserve_encode("m", "1", NULL, &out, 1, &body, &len, &hlen,
                             &err) == 0, "encode %d floats", NV))
        return;
    p = strstr(body, "\"data\":");
    q = p ? strchr(p, ']') : NULL;
    in.name = "y";
    in.dtype = SS_DTYPE_F32;
    in.ndim = 2;
    memcpy(in.dims, dims, sizeof(dims));
    in.data = back;
    in.nbytes = sizeof(back);
    if (ok(p != NULL && q != NULL && ss__kserve_scan_data(
               p + 7, (size_t)(q + 1 - (p + 7)), &in, NV, &err) == 0,
           "scan the encoded data back"))
        for (int i = 0; i < NV; i++)
            bad += float_bits(back[i]) != float_bits(v[i]);
    ok(bad == 0, "every encoded float reads back to the same bits (%ld "
       "differ)", bad);
    free(body);
}

static void
test_tokens(void)
{
    static const struct {
        const char *s;
        int rc;
        size_t used;
        double v;
    } cases[] = {
        { "0", 0, 1, 0 }, { "-0", 0, 2, -0.0 }, { "1.5e3", 0, 5, 1500 },
        { "1E+2", 0, 4, 100 }, { "2e-3,", 0, 4, 0.002 },
        { "0x10", 0, 1, 0 }, { "01", 0, 1, 0 },
        { "1e39", SS__KNUM_RANGE, 0, 0 },
        { "-1e39", SS__KNUM_RANGE, 0, 0 }, { "1e-60", 0, 5, 0 },
        { "1.", SS__KNUM_SYNTAX, 0, 0 }, { ".5", SS__KNUM_SYNTAX, 0, 0 },
        { "+1", SS__KNUM_SYNTAX, 0, 0 }, { "-", SS__KNUM_SYNTAX, 0, 0 },
        { "1e", SS__KNUM_SYNTAX, 0, 0 }, { "1e+", SS__KNUM_SYNTAX, 0, 0 },
        { "inf", SS__KNUM_SYNTAX, 0, 0 }, { "nan", SS__KNUM_SYNTAX, 0, 0 },
        { "Infinity]", 0, 8, INFINITY }, { "-Infinity", 0, 9, -INFINITY },
        { "1e99999999999999", SS__KNUM_RANGE, 0, 0 },
        { "0e99999999999999", 0, 16, 0 },
        { "123456789012345678901234567890", 0, 30, 1.2345678901234568e29 },
        { "0.000000000000000000000000000000000000000000001401298464324817",
          0, 62, 1.401298464324817e-45 },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *s = cases[i].s, *next = NULL;
        float f = -1;
        int rc = ss__kserve_parse_f32(s, s + strlen(s), &f, &next);

        is_int(rc, cases[i].rc, "parse_f32 '%s' code", s);
        if (rc == 0) {
            is_int(next - s, (long)cases[i].used, "parse_f32 '%s' length",
                   s);
            ok(float_bits(f) == float_bits((float)cases[i].v),
               "parse_f32 '%s' value %a", s, (double)f);
        }
    }
    {
        const char *s = "NaN", *next;
        float f = 0;
        double d = 0;

        ok(ss__kserve_parse_f32(s, s + 3, &f, &next) == 0 && isnan(f),
           "NaN token reads as a float NaN");
        ok(ss__kserve_parse_f64(s, s + 3, &d, &next) == 0 && isnan(d),
           "NaN token reads as a double NaN");
        s = "1.7976931348623159e308";
        is_int(ss__kserve_parse_f64(s, s + strlen(s), &d, &next),
               SS__KNUM_RANGE, "double overflow is a range error");
    }
}

static void
test_ints(void)
{
    static const struct {
        const char *s;
        int rc;
        bool neg;
        uint64_t mag;
    } cases[] = {
        { "0", 0, false, 0 }, { "-0", 0, true, 0 }, { "42", 0, false, 42 },
        { "-9223372036854775808", 0, true, 9223372036854775808ull },
        { "18446744073709551615", 0, false, UINT64_MAX },
        { "18446744073709551616", SS__KNUM_RANGE, false, 0 },
        { "99999999999999999999999", SS__KNUM_RANGE, false, 0 },
        { "1.0", SS__KNUM_SYNTAX, false, 0 }, { "1e3", SS__KNUM_SYNTAX, 0, 0 },
        { "-", SS__KNUM_SYNTAX, false, 0 }, { "true", SS__KNUM_SYNTAX, 0, 0 },
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *s = cases[i].s, *next;
        bool neg = false;
        uint64_t mag = 7;
        int rc = ss__kserve_parse_int(s, s + strlen(s), &neg, &mag, &next);

        is_int(rc, cases[i].rc, "parse_int '%s'", s);
        if (rc == 0)
            ok(neg == cases[i].neg && mag == cases[i].mag,
               "parse_int '%s' value", s);
    }
    buf[ss__kserve_format_i64(INT64_MIN, buf)] = '\0';
    is_str(buf, "-9223372036854775808", "format INT64_MIN");
    buf[ss__kserve_format_u64(UINT64_MAX, buf)] = '\0';
    is_str(buf, "18446744073709551615", "format UINT64_MAX");
    buf[ss__kserve_format_i64(0, buf)] = '\0';
    is_str(buf, "0", "format 0");
}

static void
test_format_f64(void)
{
    long n_bad = 0;
    char s[40];

    for (int i = 0; i < 20000; i++) {
        uint64_t b = rnd();
        double d;
        int n;

        memcpy(&d, &b, sizeof(d));
        if (isnan(d) || isinf(d))
            continue;
        n = ss__kserve_format_f64(d, s);
        s[n] = '\0';
        if (n > 24 || strtod(s, NULL) != d)
            n_bad++;
    }
    ok(n_bad == 0, "format_f64 reads back on random doubles");
    s[ss__kserve_format_f64(0.1, s)] = '\0';
    is_str(s, "0.1", "format_f64 0.1");
}

int
main(void)
{
    test_format_f32();
    test_clinger();
    test_double_rounding();
    test_float_texts();
    test_format_sweep();
    test_double_texts();
    test_random_decimals();
    test_halfway();
    test_every_exponent();
    test_known_cases();
    test_encode_scan();
    test_tokens();
    test_ints();
    test_format_f64();
    return tap_done();
}
