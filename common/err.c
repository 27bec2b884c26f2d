/* SPDX-License-Identifier: Apache-2.0 */
#include "common/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void
vset(ss_err_t *err, int code, const char *prefix, const char *fmt,
     va_list ap)
{
    char tmp[SS_ERR_MSG_MAX];
    int n;

    err->code = code;
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    if (n < 0)
        tmp[0] = '\0';
    if (prefix != NULL && prefix[0] != '\0')
        snprintf(err->msg, sizeof(err->msg), "%s: %s", tmp, prefix);
    else
        snprintf(err->msg, sizeof(err->msg), "%s", tmp);
}

int
ss_err_set(ss_err_t *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    vset(err, code, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int
ss_err_wrap(ss_err_t *err, int code, const char *fmt, ...)
{
    char old[SS_ERR_MSG_MAX];
    va_list ap;

    if (err == NULL)
        return code;
    snprintf(old, sizeof(old), "%s", err->msg);
    va_start(ap, fmt);
    vset(err, code, old, fmt, ap);
    va_end(ap);
    return code;
}

void
ss_err_clear(ss_err_t *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

static const struct {
    int code;
    const char *name;
    const char *text;
} codes[] = {
    { SS_OK, "SS_OK", "success" },
    { SS_EINVAL, "SS_EINVAL", "invalid input" },
    { SS_EBADMODEL, "SS_EBADMODEL", "bad model" },
    { SS_EUNSUPP, "SS_EUNSUPP", "unsupported" },
    { SS_EDNNL, "SS_EDNNL", "oneDNN error" },
    { SS_ENOMEM, "SS_ENOMEM", "out of memory" },
    { SS_ENOTFOUND, "SS_ENOTFOUND", "not found" },
    { SS_ETOOBIG, "SS_ETOOBIG", "too large" },
    { SS_EBUSY, "SS_EBUSY", "busy" },
    { SS_ETIMEDOUT, "SS_ETIMEDOUT", "timed out" },
    { SS_ENOTREADY, "SS_ENOTREADY", "not ready" },
    { SS_EAUTH, "SS_EAUTH", "unauthorized" },
    { SS_EIO, "SS_EIO", "I/O error" },
    { SS_ECANCELED, "SS_ECANCELED", "cancelled" },
    { SS_EINTERNAL, "SS_EINTERNAL", "internal error" },
    { SS_ECONFLICT, "SS_ECONFLICT", "conflict" },
};

const char *
ss_err_name(int code)
{
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].name;
    if (code < 0 && code > SS_EBASE) {
        switch (-code) {
        case ENOENT: return "ENOENT";
        case EACCES: return "EACCES";
        case EEXIST: return "EEXIST";
        case ENOMEM: return "ENOMEM";
        case EINVAL: return "EINVAL";
        case EADDRINUSE: return "EADDRINUSE";
        case EPERM: return "EPERM";
        case EIO: return "EIO";
        default: return "ERRNO";
        }
    }
    return "SS_EUNKNOWN";
}

const char *
ss_strerror(int code)
{
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].text;
    if (code < 0 && code > SS_EBASE)
        return strerror(-code);
    return "unknown error";
}
