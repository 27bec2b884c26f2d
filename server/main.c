/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve: serve ONNX models over the KServe V2 REST API.
 *
 * Exit codes: 0 after a clean shutdown (or --help, --version, a valid
 * --check-config), 1 when the daemon cannot start, 2 for a bad command
 * line or configuration.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/log.h"
#include "server/http/auth.h"
#include "server/http/tls.h"
#include "server/cfg.h"
#include "server/server.h"

static int
check_config(const ss_config_t *cfg)
{
    ss_auth_t auth;
    ss_err_t err = { 0 };

    if (cfg->admin_port >= 0 && cfg->admin_token_file != NULL) {
        if (ss_auth_load(&auth, cfg->admin_token_file, &err) < 0) {
            fprintf(stderr, "slimserve: %s\n", err.msg);
            return 2;
        }
        ss_auth_close(&auth);
    } else if (cfg->admin_port >= 0 && !cfg->admin_insecure) {
        fprintf(stderr, "slimserve: the admin listener needs "
                "--admin-token-file, --admin-insecure or --admin-port=-1\n");
        return 2;
    }
    if ((cfg->http_tls_cert_file != NULL &&
         ss_tls_check(cfg->http_tls_cert_file, cfg->http_tls_key_file,
                      &err) < 0) ||
        (cfg->admin_port >= 0 && cfg->admin_tls_cert_file != NULL &&
         ss_tls_check(cfg->admin_tls_cert_file, cfg->admin_tls_key_file,
                      &err) < 0)) {
        fprintf(stderr, "slimserve: %s\n", err.msg);
        return 2;
    }
    printf("configuration OK%s%s\n", cfg->config_path ? ": " : "",
           cfg->config_path ? cfg->config_path : "");
    return 0;
}

int
main(int argc, char **argv)
{
    ss_config_t cfg;
    ss_server_t srv;
    ss_err_t err = { 0 };
    uv_loop_t loop;
    int rc, status = 1;

    rc = ss_config_load(&cfg, argc, argv, &err);
    if (rc == SS_CONFIG_EXIT_OK) {
        status = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "slimserve: %s\nTry '%s --help'.\n", err.msg,
                argv[0]);
        status = 2;
        goto out;
    }
    if (cfg.check_only) {
        status = check_config(&cfg);
        goto out;
    }
    ss_log_init(cfg.log_level);
    /* A client that hangs up must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);

    if (uv_loop_init(&loop) < 0) {
        ss_log_error("cannot create the event loop");
        goto out;
    }
    ss_log_notice("slimserve %s starting (config %s)", PACKAGE_VERSION,
                  cfg.config_path ? cfg.config_path : "built-in defaults");
    if (ss_server_start(&srv, &cfg, &loop, &err) < 0) {
        ss_log_error("cannot start: %s", err.msg);
        uv_run(&loop, UV_RUN_DEFAULT);  /* let closed handles finish */
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
        status = 0;
        ss_log_notice("stopped");
    }
    ss_server_close(&srv);
    if (uv_loop_close(&loop) != 0)
        ss_log_warn("event loop closed with handles still open");
out:
    ss_config_close(&cfg);
    return status;
}
