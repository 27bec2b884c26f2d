/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "server/http/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

#define TOKEN_MAX 4096

int
ss_auth_load(ss_auth_t *a, const char *path, ss_err_t *err)
{
    char buf[TOKEN_MAX + 1];
    struct stat st;
    ssize_t n;
    size_t len;
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
    if ((n = read(fd, buf, TOKEN_MAX)) < 0) {
        rc = ss_err_set(err, -errno, "admin token file %s: %s", path,
                        strerror(errno));
        goto done;
    }
    buf[n] = '\0';
    len = strcspn(buf, "\r\n");
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    if (len == 0) {
        rc = ss_err_set(err, SS_EINVAL, "admin token file %s is empty", path);
        goto done;
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

int
ss_auth_check(const ss_auth_t *a, const char *header)
{
    const volatile unsigned char *given;
    unsigned char diff;
    size_t glen, i;

    if (a->token == NULL || header == NULL ||
        strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    given = (const unsigned char *)header + 7;
    glen = strlen(header + 7);
    /* Walk the whole token whatever the offered value looks like. */
    diff = glen != a->len;
    for (i = 0; i < a->len; i++)
        diff |= (unsigned char)a->token[i] ^ (i < glen ? given[i] : 0);
    return diff == 0;
}
