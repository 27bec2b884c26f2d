/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_UTF8_H
#define SS_COMMON_UTF8_H

/*
 * UTF-8 at the edges: text that came from a file or a client (an ONNX op
 * name, a URL, a tensor name) may hold any bytes, and an error message
 * quotes it.  Two ways out:
 *
 * - JSON wants valid UTF-8: ss_utf8_sanitize() copies text replacing each
 *   byte that does not start a valid sequence (overlong forms, surrogates,
 *   code points above U+10FFFF, a sequence cut short) with U+FFFD.
 * - A log line must stay one line and show what was there:
 *   ss_utf8_escape() writes control characters, DEL and invalid bytes as
 *   \xNN and keeps valid UTF-8 as it is.
 *
 * Both always NUL-terminate and never cut a character in two when the
 * output is full.
 *
 * THREADS: [any]; no state.
 */

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid sequence starting at s (1..4), or 0 when s[0] does
 * not start one within n bytes. */
size_t ss_utf8_seq_len(const unsigned char *s, size_t n);

/* True when the n bytes at s are valid UTF-8 (NUL counts as valid). */
bool ss_utf8_valid(const char *s, size_t n);

/* Copies the NUL-terminated src into dst (cap bytes, cap >= 1) with every
 * invalid byte replaced by U+FFFD.  Returns the length written. */
size_t ss_utf8_sanitize(char *dst, size_t cap, const char *src);

/* Copies src into dst (cap >= 1) with control characters (below 0x20 and
 * 0x7f) and invalid bytes written as \xNN.  Returns the length written. */
size_t ss_utf8_escape(char *dst, size_t cap, const char *src, size_t n);

#endif
