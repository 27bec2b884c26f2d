/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_NPY_INTERNAL_H
#define SS_ENGINE_NPY_INTERNAL_H

/*
 * What npy.c shares with npz.c: a sequential byte source the .npy parser
 * pulls from (a memory buffer, a file descriptor, or a zip entry being
 * inflated), and the .npy header writer.
 */

#include <stddef.h>
#include <stdint.h>

#include "engine/io/npy.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy/.npz code assumes a little-endian host"
#endif

/* Pulls exactly n bytes into dst, or fails with a message about what. */
typedef int (*ss__npy_read_fn)(void *ctx, void *dst, size_t n,
                               const char *what, ss_err_t *err);

typedef struct ss__npy_src {
    ss__npy_read_fn read;
    void *ctx;
    /* Bytes the source can still deliver, UINT64_MAX when unknown: a header
     * that promises more data than this is refused before allocating. */
    uint64_t left;
} ss__npy_src_t;

/* Parses one .npy stream from src into *out (new data).  what names the
 * array in messages.  On success *consumed (may be NULL) is the number of
 * bytes read. */
int ss__npy_parse(ss__npy_src_t *src, const char *what, size_t max_bytes,
                  ss_tensor_t *out, uint64_t *consumed, ss_err_t *err);

/* Longest header ss__npy_header writes (8 dims of 20 digits fit). */
#define SS__NPY_HEADER_MAX 512

/* Writes the .npy v1.0 preamble and header for t into buf (at least
 * SS__NPY_HEADER_MAX bytes); returns its length, a multiple of 64.  t must
 * pass ss_npy_check_tensor. */
size_t ss__npy_header(const ss_tensor_t *t, uint8_t *buf);

/* Little-endian field access for the zip code. */
static inline uint16_t
ss__le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
ss__le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t
ss__le64(const uint8_t *p)
{
    return (uint64_t)ss__le32(p) | ((uint64_t)ss__le32(p + 4) << 32);
}

#endif
