/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the daemon's configuration (ss_config_load,
 * server/cfg.c): the config file's JSON and the flags that override it.
 *
 * Input: the config file's bytes, then optionally a NUL and NUL-separated
 * flags.  The file is a memfd the daemon's own loader opens by path
 * (/proc/self/fd/N, given as --config=), so the bytes go through exactly
 * what a file on disk does; nothing is left behind between runs (the fd is
 * closed, the config released).  Flags that would read another file or
 * print (--config, --help, --version) are dropped.  A refused config must
 * say why; an accepted one must hold every value within the bounds the
 * daemon documents and the listeners assume.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "server/cfg.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
dropped(const char *a)
{
    return strncmp(a, "--config", 8) == 0 || strcmp(a, "--help") == 0 ||
           strcmp(a, "-h") == 0 || strcmp(a, "--version") == 0;
}

static void
check(const ss_config_t *c)
{
    if (c->model_repository == NULL || c->model_repository[0] == '\0' ||
        c->http_address == NULL || c->http_address[0] == '\0' ||
        c->admin_address == NULL || c->admin_address[0] == '\0' ||
        (c->admin_token_file != NULL && c->admin_token_file[0] == '\0'))
        __builtin_trap();
    if (c->http_port < 0 || c->http_port > 65535 || c->admin_port < -1 ||
        c->admin_port > 65535 ||
        (c->admin_port > 0 && c->admin_port == c->http_port))
        __builtin_trap();
    if (c->threads < 0 || c->threads > 1024 || c->http_threads < 0 ||
        c->http_threads > 1024 || c->job_threads < 0 ||
        c->job_threads > 1024)
        __builtin_trap();
    if (c->log_level < SS_LOG_ERR || c->log_level > SS_LOG_DEBUG)
        __builtin_trap();
    if (c->max_body_bytes < 1 || c->max_buffered_bytes < 0 ||
        (c->max_buffered_bytes > 0 &&
         c->max_buffered_bytes < c->max_body_bytes) ||
        c->max_job_data_bytes < 1 || c->max_header_bytes < 1024 ||
        c->max_connections < 1 || c->max_connections_per_ip < 0)
        __builtin_trap();
    if (c->connection_timeout_s < 0 || c->keepalive_timeout_s < 0 ||
        c->header_timeout_s < 0 || c->body_timeout_s < 0 ||
        c->retry_after_s < 1)
        __builtin_trap();
    if (!(c->shutdown_grace_s >= 0 && c->shutdown_grace_s <= 3600))
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    char *argv[MAX_ARGS + 3], opt[64], *flags = NULL;
    ss_config_t cfg;
    ss_err_t err;
    int fd, argc = 0, rc;

    if ((fd = memfd_create("fuzz_cfg", 0)) < 0)
        abort();
    if (flen > 0 && write(fd, data, flen) != (ssize_t)flen)
        abort();
    snprintf(opt, sizeof(opt), "--config=/proc/self/fd/%d", fd);
    argv[argc++] = "slimserve";
    argv[argc++] = opt;
    if (nul != NULL) {
        /* A NUL-terminated copy, so every flag is a C string. */
        size_t n = size - flen - 1;

        if ((flags = malloc(n + 1)) == NULL)
            abort();
        memcpy(flags, nul + 1, n);
        flags[n] = '\0';
        for (char *p = flags; p <= flags + n && argc < MAX_ARGS + 2;
             p += strlen(p) + 1)
            if (!dropped(p))
                argv[argc++] = p;
    }
    argv[argc] = NULL;
    err.msg[0] = '\0';
    rc = ss_config_load(&cfg, argc, argv, &err);
    if (rc < 0 && err.msg[0] == '\0')
        __builtin_trap();
    if (rc == SS_CONFIG_RUN)
        check(&cfg);
    else if (rc >= 0)
        __builtin_trap();       /* EXIT_OK: --help/--version were dropped */
    ss_config_close(&cfg);
    free(flags);
    close(fd);
    return 0;
}
