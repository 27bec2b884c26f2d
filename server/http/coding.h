/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_HTTP_CODING_H
#define SS_SERVER_HTTP_CODING_H

/*
 * How a request's body is framed (Content-Length, Transfer-Encoding) and
 * coded (Content-Encoding gzip or deflate, tritonclient's
 * request_compression_algorithm, decoded as it arrives).  Internal to
 * server/http.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ss__http_inflate ss__http_inflate_t;

/* The framing headers of a request, gathered one header at a time. */
typedef struct ss__http_framing {
    int n_length, n_transfer;   /* Content-Length, Transfer-Encoding */
    const char *length;         /* the first of each; borrowed */
    const char *transfer;
    bool lengths_differ;
} ss__http_framing_t;

/* Adds one request header (any: others are passed over). */
void ss__http_framing_add(ss__http_framing_t *f, const char *name,
                          const char *value);

/* 0 when the body's length is known one way only, else the status to
 * answer (400, 501) before reading the body, with msg (len bytes). */
int ss__http_framing_check(const ss__http_framing_t *f, char *msg,
                           size_t len);

/* What a Content-Encoding value asks for. */
typedef enum {
    SS__HTTP_CODING_IDENTITY = 0,   /* absent, empty or "identity" */
    SS__HTTP_CODING_ZLIB,           /* gzip, x-gzip or deflate */
    SS__HTTP_CODING_UNSUPPORTED     /* anything else, or a list */
} ss__http_coding_t;

/* A compressed body may decode to at most SS__HTTP_MAX_RATIO times the
 * bytes sent once past SS__HTTP_RATIO_FREE decoded bytes (coding.c). */
#define SS__HTTP_MAX_RATIO 64
#define SS__HTTP_RATIO_FREE ((uint64_t)1 << 20)

/* The codings a 415 names in Accept-Encoding. */
#define SS__HTTP_CODINGS "gzip, deflate"

ss__http_coding_t ss__http_coding(const char *value);

/* Answers (coding.c, "Answers"): the coding an Accept-Encoding value
 * (NULL: none) prefers by q-values among gzip (x-gzip) and deflate, "*"
 * standing for those it does not name; identity when neither is
 * acceptable (q=0, or not named). */
typedef enum {
    SS__HTTP_ANSWER_IDENTITY = 0,
    SS__HTTP_ANSWER_GZIP,
    SS__HTTP_ANSWER_DEFLATE
} ss__http_answer_t;

/* Bodies shorter than this go as they are; longer ones are coded on the
 * loop thread only up to SS__HTTP_GZIP_LOOP_MAX (an inference answer is
 * coded on the executor that wrote it, up to the listener's
 * max_coded_bytes: the daemon's max_coded_response_bytes).  Level 1. */
#define SS__HTTP_GZIP_MIN 1024
#define SS__HTTP_GZIP_LOOP_MAX ((size_t)64 << 10)
#define SS__HTTP_GZIP_LEVEL 1

ss__http_answer_t ss__http_accept(const char *value);
/* "gzip", "deflate" or "identity". */
const char *ss__http_answer_name(ss__http_answer_t a);
/* in (n bytes) coded as a: 0 with *out (ss_malloc; the caller frees) and
 * *out_len when that is shorter than n, else -1 (identity, no memory, or
 * no gain: the caller sends in as it is).  [any] */
int ss__http_compress(ss__http_answer_t a, const char *in, size_t n,
                      char **out, size_t *out_len);

/* A new decoder, or NULL without memory. */
ss__http_inflate_t *ss__http_inflate_new(void);
void ss__http_inflate_free(ss__http_inflate_t *z);

/* Where decoded bytes go: 0, or a negative code that stops the decoding
 * and is returned by ss__http_inflate_feed. */
typedef int (*ss__http_sink_fn)(void *arg, const char *data, size_t n);

/* Decodes n more body bytes into sink.  Returns 0, the sink's negative
 * code, or with msg (len bytes): SS_EINVAL, the encoded data is wrong;
 * SS_ETOOBIG, it decodes past SS__HTTP_MAX_RATIO. */
int ss__http_inflate_feed(ss__http_inflate_t *z, const char *in, size_t n,
                          ss__http_sink_fn sink, void *arg, char *msg,
                          size_t len);

/* At the end of the body: true when the encoded data was complete. */
bool ss__http_inflate_done(const ss__http_inflate_t *z);

#endif
