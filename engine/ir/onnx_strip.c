/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Weights read once: the initializers' raw_data taken out of the model
 * before protobuf-c sees it.
 *
 * DESIGN: protobuf-c copies every bytes field it unpacks, and the import
 * then copied raw_data again into the graph's tensors, so loading a
 * 346 MB ViT-B/16 held the mapped file, protobuf's copy and the graph's
 * copy at once: 1.0 GB peak RSS, 2.95x the file (issue 12).  Here one
 * walk over the wire format copies the model without the payloads of the
 * main graph's initializers' raw_data (ModelProto.graph = 7,
 * GraphProto.initializer = 5, TensorProto.raw_data = 9) and records,
 * per initializer in wire order, where its last raw_data lies in the
 * source (protobuf keeps the last of a repeated optional field, and
 * concatenates the repeated initializers of a graph field given twice,
 * in wire order: the same order as gp->initializer[]).  protobuf-c then
 * unpacks a buffer of a few hundred KB, and onnx_tensor.c copies each
 * payload from the source straight into its tensor, dropping the file's
 * pages behind it, so a load holds the weights once plus one tensor.
 * Everything else (nodes, attribute tensors, subgraphs, metadata) is
 * copied byte for byte.  A model this walk cannot parse is handed to
 * protobuf-c unchanged, which reports it as before.
 *
 * THREADS: [any]; pure functions of their arguments.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/ir/internal.h"

enum { F_GRAPH = 7, F_INITIALIZER = 5, F_RAW_DATA = 9 };

typedef struct strip {
    const uint8_t *base;        /* the whole source, for offsets */
    uint8_t *out;               /* NULL while measuring */
    size_t pos;                 /* bytes written (or measured) */
    ss__onnx_raw_t *refs;       /* NULL while measuring */
    size_t n_refs;
} strip_t;

/* Reads a varint at *p (< end); 0, or -1 if malformed. */
static int
get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    int shift;

    for (shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;

        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static void
put(strip_t *s, const void *p, size_t n)
{
    if (s->out != NULL)
        memcpy(s->out + s->pos, p, n);
    s->pos += n;
}

static void
put_varint(strip_t *s, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;

    do {
        b[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    put(s, b, n);
}

/* One field at *p: its number, wire type, and for length-delimited ones
 * the payload [*body, *body + *blen).  *p moves past it. */
static int
next_field(const uint8_t **p, const uint8_t *end, uint32_t *num, int *wt,
           const uint8_t **body, size_t *blen)
{
    uint64_t key, v;

    if (get_varint(p, end, &key) < 0 || (key >> 3) == 0
        || (key >> 3) > 536870911)      /* 2^29 - 1, protobuf's largest */
        return -1;
    *num = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    *body = NULL;
    *blen = 0;
    switch (*wt) {
    case 0:
        return get_varint(p, end, &v);
    case 1:
        if ((size_t)(end - *p) < 8)
            return -1;
        *p += 8;
        return 0;
    case 5:
        if ((size_t)(end - *p) < 4)
            return -1;
        *p += 4;
        return 0;
    case 2:
        if (get_varint(p, end, &v) < 0 || v > (uint64_t)(end - *p))
            return -1;
        *body = *p;
        *blen = (size_t)v;
        *p += v;
        return 0;
    default:    /* groups: never written by ONNX tools */
        return -1;
    }
}

/* Walks one message, writing it stripped (or measuring it). */
typedef int (*walk_fn)(strip_t *s, const uint8_t *p, size_t n);

/* Writes field num holding the message at p stripped by fn: measured
 * first, since its length prefix comes before it. */
static int
nested(strip_t *s, uint32_t num, walk_fn fn, const uint8_t *p, size_t n)
{
    strip_t m = { .base = s->base };
    int rc;

    if ((rc = fn(&m, p, n)) < 0)        /* measure */
        return rc;
    put_varint(s, (uint64_t)num << 3 | 2);
    put_varint(s, m.pos);
    return fn(s, p, n);
}

static int
walk_tensor(strip_t *s, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *f, *body;
    uint32_t num;
    size_t blen;
    int wt;

    while (p < end) {
        f = p;
        if (next_field(&p, end, &num, &wt, &body, &blen) < 0)
            return -1;
        if (num == F_RAW_DATA && wt == 2) {
            if (s->refs != NULL) {
                ss__onnx_raw_t *r = &s->refs[s->n_refs];

                r->set = 1;
                r->off = (size_t)(body - s->base);
                r->len = blen;
            }
            continue;
        }
        put(s, f, (size_t)(p - f));
    }
    return 0;
}

static int
walk_graph(strip_t *s, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *f, *body;
    uint32_t num;
    size_t blen;
    int wt;

    while (p < end) {
        f = p;
        if (next_field(&p, end, &num, &wt, &body, &blen) < 0)
            return -1;
        if (num == F_INITIALIZER && wt == 2) {
            if (nested(s, num, walk_tensor, body, blen) < 0)
                return -1;
            s->n_refs++;
            continue;
        }
        put(s, f, (size_t)(p - f));
    }
    return 0;
}

static int
walk_model(strip_t *s, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *f, *body;
    uint32_t num;
    size_t blen;
    int wt;

    while (p < end) {
        f = p;
        if (next_field(&p, end, &num, &wt, &body, &blen) < 0)
            return -1;
        if (num == F_GRAPH && wt == 2) {
            if (nested(s, num, walk_graph, body, blen) < 0)
                return -1;
            continue;
        }
        put(s, f, (size_t)(p - f));
    }
    return 0;
}

int
ss__onnx_strip(const void *buf, size_t len, ss__onnx_stripped_t *out)
{
    strip_t s = { .base = buf };
    int rc = 1;

    memset(out, 0, sizeof(*out));
    /* measure: the stripped size and the number of initializers */
    if (walk_model(&s, buf, len) < 0)
        goto done;
    if ((out->buf = ss_malloc(s.pos ? s.pos : 1)) == NULL
        || (out->refs = ss_calloc(s.n_refs + 1, sizeof(*out->refs))) == NULL) {
        rc = -1;
        goto done;
    }
    out->n_refs = s.n_refs;
    out->len = s.pos;
    s.out = out->buf;
    s.refs = out->refs;
    s.pos = 0;
    s.n_refs = 0;
    if (walk_model(&s, buf, len) < 0 || s.pos != out->len
        || s.n_refs != out->n_refs) {
        rc = 1;         /* cannot happen: the same walk twice */
        goto done;
    }
    rc = 0;
done:
    if (rc != 0)
        ss__onnx_stripped_free(out);
    return rc;
}

void
ss__onnx_stripped_free(ss__onnx_stripped_t *st)
{
    if (st == NULL)
        return;
    ss_free(st->buf);
    ss_free(st->refs);
    memset(st, 0, sizeof(*st));
}
