/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "server/http/auth.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

/* The token: 4096 bytes at most, like the header line that carries it;
 * the file may add a line ending ("\r\n"). */
#define TOKEN_MAX 4096
#define FILE_MAX (TOKEN_MAX + 2)

int
ss_auth_load(ss_auth_t *a, const char *path, ss_err_t *err)
{
    char buf[FILE_MAX + 2];
    struct stat st;
    ssize_t n = 0;
    size_t len, got, i;
    int fd = -1, rc = 0;

    memset(a, 0, sizeof(*a));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        rc = ss_err_set(err, -errno, "admin token file %s: %s", path,
                        strerror(errno));
        goto done;
    }
    if (fstat(fd, &st) < 0) {
        rc = ss_err_set(err, -errno, "admin token file %s: %s", path,
                        strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ss_err_set(err, SS_EINVAL, "admin token file %s: not a regular "
                        "file", path);
        goto done;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        rc = ss_err_set(err, SS_EAUTH, "admin token file %s is accessible "
                        "by others (mode %04o): run chmod o-rwx on it", path,
                        (unsigned)(st.st_mode & 07777));
        goto done;
    }
    /* One byte more than a file may hold: a longer file is refused, never
     * cut (a cut token would still authenticate). */
    for (got = 0; got < sizeof(buf) - 1; got += (size_t)n) {
        n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n < 0) {
            rc = ss_err_set(err, -errno, "admin token file %s: %s", path,
                            strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
    }
    buf[got] = '\0';
    if (got > FILE_MAX) {
        rc = ss_err_set(err, SS_EINVAL, "admin token file %s is longer "
                        "than %d bytes: the token is one line of at most "
                        "%d bytes", path, FILE_MAX, TOKEN_MAX);
        goto done;
    }
    /* The first line, by its bytes (a NUL inside must not end it). */
    for (len = 0; len < got && buf[len] != '\n' && buf[len] != '\r'; len++)
        ;
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    if (len == 0) {
        rc = ss_err_set(err, SS_EINVAL, "admin token file %s is empty", path);
        goto done;
    }
    if (len > TOKEN_MAX) {
        rc = ss_err_set(err, SS_EINVAL, "admin token file %s: the token is "
                        "%zu bytes, more than %d", path, len, TOKEN_MAX);
        goto done;
    }
    for (i = 0; i < len; i++) {
        /* What a client can send in an Authorization header. */
        if ((unsigned char)buf[i] <= 0x20 || buf[i] == 0x7f) {
            rc = ss_err_set(err, SS_EINVAL, "admin token file %s: the token "
                            "holds a space or control character at byte "
                            "%zu", path, i);
            goto done;
        }
    }
    if ((a->token = ss_strndup(buf, len)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    a->len = len;
done:
    memset(buf, 0, sizeof(buf));
    if (fd >= 0)
        close(fd);
    return rc;
}

void
ss_auth_close(ss_auth_t *a)
{
    if (a == NULL)
        return;
    if (a->token != NULL) {
        memset(a->token, 0, a->len);
        ss_free(a->token);
    }
    a->token = NULL;
    a->len = 0;
}

/* Compares the whole token whatever the offered value looks like, so
 * the time taken does not tell how much of it matched. */
static int
same_token(const ss_auth_t *a, const unsigned char *given, size_t glen)
{
    const volatile unsigned char *g = given;
    unsigned char diff = glen != a->len;
    size_t i;

    for (i = 0; i < a->len; i++)
        diff |= (unsigned char)a->token[i] ^ (i < glen ? g[i] : 0);
    return diff == 0;
}

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes standard base64 (padding optional) into out; -1 when malformed
 * or longer than cap. */
static ssize_t
b64_decode(const char *in, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    size_t n = 0;
    int bits = 0, v;

    for (; *in && *in != '='; in++) {
        if ((v = b64_value((unsigned char)*in)) < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    while (*in == '=')
        in++;
    return *in == '\0' ? (ssize_t)n : -1;
}

int
ss_auth_check(const ss_auth_t *a, const char *header)
{
    unsigned char buf[TOKEN_MAX + 256];
    const unsigned char *colon;
    ssize_t n;
    int ok;

    if (a->token == NULL || header == NULL)
        return 0;
    if (strncasecmp(header, "Bearer ", 7) == 0)
        return same_token(a, (const unsigned char *)header + 7,
                          strlen(header + 7));
    /* A browser (the admin page) sends the token as a Basic password;
     * the user name is ignored. */
    if (strncasecmp(header, "Basic ", 6) != 0 ||
        (n = b64_decode(header + 6, buf, sizeof(buf))) < 0 ||
        (colon = memchr(buf, ':', (size_t)n)) == NULL)
        return 0;
    colon++;
    ok = same_token(a, colon, (size_t)(buf + n - colon));
    memset(buf, 0, sizeof(buf));
    return ok;
}
