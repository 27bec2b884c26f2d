/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KServe V2 request decoding, steps 1 and 2 (kserve.c's header has the
 * design): the structural scanner that finds each input's "data" span in
 * the JSON header without looking inside other values, and the envelope,
 * the header with each span replaced by its input's index, that jansson
 * then parses.
 *
 * THREADS: pure functions; [any].
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/internal.h"

typedef struct scan {
    const char *p, *end;
    ss__kspan_t *spans;          /* [max_inputs] */
    int max_inputs;
    int n_inputs;
    bool seen_inputs;
} scan_t;

static const unsigned char structural[256] = {
    ['"'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1,
};

/* Could any of the 8 bytes at p be structural?  Each one is '"' or at
 * least '[' (0x5b), and digits, signs, points and commas are below, so a
 * data array is mostly passed over eight bytes at a time.  False positives
 * are fine, false negatives impossible: b + 0x25 sets bit 7 of a byte
 * under 0x80 exactly when b >= 0x5b, and the '"' test is the usual
 * zero-byte test of v ^ '"' * 0x01..01. */
static inline bool
maybe_structural(const char *p)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones << 7;
    uint64_t v, q;

    memcpy(&v, p, sizeof(v));
    q = v ^ (ones * '"');
    return (((v + ones * 0x25) | v) & highs) ||
           ((q - ones) & ~q & highs);
}

static const char *
next_structural(const char *p, const char *end)
{
    for (;;) {
        const char *stop;

        while (end - p >= 8 && !maybe_structural(p))
            p += 8;
        stop = end - p >= 8 ? p + 8 : end;
        while (p < stop && !structural[(unsigned char)*p])
            p++;
        if (p < stop || p >= end)
            return p;
    }
}

static inline void
skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' ||
                             *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static inline bool
at(scan_t *s, char c)
{
    return s->p < s->end && *s->p == c;
}

/* At '"': moves past the closing quote. */
static int
skip_string(scan_t *s)
{
    const char *p = s->p + 1;

    while (p < s->end) {
        if (*p == '"') {
            s->p = p + 1;
            return 0;
        }
        p += *p == '\\' ? 2 : 1;
    }
    return SS__KSCAN_BAD;
}

static int
skip_value(scan_t *s)
{
    const char *p = s->p, *end = s->end;
    int depth = 0;

    if (p >= end)
        return SS__KSCAN_BAD;
    if (*p == '"')
        return skip_string(s);
    if (*p != '[' && *p != '{') {
        while (p < end && *p != ',' && *p != ']' && *p != '}' && *p != ' ' &&
               *p != '\n' && *p != '\r' && *p != '\t' && *p != ':')
            p++;
        if (p == s->p)
            return SS__KSCAN_BAD;
        s->p = p;
        return 0;
    }
    for (;;) {
        p = next_structural(p, end);
        if (p >= end)
            return SS__KSCAN_BAD;
        if (*p == '"') {
            s->p = p;
            if (skip_string(s) < 0)
                return SS__KSCAN_BAD;
            p = s->p;
            continue;
        }
        if (*p == '[' || *p == '{') {
            depth++;
        } else if (--depth == 0) {
            s->p = p + 1;
            return 0;
        }
        p++;
    }
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Is the raw JSON string [p, q) (between the quotes) equal to lit, an
 * ASCII word?  Handles \u escapes as jansson will decode them. */
static bool
key_is(const char *p, const char *q, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(q - p) == n && memcmp(p, lit, n) == 0)
        return true;
    if (memchr(p, '\\', (size_t)(q - p)) == NULL)
        return false;
    while (p < q) {
        unsigned c = (unsigned char)*p;

        if (c == '\\') {
            c = 0x100;      /* other escapes never spell a letter */
            if (q - p >= 6 && p[1] == 'u') {
                int h[4];

                for (int i = 0; i < 4; i++)
                    h[i] = hexval(p[2 + i]);
                if (h[0] >= 0 && h[1] >= 0 && h[2] >= 0 && h[3] >= 0)
                    c = (unsigned)(h[0] << 12 | h[1] << 8 | h[2] << 4 | h[3]);
                p += 6;
            } else {
                p += 2;
            }
        } else {
            p++;
        }
        if (*lit == '\0' || c != (unsigned char)*lit++)
            return false;
    }
    return *lit == '\0';
}

