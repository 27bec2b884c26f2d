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
 * THREADS: a decoder belongs to its request; [loop].
 */
#include "config.h"

#include "server/http/coding.h"

#include <stdint.h>
#include <stdio.h>
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
