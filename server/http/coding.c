/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Request body framing (Content-Length, Transfer-Encoding) and coding
 * (Content-Encoding gzip and deflate).
 *
 * DESIGN.  Framing.  libmicrohttpd 0.9.75 reads a body "chunked" when the
 * first Transfer-Encoding header is exactly that, by the first
 * Content-Length otherwise, and until the connection closes when
 * Transfer-Encoding names anything else ("gzip, chunked", "identity"):
 * such a request sat until body_timeout_s (120 s) and was cut without an
 * answer.  Two Content-Length headers that disagree were served by the
 * first, and a Content-Length beside chunked left the connection open for
 * the bytes after the chunks: both are how a proxy in front, reading the
 * other header, is made to see a different next request ("request
 * smuggling", RFC 9112 6.3 and 11.2).  So before the body is read:
 * Transfer-Encoding other than chunked is 501 when chunked is last (we do
 * not decode the codings before it; Content-Encoding is the header for a
 * compressed body) and 400 when it is not (the length cannot be known);
 * more than one Transfer-Encoding header, Content-Length beside it, or
 * differing Content-Length values are 400.  The answer closes the
 * connection, whose remaining bytes cannot be framed.
 *
 * Coding.  Triton's Python and C++ clients compress request bodies when
 * asked (request_compression_algorithm "gzip" writes gzip.compress of the
 * whole body, "deflate" zlib.compress), and Triton decodes both.  Without
 * this the compressed bytes reached the JSON parser, and the client got
 * "invalid JSON ... near '\u001F'"; any other coding was ignored and its
 * bytes parsed as if plain.  The body is decoded here as it arrives, into
 * the same buffer, the same budget and the same max_body_bytes as a plain
 * body (the access handler's sink), so the limit holds for the decoded
 * size.  The loop thread then parses what was decoded, at tens of ns a
 * byte (an 8 KB gzip of 8 MB of blanks held one loop 200-440 ms on the
 * loaded 2-vCPU machine before its 400), so a body may decode to at most
 * SS__HTTP_MAX_RATIO times the bytes sent past its first
 * SS__HTTP_RATIO_FREE: deflate reaches ~1000x, JSON tensors 3-20x, float
 * bytes less; a body past that is 413 with a message saying so, and a
 * client sends it plain.  zlib's automatic header
 * detection (windowBits 15 + 32) reads both gzip and zlib streams;
 * concatenated gzip members are decoded one after the other, as gzip(1)
 * and Python's gzip.decompress do.  A raw deflate stream without the zlib
 * header is refused (400), as is a stream cut short or trailing junk.
 * Another coding is answered 415 with Accept-Encoding naming these two
 * (RFC 9110, 15.5.16).
 *
 * Answers.  tritonclient's response_compression_algorithm sends
 * Accept-Encoding: gzip or deflate, and reads a coded answer.  The
 * request's Accept-Encoding is read on the loop when it arrives
 * (ss__http_accept: q-values, "*", q=0 refusing a coding); an answer of
 * SS__HTTP_GZIP_MIN bytes or more is then coded, as one zlib call at
 * level 1, by the thread that gives it: an inference answer on the
 * executor that encoded it, so the loop never codes a large body; the
 * loop codes its own answers (metadata, metrics, errors) up to
 * SS__HTTP_GZIP_LOOP_MAX only.  Level 1 took 46 ms per MB of FP32 JSON
 * text (2.1x smaller) and 110 ms per MB of binary floats (1.08x) on the
 * 2-vCPU EPYC at load 17, level 6 six times as long for 10% more; so the
 * loop's share is ~3 ms at most at that load.  A coded answer that is
 * not shorter is not sent coded.
 *
 * THREADS: a decoder belongs to its request; [loop].  Answers: [any].
 */
#include "config.h"

#include "server/http/coding.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "common/alloc.h"
#include "common/err.h"

#define OUT_CHUNK 16384

struct ss__http_inflate {
    z_stream zs;
    bool ended;                 /* the last stream ended */
    uint64_t in, out;           /* bytes fed, bytes decoded */
};

void
ss__http_framing_add(ss__http_framing_t *f, const char *name,
                     const char *value)
{
    if (value == NULL)
        value = "";
    if (strcasecmp(name, "Content-Length") == 0) {
        if (f->n_length++ == 0)
            f->length = value;
        else if (strcmp(f->length, value) != 0)
            f->lengths_differ = true;
    } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
        if (f->n_transfer++ == 0)
            f->transfer = value;
    }
}

/* [p, end) without the blanks around it. */
static void
trim(const char **p, const char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t'))
        (*p)++;
    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
}

int
ss__http_framing_check(const ss__http_framing_t *f, char *msg, size_t len)
{
    const char *p, *end, *last;

    if (f->lengths_differ) {
        snprintf(msg, len, "conflicting Content-Length headers");
        return 400;
    }
    if (f->n_transfer == 0)
        return 0;
    if (f->n_transfer > 1) {
        snprintf(msg, len, "more than one Transfer-Encoding header");
        return 400;
    }
    if (f->n_length > 0) {
        snprintf(msg, len, "both Content-Length and Transfer-Encoding");
        return 400;
    }
    p = f->transfer;
    end = p + strlen(p);
    trim(&p, &end);
    last = end;
    while (last > p && last[-1] != ',')
        last--;
    trim(&last, &end);
    if (end - last != 7 || strncasecmp(last, "chunked", 7) != 0) {
        snprintf(msg, len, "Transfer-Encoding '%s' does not end in "
                 "chunked: the body's length is unknown", f->transfer);
        return 400;
    }
    if (last != p) {             /* codings before chunked */
        snprintf(msg, len, "Transfer-Encoding '%s' is not supported; send "
                 "chunked alone (Content-Encoding gzip or deflate for a "
                 "compressed body)", f->transfer);
        return 501;
    }
    return 0;
}

ss__http_coding_t
ss__http_coding(const char *value)
{
    const char *p = value, *end;
    size_t n;

    if (value == NULL)
        return SS__HTTP_CODING_IDENTITY;
    while (*p == ' ' || *p == '\t')
        p++;
    end = p + strlen(p);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    n = (size_t)(end - p);
    if (n == 0 || (n == 8 && strncasecmp(p, "identity", 8) == 0))
        return SS__HTTP_CODING_IDENTITY;
    if ((n == 4 && strncasecmp(p, "gzip", 4) == 0) ||
        (n == 6 && strncasecmp(p, "x-gzip", 6) == 0) ||
        (n == 7 && strncasecmp(p, "deflate", 7) == 0))
        return SS__HTTP_CODING_ZLIB;
    /* A list ("gzip, gzip") would mean decoding twice: no client does. */
    return SS__HTTP_CODING_UNSUPPORTED;
}

ss__http_inflate_t *
ss__http_inflate_new(void)
{
    ss__http_inflate_t *z = ss_calloc(1, sizeof(*z));

    if (z == NULL)
        return NULL;
    if (inflateInit2(&z->zs, MAX_WBITS + 32) != Z_OK) {
        ss_free(z);
        return NULL;
    }
    z->ended = true;            /* nothing fed: an empty body is complete */
    return z;
}

void
ss__http_inflate_free(ss__http_inflate_t *z)
{
    if (z == NULL)
        return;
    inflateEnd(&z->zs);
    ss_free(z);
}

int
ss__http_inflate_feed(ss__http_inflate_t *z, const char *in, size_t n,
                      ss__http_sink_fn sink, void *arg, char *msg,
                      size_t len)
{
    unsigned char out[OUT_CHUNK];
    int zr;

    /* Bodies are at most max_body_bytes, but zlib counts in uInt. */
    while (n > 0) {
        size_t step = n > (size_t)1 << 30 ? (size_t)1 << 30 : n;

        z->zs.next_in = (unsigned char *)(uintptr_t)in;
        z->zs.avail_in = (uInt)step;
        z->in += step;
        in += step;
        n -= step;
        for (;;) {
            size_t got;
            int rc;

            if (z->ended) {
                if (z->zs.avail_in == 0)
                    break;
                /* The first stream, or the next gzip member. */
                if (inflateReset(&z->zs) != Z_OK) {
                    snprintf(msg, len, "cannot restart the decoder");
                    return SS_EINVAL;
                }
                z->ended = false;
            }
            z->zs.next_out = out;
            z->zs.avail_out = sizeof(out);
            zr = inflate(&z->zs, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
                snprintf(msg, len, "the body is not valid gzip or deflate "
                         "data (zlib: %s)",
                         z->zs.msg ? z->zs.msg : zError(zr));
                return SS_EINVAL;
            }
            got = sizeof(out) - z->zs.avail_out;
            z->out += got;
            if (z->out > SS__HTTP_RATIO_FREE &&
                z->out / SS__HTTP_MAX_RATIO > z->in) {
                snprintf(msg, len, "the body decodes to more than %d times "
                         "the %llu bytes sent; send it without "
                         "Content-Encoding", SS__HTTP_MAX_RATIO,
                         (unsigned long long)z->in);
                return SS_ETOOBIG;
            }
            if (got > 0 && (rc = sink(arg, (const char *)out, got)) < 0)
                return rc;
            if (zr == Z_STREAM_END) {
                z->ended = true;
                continue;
            }
            /* A full buffer may leave output inside zlib: call again. */
            if (zr == Z_BUF_ERROR ||
                (z->zs.avail_in == 0 && got < sizeof(out)))
                break;
        }
    }
    return 0;
}

bool
ss__http_inflate_done(const ss__http_inflate_t *z)
{
    return z->ended;
}

/* One Accept-Encoding element's q (RFC 9110 12.4.2): 1 without one, -1
 * when it is malformed (the element is then passed over). */
static double
qvalue(const char *p, const char *end)
{
    double q = 1.0;

    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));

        if (semi == NULL)
            break;
        p = semi + 1;
        p += strspn(p, " \t");
        if ((*p == 'q' || *p == 'Q') && p + 1 < end && p[1] == '=') {
            char buf[8], *e;
            size_t n = strcspn(p + 2, " \t;,");

            if (n == 0 || n >= sizeof(buf))
                return -1;
            memcpy(buf, p + 2, n);
            buf[n] = '\0';
            q = strtod(buf, &e);
            if (*e != '\0' || !(q >= 0 && q <= 1))
                return -1;
        }
    }
    return q;
}