static int scan_inputs(scan_t *s);

/* At '{': an object; kind 0 is the request, 1 the input number input. */
static int
scan_object(scan_t *s, int kind, int input)
{
    int rc;

    s->p++;
    skip_ws(s);
    if (at(s, '}')) {
        s->p++;
        return 0;
    }
    for (;;) {
        const char *k, *kend, *v;

        if (!at(s, '"'))
            return SS__KSCAN_BAD;
        k = s->p + 1;
        if (skip_string(s) < 0)
            return SS__KSCAN_BAD;
        kend = s->p - 1;
        skip_ws(s);
        if (!at(s, ':'))
            return SS__KSCAN_BAD;
        s->p++;
        skip_ws(s);
        v = s->p;
        if (kind == 0 && at(s, '[') && key_is(k, kend, "inputs")) {
            if (s->seen_inputs)
                return SS__KSCAN_BAD;
            s->seen_inputs = true;
            rc = scan_inputs(s);
        } else if (kind == 1 && key_is(k, kend, "data")) {
            if (s->spans[input].p != NULL)
                return SS__KSCAN_BAD;            /* a duplicate key */
            if ((rc = skip_value(s)) == 0) {
                s->spans[input].p = v;
                s->spans[input].n = (size_t)(s->p - v);
            }
        } else {
            rc = skip_value(s);
        }
        if (rc < 0)
            return rc;
        skip_ws(s);
        if (at(s, ',')) {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (at(s, '}')) {
            s->p++;
            return 0;
        }
        return SS__KSCAN_BAD;
    }
}

static int
scan_inputs(scan_t *s)
{
    int rc;

    s->p++;
    skip_ws(s);
    if (at(s, ']')) {
        s->p++;
        return 0;
    }
    for (;;) {
        if (s->n_inputs == s->max_inputs)
            return SS__KSCAN_TOO_MANY;
        if (at(s, '{'))
            rc = scan_object(s, 1, s->n_inputs);
        else
            rc = skip_value(s);
        if (rc < 0)
            return rc;
        s->n_inputs++;
        skip_ws(s);
        if (at(s, ',')) {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (at(s, ']')) {
            s->p++;
            return 0;
        }
        return SS__KSCAN_BAD;
    }
}

int
ss__kserve_scan(const char *hdr, size_t n, ss__kspan_t *spans,
                int max_inputs, int *n_inputs)
{
    scan_t st = { .p = hdr, .end = hdr + n, .spans = spans,
                  .max_inputs = max_inputs }, *s = &st;
    int rc;

    *n_inputs = 0;
    skip_ws(s);
    if (!at(s, '{'))
        return SS__KSCAN_BAD;
    if ((rc = scan_object(s, 0, 0)) < 0)
        return rc;
    skip_ws(s);
    *n_inputs = s->n_inputs;
    return s->p == s->end ? 0 : SS__KSCAN_BAD;
}

/* The header with each "data" value replaced by its input's index. */
char *
ss__kserve_envelope(const char *hdr, size_t n, const ss__kspan_t *spans,
                    int n_inputs, size_t *outn)
{
    size_t cap = n + 1 + (size_t)n_inputs * 12, o = 0;
    const char *p = hdr;
    char *e;

    if ((e = ss_malloc(cap)) == NULL)
        return NULL;
    for (int i = 0; i < n_inputs; i++) {
        const ss__kspan_t *sp = &spans[i];

        if (sp->p == NULL)
            continue;
        memcpy(e + o, p, (size_t)(sp->p - p));
        o += (size_t)(sp->p - p);
        o += (size_t)snprintf(e + o, 12, "%d", i);
        p = sp->p + sp->n;
    }
    memcpy(e + o, p, (size_t)(hdr + n - p));
    o += (size_t)(hdr + n - p);
    *outn = o;
    return e;
}
