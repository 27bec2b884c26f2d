/* SPDX-License-Identifier: Apache-2.0 */
#include "common/utf8.h"

#include <stdio.h>
#include <string.h>

size_t
ss_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len, i;

    if (n == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;               /* a continuation byte, C0, C1, F5..FF */
    /* The second byte's range rules out overlong forms, surrogates and
     * code points above U+10FFFF (RFC 3629's table). */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

bool
ss_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n) {
        if ((k = ss_utf8_seq_len(p + i, n - i)) == 0)
            return false;
        i += k;
    }
    return true;
}

size_t
ss_utf8_sanitize(char *dst, size_t cap, const char *src)
{
    const unsigned char *p = (const unsigned char *)src;
    size_t n = strlen(src), i = 0, o = 0, k;

    while (i < n) {
        if ((k = ss_utf8_seq_len(p + i, n - i)) == 0) {
            if (o + 3 >= cap)
                break;
            memcpy(dst + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        if (o + k >= cap)
            break;
        memcpy(dst + o, p + i, k);
        o += k;
        i += k;
    }
    dst[o] = '\0';
    return o;
}

size_t
ss_utf8_escape(char *dst, size_t cap, const char *src, size_t n)
{
    const unsigned char *p = (const unsigned char *)src;
    size_t i = 0, o = 0, k;

    while (i < n) {
        k = p[i] < 0x20 || p[i] == 0x7f ? 0 : ss_utf8_seq_len(p + i, n - i);
        if (k == 0) {
            if (o + 4 >= cap)
                break;
            snprintf(dst + o, 5, "\\x%02x", p[i]);
            o += 4;
            i++;
            continue;
        }
        if (o + k >= cap)
            break;
        memcpy(dst + o, p + i, k);
        o += k;
        i += k;
    }
    dst[o] = '\0';
    return o;
}
