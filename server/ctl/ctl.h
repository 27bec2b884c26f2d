/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_CTL_CTL_H
#define SS_SERVER_CTL_CTL_H

/*
 * What the commands of slimserve-ctl share (ctl_main.c): talking to the
 * server, printing, following a job.  optimize.c holds the search's
 * command and how a search job is shown.
 *
 * THREADS: one (the program's).
 */

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "server/ctl/client.h"

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_NOANSWER = 3, EXIT_JOB = 4 };

extern bool ss__ctl_opt_json;   /* --json */

/* Prints the message and the hint; returns EXIT_USAGE. */
int ss__ctl_fail_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* One request; on 2xx *out (may be NULL) gets the parsed JSON (new);
 * else prints why and returns the exit code. */
int ss__ctl_call(ss_ctl_client_t *c, const char *method, const char *path,
                 json_t *body, json_t **out);
void ss__ctl_print_json(json_t *js);
/* prefix + the model name percent-encoded + suffix (new), or NULL. */
char *ss__ctl_path_of(const char *prefix, const char *model,
                      const char *suffix);
/* Polls job id until it ends; its exit code. */
int ss__ctl_follow(ss_ctl_client_t *c, long long id);
/* A --param value: a number, boolean or null when it parses as one,
 * else a string (new). */
json_t *ss__ctl_param_value(const char *s);

/* optimize MODEL [options] (optimize.c). */
int ss__ctl_optimize(ss_ctl_client_t *c, const char *model, int argc,
                     char **argv);
/* A running search's trials and best, appended to a progress tail. */
void ss__ctl_search_tail(json_t *job, char *tail, size_t n);
/* After a search job: trials, how it stopped, the front (nothing for
 * other jobs). */
void ss__ctl_search_summary(json_t *result);

#endif
