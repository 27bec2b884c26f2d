/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_ERR_H
#define SS_COMMON_ERR_H

/*
 * Error codes and details.
 *
 * Recoverable failures return a negative code: -errno, or one of the
 * project's codes below.  A function that fails may also fill an optional
 * ss_err_t with one sentence that says what went wrong and where; the caller
 * logs it or returns it to a client.  ss_err_set() returns the code so a
 * failing path reads "return ss_err_set(err, SS_EINVAL, ...)".
 *
 * THREADS: everything here is [any]; an ss_err_t belongs to its caller.
 */

#include <stddef.h>

enum {
    SS_OK = 0,
    SS_EBASE = -1000,
    SS_EINVAL = -1001,      /* bad input from a user or a file */
    SS_EBADMODEL = -1002,   /* a model file that cannot be loaded */
    SS_EUNSUPP = -1003,     /* valid, but not something we can do */
    SS_EDNNL = -1004,       /* oneDNN said no */
    SS_ENOMEM = -1005,      /* an allocation failed */
    SS_ENOTFOUND = -1006,   /* unknown model, version, job, route */
    SS_ETOOBIG = -1007,     /* a body, tensor or file over a limit */
    SS_EBUSY = -1008,       /* a queue is full, try again */
    SS_ETIMEDOUT = -1009,   /* waited longer than allowed */
    SS_ENOTREADY = -1010,   /* not loaded yet, or shutting down */
    SS_EAUTH = -1011,       /* missing or wrong credentials */
    SS_EIO = -1012,         /* a read or write failed */
    SS_ECANCELED = -1013,   /* a job was cancelled */
    SS_EINTERNAL = -1014,   /* a broken invariant we survived */
    SS_ECONFLICT = -1015,   /* another operation on the same thing runs */
    SS_ELAST = -1016
};

#define SS_ERR_MSG_MAX 512

typedef struct ss_err {
    int code;
    char msg[SS_ERR_MSG_MAX];
} ss_err_t;

/* Fills err (when not NULL) and returns code.  The message is truncated to
 * fit; it never allocates. */
int ss_err_set(ss_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like ss_err_set, but keeps an existing message and prefixes it with the
 * new context ("model.onnx: " + old message). */
int ss_err_wrap(ss_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void ss_err_clear(ss_err_t *err);

/* A stable name such as "SS_EINVAL" or "ENOENT", for logs. */
const char *ss_err_name(int code);

/* A short human description of the code (not of the detail). */
const char *ss_strerror(int code);

#endif
