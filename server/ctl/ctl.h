/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_CTL_CTL_H
#define SS_SERVER_CTL_CTL_H

/*
 * What the commands of slimserve-ctl share (ctl_main.c): talking to the
 * server, printing; ctl_jobs.c the job commands and following a job;
 * optimize.c the search's command and how a search job is shown.
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
/* Member k of o as a number, NaN when it is not one. */
double ss__ctl_num(json_t *o, const char *k);

/* The job commands (ctl_jobs.c): jobs; job ID [--follow | --cancel];
 * compress MODEL METHOD... [--param K=V]... [--follow].  Exit codes. */
int ss__ctl_cmd_jobs(ss_ctl_client_t *c);
int ss__ctl_cmd_job(ss_ctl_client_t *c, int argc, char **argv);
int ss__ctl_cmd_compress(ss_ctl_client_t *c, const char *model, int argc,
                         char **argv);
/* A job id argument: > 0, or -1 when s is not one. */
long long ss__ctl_job_id(const char *s);
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