ss__http_answer_t
ss__http_accept(const char *value)
{
    /* q of gzip, deflate and "*"; -1: not named */
    double q[3] = { -1, -1, -1 };
    const char *p = value;

    while (p != NULL && *p != '\0') {
        const char *end = p + strcspn(p, ","), *tok = p + strspn(p, " \t");
        size_t n = strcspn(tok, " \t;,");
        int k = -1;

        if ((n == 4 && strncasecmp(tok, "gzip", 4) == 0)
            || (n == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
            k = 0;
        else if (n == 7 && strncasecmp(tok, "deflate", 7) == 0)
            k = 1;
        else if (n == 1 && *tok == '*')
            k = 2;
        if (k >= 0) {
            double v = qvalue(tok + n, end);

            if (v >= 0)
                q[k] = v;
        }
        p = *end == ',' ? end + 1 : NULL;
    }
    /* A coding not named takes "*"'s q; gzip wins a tie. */
    for (int k = 0; k < 2; k++)
        if (q[k] < 0)
            q[k] = q[2] < 0 ? 0 : q[2];
    if (q[0] > 0 && q[0] >= q[1])
        return SS__HTTP_ANSWER_GZIP;
    return q[1] > 0 ? SS__HTTP_ANSWER_DEFLATE : SS__HTTP_ANSWER_IDENTITY;
}

const char *
ss__http_answer_name(ss__http_answer_t a)
{
    return a == SS__HTTP_ANSWER_GZIP ? "gzip"
           : a == SS__HTTP_ANSWER_DEFLATE ? "deflate" : "identity";
}

int
ss__http_compress(ss__http_answer_t a, const char *in, size_t n, char **out,
                  size_t *out_len)
{
    z_stream z;
    char *buf = NULL;
    size_t cap;
    int rc = -1;

    *out = NULL;
    *out_len = 0;
    /* one call of deflate: its counts are 32 bits */
    if (a == SS__HTTP_ANSWER_IDENTITY || n > (size_t)1 << 31)
        return -1;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, SS__HTTP_GZIP_LEVEL, Z_DEFLATED,
                     a == SS__HTTP_ANSWER_GZIP ? 15 + 16 : 15, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    /* Only a smaller answer is worth sending coded. */
    cap = n - 1;
    if ((buf = ss_malloc(cap)) == NULL)
        goto done;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        goto done;
    *out = buf;
    *out_len = cap - z.avail_out;
    buf = NULL;
    rc = 0;
done:
    deflateEnd(&z);
    ss_free(buf);
    return rc;
}
