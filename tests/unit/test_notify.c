/* SPDX-License-Identifier: Apache-2.0 */
/*
 * systemd notifications: we play the service manager, binding the datagram
 * socket that $NOTIFY_SOCKET names (a path, then an abstract name), and
 * read back what each call sent.  The libsystemd-free path
 * (ss__notify_dgram) is tested directly as well, whichever one ss_notify
 * uses in this build.
 */
#include "config.h"

#include "server/notify.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/tap.h"

static char got[4096];

/* Binds a datagram socket to path, or to an abstract name when path
 * starts with '@'.  Returns the descriptor or -1. */
static int
listen_at(const char *path)
{
    struct sockaddr_un sa;
    size_t n = strlen(path);
    socklen_t len;
    int fd;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (n >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';
        len--; /* abstract names carry no terminator */
    }
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The next datagram on fd within timeout_ms, in got[]; "" when none. */
static const char *
next_msg(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;

    got[0] = '\0';
    if (poll(&p, 1, timeout_ms) == 1 &&
        (n = recv(fd, got, sizeof got - 1, MSG_DONTWAIT)) >= 0)
        got[n] = '\0';
    return got;
}

static unsigned long long
now_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL +
           (unsigned long long)ts.tv_nsec / 1000ULL;
}

static void
test_messages(int fd)
{
    char want[128];
    unsigned long long t0, t1, t;
    int rc;

    is_int(ss_notify("READY=1\nSTATUS=x"), 0, "ss_notify returns 0");
    is_str(next_msg(fd, 2000), "READY=1\nSTATUS=x", "raw state delivered");

    is_int(ss_notify_ready(), 0, "ss_notify_ready returns 0");
    snprintf(want, sizeof want, "READY=1\nSTATUS=serving\nMAINPID=%ld",
             (long)getpid());
    is_str(next_msg(fd, 2000), want, "READY=1 with STATUS and MAINPID");

    t0 = now_usec();
    rc = ss_notify_reloading();
    t1 = now_usec();
    is_int(rc, 0, "ss_notify_reloading returns 0");
    next_msg(fd, 2000);
    ok(sscanf(got, "RELOADING=1\nMONOTONIC_USEC=%llu", &t) == 1 &&
           t >= t0 && t <= t1 && strchr(got, '\n') == strrchr(got, '\n'),
       "RELOADING=1 with MONOTONIC_USEC in [%llu, %llu]", t0, t1);

    is_int(ss_notify_stopping(), 0, "ss_notify_stopping returns 0");
    is_str(next_msg(fd, 2000), "STOPPING=1", "STOPPING=1");

    is_int(ss_notify_status("loaded %d models\nof %s", 3, "4"), 0,
           "ss_notify_status returns 0");
    is_str(next_msg(fd, 2000), "STATUS=loaded 3 models of 4",
           "STATUS formatted, newline flattened");
}

int
main(void)
{
    char dir[] = "/tmp/ss-notify-XXXXXX", path[256], gone[256];
    char abstract[108], longpath[200];
    int fd = -1, afd = -1, gfd;

    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp: %s", strerror(errno));
        return tap_done();
    }
    snprintf(path, sizeof path, "%s/notify", dir);
    snprintf(gone, sizeof gone, "%s/gone", dir);
    snprintf(abstract, sizeof abstract, "@slimserve-test-%ld-%ld",
             (long)getpid(), (long)now_usec());
    fd = listen_at(path);
    afd = listen_at(abstract);
    ok(fd >= 0 && afd >= 0, "bound %s and %s", path, abstract);
    tap_diag("ss_notify uses %s",
#ifdef HAVE_LIBSYSTEMD
             "libsystemd's sd_notify"
#else
             "the built-in datagram protocol"
#endif
    );

    setenv("NOTIFY_SOCKET", path, 1);
    test_messages(fd);
    setenv("NOTIFY_SOCKET", abstract, 1);
    test_messages(afd);

    /* The fallback, whatever ss_notify uses here. */
    is_int(ss__notify_dgram(path, "WATCHDOG=1"), 0, "dgram to a path");
    is_str(next_msg(fd, 2000), "WATCHDOG=1", "dgram path message");
    is_int(ss__notify_dgram(abstract, "READY=1\nSTATUS=a b"), 0,
           "dgram to an abstract name");
    is_str(next_msg(afd, 2000), "READY=1\nSTATUS=a b",
           "dgram abstract message");
    is_int(ss__notify_dgram("relative/sock", "A=1"), -EINVAL,
           "relative path refused");
    is_int(ss__notify_dgram("@", "A=1"), -EINVAL, "empty abstract name");
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    is_int(ss__notify_dgram(longpath, "A=1"), -EINVAL, "path too long");
    is_int(ss__notify_dgram(gone, "A=1"), -ENOENT, "no socket there");
    gfd = listen_at(gone);
    if (gfd >= 0)
        close(gfd); /* the file stays, nobody listens */
    is_int(ss__notify_dgram(gone, "A=1"), -ECONNREFUSED,
           "socket file without a listener");

    setenv("NOTIFY_SOCKET", gone, 1);
    ok(ss_notify_ready() < 0, "ss_notify reports a dead socket");

    unsetenv("NOTIFY_SOCKET");
    is_int(ss_notify_ready(), 0, "unset: ss_notify_ready returns 0");
    is_int(ss_notify_status("x"), 0, "unset: ss_notify_status returns 0");
    setenv("NOTIFY_SOCKET", "", 1);
    is_int(ss_notify_stopping(), 0, "empty: ss_notify_stopping returns 0");
    is_str(next_msg(fd, 100), "", "nothing sent to the path socket");
    is_str(next_msg(afd, 100), "", "nothing sent to the abstract socket");

    if (fd >= 0)
        close(fd);
    if (afd >= 0)
        close(afd);
    unlink(path);
    unlink(gone);
    rmdir(dir);
    return tap_done();
}
