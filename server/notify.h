/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_NOTIFY_H
#define SS_SERVER_NOTIFY_H

/*
 * Readiness and state notifications to systemd (Type=notify).
 *
 * The daemon calls ss_notify_ready() once its listeners accept
 * connections, ss_notify_reloading() when SIGHUP starts a rescan and
 * ss_notify_ready() again when it ends, ss_notify_stopping() when a drain
 * begins.  Outside systemd ($NOTIFY_SOCKET unset) every call is a cheap
 * no-op that returns 0, so callers need no "are we under systemd" test.
 * Failures are worth a warning, never an exit: the service manager, not
 * the daemon, decides what a missed notification means.
 */

/* [any] Sends a state string such as "READY=1\nSTATUS=serving" to
 * $NOTIFY_SOCKET.  Returns 0 when sent or when NOTIFY_SOCKET is unset or
 * empty, a negative errno on failure.  Uses libsystemd's sd_notify when
 * configure found it (HAVE_LIBSYSTEMD), else ss__notify_dgram. */
int ss_notify(const char *state);

/* READY=1, STATUS=serving, MAINPID=<getpid()>. */
int ss_notify_ready(void);

/* RELOADING=1 and MONOTONIC_USEC=<CLOCK_MONOTONIC now>, which systemd 253+
 * requires to match a reload to its READY=1.  Send ss_notify_ready() when
 * the reload is over. */
int ss_notify_reloading(void);

/* STOPPING=1. */
int ss_notify_stopping(void);

/* STATUS=<printf-formatted text>, shown by "systemctl status".  Newlines in
 * the text become spaces (a newline would start a new assignment).
 * Returns what ss_notify does, or SS_ENOMEM. */
int ss_notify_status(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* [any] The notification protocol without libsystemd: one datagram with
 * the state to the AF_UNIX socket at path, in the abstract namespace when
 * path starts with '@'.  path must be absolute or abstract.  Returns 0 or a
 * negative errno (-EINVAL for a bad path).  Exposed for tests. */
int ss__notify_dgram(const char *path, const char *state);

/*
 * THREADS: everything is [any]; each call opens, uses and closes its own
 * socket and reads the environment only (never modifies it).
 */

#endif
