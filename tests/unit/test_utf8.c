/* SPDX-License-Identifier: Apache-2.0 */
/* common/utf8: validity by RFC 3629's table, U+FFFD replacement, log
 * escapes, and never a character cut in two at the end of the buffer. */
#include "config.h"

#include <string.h>

#include "common/utf8.h"
#include "tests/tap.h"

static void
test_valid(void)
{
    static const struct {
        const char *s;
        bool valid;
    } cases[] = {
        { "plain ascii", true },
        { "caf\xc3\xa9", true },                  /* U+00E9 */
        { "\xe2\x82\xac", true },                 /* U+20AC */
        { "\xf0\x9f\x98\x80", true },             /* U+1F600 */
        { "\xf4\x8f\xbf\xbf", true },             /* U+10FFFF */
        { "\xff\xfe", false },
        { "\xc0\x80", false },                    /* overlong NUL */
        { "\xc1\xbf", false },                    /* overlong */
        { "\xe0\x9f\xbf", false },                /* overlong */
        { "\xed\xa0\x80", false },                /* surrogate D800 */
        { "\xf0\x8f\xbf\xbf", false },            /* overlong */
        { "\xf4\x90\x80\x80", false },            /* above U+10FFFF */
        { "\xc3", false },                        /* cut short */
        { "\xe2\x82", false },
        { "\x80", false },                        /* lone continuation */
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ok(ss_utf8_valid(cases[i].s, strlen(cases[i].s)) == cases[i].valid,
           "case %zu is %svalid", i, cases[i].valid ? "" : "in");
}

static void
test_sanitize(void)
{
    char out[64], small[6];
    size_t n;

    n = ss_utf8_sanitize(out, sizeof(out), "op \xff\xfelu caf\xc3\xa9");
    is_str(out, "op \xef\xbf\xbd\xef\xbf\xbdlu caf\xc3\xa9",
           "each invalid byte becomes U+FFFD, valid text stays");
    is_int((long long)n, (long long)strlen(out), "returns the length");
    ok(ss_utf8_valid(out, n), "the result is valid");
    ss_utf8_sanitize(out, sizeof(out), "x\xc0\x80y");
    is_str(out, "x\xef\xbf\xbd\xef\xbf\xbdy", "overlong NUL replaced");
    /* 6 bytes: "ab" + a 3-byte euro sign fits (5 + NUL); a second does
     * not, and is not cut. */
    n = ss_utf8_sanitize(small, sizeof(small), "ab\xe2\x82\xac\xe2\x82\xac");
    is_str(small, "ab\xe2\x82\xac", "a character that does not fit is "
           "left out whole");
    n = ss_utf8_sanitize(small, sizeof(small), "abcd\xff");
    is_str(small, "abcd", "a replacement that does not fit is left out");
    ss_utf8_sanitize(small, 1, "abc");
    is_str(small, "", "cap 1 gives an empty string");
}

static void
test_escape(void)
{
    char out[64];
    const char in[] = "line\nforged \xff ok \xc3\xa9\x7f";

    ss_utf8_escape(out, sizeof(out), in, sizeof(in) - 1);
    is_str(out, "line\\x0aforged \\xff ok \xc3\xa9\\x7f",
           "newline, invalid byte and DEL escaped; UTF-8 kept");
    ss_utf8_escape(out, 7, "ab\xff\xff", 4);
    is_str(out, "ab\\xff", "an escape that does not fit is left out");
    ss_utf8_escape(out, sizeof(out), "a\0b", 3);
    is_str(out, "a\\x00b", "NUL inside the length is escaped");
}

int
main(void)
{
    test_valid();
    test_sanitize();
    test_escape();
    return tap_done();
}
