/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What JSON tensor numbers cost in the KServe codec (not part of make check:
 * it measures, it does not assert).  Run from the build tree:
 *
 *   tests/unit/test_kserve_bench [milliseconds per measurement, default 300]
 *
 * Bodies: one MNIST-sized request, 784 float32 values uniform in [-3, 3),
 * written two ways clients write them:
 *
 *   shortest  the shortest text that reads back as the float32
 *             ("-1.2345679"), as this server, numpy's repr or JS write it;
 *   py17      Python's json.dumps of the float32 widened to double: the
 *             shortest text that reads back as that double, mostly 16-17
 *             significant digits ("-1.2345678806304932").
 *
 * For each: the whole ss_kserve_decode (jansson envelope + the streaming
 * data scanner), the data scanner alone on the "data" array, and a plain
 * strtof loop over the same numbers (the libc baseline).  Then encoding 784
 * floats: ss_kserve_encode against snprintf "%.9g" and "%.17g" loops.
 * Each figure is the best slice of about a millisecond, in microseconds
 * per body.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/kserve/internal.h"

#define N 784

static uint64_t rng = 0x853c49e6748fea9bull;
static double budget_us = 300e3;
static volatile float sink;

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The shortest "%.{p}g" that strtod reads back as d: Python's repr. */
static int
py_repr(double d, char *buf, size_t len)
{
    int n = 0;

    for (int p = 1; p <= 17; p++) {
        n = snprintf(buf, len, "%.*g", p, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    return n;
}

/* A request body for vals; *data and *dlen locate the "data" array. */
static char *
make_body(const float *vals, int py, size_t *len, const char **data,
          size_t *dlen)
{
    size_t cap = 65536, o;
    char *b = malloc(cap), *d0;

    if (b == NULL)
        exit(1);
    o = (size_t)snprintf(b, cap, "{\"id\":\"r1\",\"inputs\":[{\"name\":"
                         "\"input\",\"shape\":[1,784],\"datatype\":\"FP32\","
                         "\"data\":");
    d0 = b + o;
    b[o++] = '[';
    for (int i = 0; i < N; i++) {
        if (i)
            b[o++] = ',';
        if (py)
            o += (size_t)py_repr((double)vals[i], b + o, cap - o);
        else
            o += (size_t)ss_kserve_format_f32(vals[i], b + o);
    }
    b[o++] = ']';
    *data = d0;
    *dlen = (size_t)(b + o - d0);
    o += (size_t)snprintf(b + o, cap - o, "}],\"outputs\":[{\"name\":"
                          "\"output\"}]}");
    *len = o;
    return b;
}

/* Runs fn(arg) in slices of about a millisecond for the budget; the best
 * slice's microseconds per call (the machine may be shared: the fastest
 * slice is the one nothing else interrupted). */
static double
best_us(void (*fn)(void *), void *arg)
{
    double best = 1e30, t_end;
    int iters = 1;

    for (;;) {
        double t0 = now_us(), dt;

        for (int i = 0; i < iters; i++)
            fn(arg);
        dt = now_us() - t0;
        if (dt > 1000 || iters > (1 << 24))
            break;
        iters *= 2;
    }
    t_end = now_us() + budget_us;
    while (now_us() < t_end) {
        double t0 = now_us();

        for (int i = 0; i < iters; i++)
            fn(arg);
        best = fmin(best, (now_us() - t0) / iters);
    }
    return best;
}

typedef struct job {
    const char *body;
    size_t len;
    const char *data;
    size_t dlen;
    const float *vals;
    float out[N];
} job_t;

static void
run_decode(void *a)
{
    job_t *j = a;
    ss_kserve_request_t *r = NULL;

    if (ss_kserve_decode(j->body, j->len, -1, NULL, &r, NULL) < 0)
        exit(1);
    sink = ((float *)r->inputs[0].data)[N - 1];
    ss_kserve_request_free(r);
}

static void
run_scan(void *a)
{
    job_t *j = a;
    ss_kserve_input_t in = { 0 };
    int64_t dims[2] = { 1, N };
    ss_err_t err;

    in.name = "input";
    in.dtype = SS_DTYPE_F32;
    in.ndim = 2;
    memcpy(in.dims, dims, sizeof(dims));
    in.data = j->out;
    in.nbytes = sizeof(j->out);
    if (ss__kserve_scan_data(j->data, j->dlen, &in, N, &err) < 0)
        exit(1);
    sink = j->out[N - 1];
}

/* The libc baseline: strtof over the same numbers, commas skipped (the
 * body is NUL-terminated, so strtof stops at the closing bracket). */
static void
run_strtof(void *a)
{
    job_t *j = a;
    const char *p = j->data + 1;
    char *e;

    for (int i = 0; i < N; i++) {
        j->out[i] = strtof(p, &e);
        p = e + 1;
    }
    sink = j->out[N - 1];
}

static void
run_encode(void *a)
{
    job_t *j = a;
    int64_t dims[2] = { 1, N };
    ss_kserve_output_t out = { "output", SS_DTYPE_F32, 2, dims, j->vals,
                               false };
    char *body = NULL;
    size_t len, hlen;

    if (ss_kserve_encode("m", "1", "r1", &out, 1, &body, &len, &hlen,
                         NULL) < 0)
        exit(1);
    sink = (float)body[len - 1];
    free(body);
}

static char fmt_buf[N * 32];

static void
run_snprintf9(void *a)
{
    job_t *j = a;
    size_t o = 0;

    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(fmt_buf + o, 32, "%.9g,", (double)j->vals[i]);
    sink = (float)fmt_buf[o - 1];
}

static void
run_snprintf17(void *a)
{
    job_t *j = a;
    size_t o = 0;

    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(fmt_buf + o, 32, "%.17g,", (double)j->vals[i]);
    sink = (float)fmt_buf[o - 1];
}

int
main(int argc, char **argv)
{
    static float vals[N];
    static job_t job[2];
    static const char *name[2] = { "shortest", "py17" };

    if (argc > 1)
        budget_us = atof(argv[1]) * 1e3;
    for (int i = 0; i < N; i++)
        vals[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 * 6 -
                          3);
    printf("decode 784 float32 (us per body, best of runs)\n");
    printf("%-9s %6s %9s %9s %9s  %s\n", "body", "bytes", "decode",
           "scan", "strtof", "scan ns/number");
    for (int k = 0; k < 2; k++) {
        job_t *j = &job[k];
        double t_dec, t_scan, t_strtof;
        char *b;

        j->vals = vals;
        b = make_body(vals, k, &j->len, &j->data, &j->dlen);
        j->body = b;
        /* Check before timing: every scanner reads the same floats. */
        run_scan(j);
        if (memcmp(j->out, vals, sizeof(vals)) != 0) {
            fprintf(stderr, "scan: wrong values\n");
            return 1;
        }
        run_strtof(j);
        if (memcmp(j->out, vals, sizeof(vals)) != 0) {
            fprintf(stderr, "strtof: wrong values\n");
            return 1;
        }
        t_dec = best_us(run_decode, j);
        t_scan = best_us(run_scan, j);
        t_strtof = best_us(run_strtof, j);
        printf("%-9s %6zu %9.2f %9.2f %9.2f  %.1f\n", name[k], j->len,
               t_dec, t_scan, t_strtof, t_scan * 1e3 / N);
    }
    printf("encode 784 float32 (us per body)\n");
    printf("  ss_kserve_encode (shortest) %9.2f\n",
           best_us(run_encode, &job[0]));
    printf("  snprintf %%.9g loop          %9.2f\n",
           best_us(run_snprintf9, &job[0]));
    printf("  snprintf %%.17g loop         %9.2f\n",
           best_us(run_snprintf17, &job[0]));
    for (int k = 0; k < 2; k++)
        free((char *)job[k].body);
    return 0;
}
