/* SPDX-License-Identifier: Apache-2.0 */

/*
 * systemd notifications.
 *
 * DESIGN.  The protocol is one datagram of newline-separated assignments
 * sent to the AF_UNIX socket named by $NOTIFY_SOCKET, a path or, with a
 * leading '@', a name in the abstract namespace.  With libsystemd we call
 * sd_notify, which also knows transports newer than this file (vsock);
 * without it we speak the datagram protocol ourselves, which is all that
 * systemd 252 offers a service anyway.  Each call opens a fresh socket: a
 * daemon notifies a handful of times in its life, and a cached descriptor
 * would be one more thing to close across fork and exec.
 *
 * THREADS: [any]; no state.
 */

#include "config.h"

#include "server/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "common/alloc.h"
#include "common/clock.h"
#include "common/err.h"

int
ss__notify_dgram(const char *path, const char *state)
{
    struct sockaddr_un sa;
    socklen_t salen;
    size_t n;
    int fd = -1, rc = 0;

    if (path == NULL || state == NULL) {
        rc = -EINVAL;
        goto done;
    }
    n = strlen(path);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (path[0] == '@' && n >= 2 && n <= sizeof sa.sun_path) {
        /* Abstract: a leading NUL, then the name, no terminator; the
         * address length says where it ends. */
        memcpy(sa.sun_path + 1, path + 1, n - 1);
        salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else if (path[0] == '/' && n < sizeof sa.sun_path) {
        memcpy(sa.sun_path, path, n);
        salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    } else {
        rc = -EINVAL;
        goto done;
    }
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        rc = -errno;
        goto done;
    }
    while (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                  (const struct sockaddr *)&sa, salen) < 0) {
        if (errno != EINTR) {
            rc = -errno;
            goto done;
        }
    }
done:
    if (fd >= 0)
        close(fd);
    return rc;
}

int
ss_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    int rc;

    if (state == NULL)
        return -EINVAL;
    if (path == NULL || path[0] == '\0')
        return 0;
#ifdef HAVE_LIBSYSTEMD
    rc = sd_notify(0, state);
    rc = rc < 0 ? rc : 0;
#else
    rc = ss__notify_dgram(path, state);
#endif
    return rc;
}

int
ss_notify_ready(void)
{
    char msg[64];

    snprintf(msg, sizeof msg, "READY=1\nSTATUS=serving\nMAINPID=%ld",
             (long)getpid());
    return ss_notify(msg);
}

int
ss_notify_reloading(void)
{
    char msg[64];

    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)(ss_clock_mono_ns() / 1000));
    return ss_notify(msg);
}

int
ss_notify_stopping(void)
{
    return ss_notify("STOPPING=1");
}

int
ss_notify_status(const char *fmt, ...)
{
    static const char prefix[] = "STATUS=";
    va_list ap;
    char *msg = NULL, *p;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        rc = -EINVAL;
        goto done;
    }
    if ((msg = ss_malloc(sizeof prefix + (size_t)n)) == NULL) {
        rc = SS_ENOMEM;
        goto done;
    }
    memcpy(msg, prefix, sizeof prefix - 1);
    va_start(ap, fmt);
    vsnprintf(msg + sizeof prefix - 1, (size_t)n + 1, fmt, ap);
    va_end(ap);
    for (p = msg; *p != '\0'; p++)
        if (*p == '\n')
            *p = ' ';
    rc = ss_notify(msg);
done:
    ss_free(msg);
    return rc;
}
