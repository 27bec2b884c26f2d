/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_CFG_H
#define SS_SERVER_CFG_H

/*
 * The daemon's configuration: built-in defaults, then a JSON file, then
 * command-line flags, each overriding the one before.
 *
 * One table (config.c) names every key once; the JSON key is the flag's
 * name with '_' for '-' ("http_port" <-> --http-port), so the two can never
 * drift apart.  Unknown keys and bad values are refused with a message
 * naming the key.
 *
 * THREADS: built [init]; read-only afterwards, from any thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

typedef struct ss_config {
    char *config_path;          /* the file read, or NULL */
    char *model_repository;
    char *http_address;
    int http_port;
    char *admin_address;
    int admin_port;             /* -1 disables the admin listener */
    char *admin_token_file;
    bool admin_insecure;
    bool admin_allow_plaintext; /* admin beyond loopback without TLS */
    char *http_tls_cert_file;   /* PEM chain; with the key: HTTPS */
    char *http_tls_key_file;
    char *admin_tls_cert_file;
    char *admin_tls_key_file;
    char *tls_min_version;      /* "1.2" (default) or "1.3" */
    int threads;                /* 0: one per core */
    int http_threads;           /* HTTP loops; 0: one per serving core */
    int job_threads;            /* oneDNN threads of compression jobs */
    char *job_priority;         /* "batch" (default), "idle", "normal" */
    double job_min_share;       /* pacing (server/jobs/jobs.h); 1: off, 0 (default): serving first */
    int log_level;              /* syslog number */
    int64_t max_body_bytes;
    int64_t max_buffered_bytes; /* request bodies held, all connections */
    int64_t max_response_bytes; /* an inference answer; 0: no limit */
    int64_t max_coded_response_bytes; /* gzip/deflate only up to; 0: any */
    int64_t max_plan_bytes;     /* a compiled plan's budget; 0: the
                                 * engine's (SS_ENGINE_MAX_PLAN_BYTES, or
                                 * 4 GiB) */
    int64_t max_job_data_bytes; /* a job's data file */
    int64_t idle_release_ms;    /* an idle executor frees its buffers
                                 * after; 0: never */
    int max_header_bytes;
    int max_connections;        /* per listener, over every HTTP loop */
    int max_connections_per_ip; /* 0: no limit */
    int connection_timeout_s;   /* idle I/O */
    int keepalive_timeout_s;    /* idle between requests */
    int header_timeout_s;       /* absolute, a request's headers */
    int body_timeout_s;         /* absolute, a request's body */
    int retry_after_s;          /* Retry-After of 503 answers */
    bool reject_non_finite;     /* default of the model key of that name */
    char *role;                 /* "primary" (default) or "replica" */
    bool replica;               /* role is "replica" */
    char *primary_url;          /* named in a replica's 409; may be NULL */
    double repository_poll_s;   /* 0: start and SIGHUP only */
    double shutdown_grace_s;
    bool check_only;            /* --check-config */
} ss_config_t;

enum {
    SS_CONFIG_RUN = 0,          /* go on and start */
    SS_CONFIG_EXIT_OK = 1       /* --help or --version printed; exit 0 */
};

/* Fills cfg from defaults, the config file and argv.  Returns
 * SS_CONFIG_RUN, SS_CONFIG_EXIT_OK, or a negative code with err set (the
 * caller prints it and exits 2).  cfg must be released with
 * ss_config_close() whatever the result. */
int ss_config_load(ss_config_t *cfg, int argc, char **argv, ss_err_t *err);
void ss_config_close(ss_config_t *cfg);

/* The usage text for --help. */
void ss_config_usage(const char *prog);

#endif
