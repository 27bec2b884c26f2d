/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KServe codec's numbers: shortest float32 text against a brute-force
 * "%.{1..9}g" reference, Clinger's fast path and the float32 reader against
 * strtod/strtof (exact equality, double-rounding traps included), integer
 * ranges, and the NaN/Infinity tokens.
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
    ok(n_fast > n / 2, "the fast path took %ld of %ld", n_fast, n);
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
    test_tokens();
    test_ints();
    test_format_f64();
    return tap_done();
}
