/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_KSERVE_INT_H
#define SS_SERVER_KSERVE_INT_H

/*
 * Internals of the KServe V2 codec (server/kserve*.c), shared by its files
 * and its unit tests: the structural scanner (kserve_scan.c), the number
 * scanner (kserve_num.c), the formatter (kserve_fmt.c), and
 * the tensor data scanner (kserve_data.c).
 *
 * Scanners take [p, end) (the text need not be NUL-terminated), return 0
 * and set *next past the token, or one of the negative codes below and
 * leave *next at p.
 *
 * THREADS: pure functions; [any].
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/kserve/kserve.h"

enum {
    SS__KNUM_SYNTAX = -1,   /* not a token of the expected kind */
    SS__KNUM_RANGE = -2     /* a number, but not representable */
};

/* 10^k as the nearest double for k in [MIN, MAX] (kserve_num.c); exact
 * for 0 <= k <= 22.  The scanner and the formatter both scale by it. */
#define SS__KNUM_POW10_MIN (-53)
#define SS__KNUM_POW10_MAX 53
extern const double ss__kserve_pow10_tab[];

static inline double
ss__kserve_p10(int k)
{
    return ss__kserve_pow10_tab[k - SS__KNUM_POW10_MIN];
}

/* A JSON number, or the bare tokens NaN, Infinity, -Infinity.  A finite
 * number too large for the type is SS__KNUM_RANGE; one too small rounds to
 * zero as strtof/strtod would. */
int ss__kserve_parse_f32(const char *p, const char *end, float *out,
                         const char **next);
int ss__kserve_parse_f64(const char *p, const char *end, double *out,
                         const char **next);

/* A JSON integer (no fraction, no exponent): sign and magnitude.  A
 * magnitude over UINT64_MAX is SS__KNUM_RANGE. */
int ss__kserve_parse_int(const char *p, const char *end, bool *neg,
                         uint64_t *mag, const char **next);

/* The fast paths alone (Clinger's, then Eisel-Lemire's; see
 * kserve_num.c), on a token already known to be a valid JSON number: true
 * and *out exactly what strtod/strtof would give (infinity included) when
 * they decide, false when the parsers above would fall back to
 * strtod/strtof (more than 19 significant digits, or a product too close
 * to a rounding boundary).  Exposed for the tests. */
bool ss__kserve_fast_f64(const char *p, const char *end, double *out);
bool ss__kserve_fast_f32(const char *p, const char *end, float *out);

/* Shortest text that reads back (strtod) as v; at most 24 bytes, no NUL.
 * NaN and infinities as in ss_kserve_format_f32. */
int ss__kserve_format_f64(double v, char *buf);
/* Decimal integers; at most 20 bytes, no NUL. */
int ss__kserve_format_i64(int64_t v, char *buf);
int ss__kserve_format_u64(uint64_t v, char *buf);

/* Step 1 of decoding (kserve_scan.c): walks the JSON header [hdr, hdr +
 * n) just far enough to find the top-level "inputs" array and each input
 * object's "data" value; spans[i] (max_inputs of them, zeroed by the
 * caller) gets input i's span, p NULL when it has none.  0 and *n_inputs
 * set, or one of the codes below (malformed: the caller lets jansson say
 * where). */
enum {
    SS__KSCAN_BAD = -1,         /* malformed */
    SS__KSCAN_TOO_MANY = -2     /* more inputs than max_inputs */
};

typedef struct ss__kspan {
    const char *p;              /* NULL: this input has no "data" */
    size_t n;
} ss__kspan_t;

int ss__kserve_scan(const char *hdr, size_t n, ss__kspan_t *spans,
                    int max_inputs, int *n_inputs);
/* Step 2: the header with each span replaced by its input's index, its
 * length in *outn (ss_malloc'ed; NULL without memory). */
char *ss__kserve_envelope(const char *hdr, size_t n, const ss__kspan_t *spans,
                          int n_inputs, size_t *outn);

/* Scans one input's JSON "data" value, [p, p + n), into in->data, which
 * holds numel elements of in->dtype: flat (exactly numel scalars) or
 * nested exactly as in->dims.  With in->data NULL it only checks and
 * counts.  Errors are SS_EINVAL with a message that names the input. */
int ss__kserve_scan_data(const char *p, size_t n, ss_kserve_input_t *in,
                         size_t numel, ss_err_t *err);

/* "[1,784]" into buf (always NUL-terminated). */
void ss__kserve_shape_str(int ndim, const int64_t *dims, char *buf,
                          size_t len);

#endif
