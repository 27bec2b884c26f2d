/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's life: start, signals, reload, graceful shutdown.
 *
 * DESIGN: the main libuv loop owns everything here: signals, the
 * registry, jobs and the admin listener.  The data plane runs on its own
 * loop threads (http_threads, one per serving core by default), which
 * call into the registry and the batchers without a global lock.
 * SIGTERM/SIGINT begin a drain: readiness turns 503 at once, the
 * listeners stop accepting, requests already received are answered, and
 * a timer polls until none is left or the grace period is over; then the
 * HTTP loop threads are stopped and joined -- before the registry is
 * freed, since they use it -- every handle is closed and uv_run()
 * returns.  A second signal cuts the drain short.  SIGHUP rescans the
 * model repository, rereads the listeners' TLS certificates and tells
 * systemd it is reloading.
 *
 * THREADS: [loop], except ss_server_uptime() [any].
 */
#include "config.h"

#include "server/server.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "common/cpus.h"
#include "common/log.h"
#include "server/notify.h"

static double
wall_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double
uptime_fn(void *arg)
{
    return ss_server_uptime(arg);
}

static double
start_time_fn(void *arg)
{
    const ss_server_t *s = arg;

    return s->start_wall;
}

static double
buffered_fn(void *arg)
{
    return (double)ss_http_budget_used(arg);
}

static int
setup_metrics(ss_server_t *s, ss_err_t *err)
{
    static const char *const build_labels[] = { "version" };
    const char *bv[] = { PACKAGE_VERSION };
    ss_metric_t *build, *reloads;

    if ((s->metrics = ss_metrics_new()) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory for metrics");
    build = ss_metrics_gauge(s->metrics, "slimserve_build_info",
                             "Build information; the value is always 1.", 1,
                             build_labels);
    reloads = ss_metrics_counter(s->metrics, "slimserve_reloads_total",
                                 "Model repository rescans (SIGHUP).", 0,
                                 NULL);
    if (build == NULL || reloads == NULL ||
        ss_metrics_gauge_fn(s->metrics, "slimserve_uptime_seconds",
                            "Seconds since the daemon started.", uptime_fn,
                            s) < 0 ||
        ss_metrics_gauge_fn(s->metrics, "slimserve_start_time_seconds",
                            "Start time of the daemon since the Unix epoch.",
                            start_time_fn, s) < 0 ||
        ss_metrics_gauge_fn(s->metrics, "slimserve_http_buffered_bytes",
                            "Request body bytes held in memory, all "
                            "listeners.", buffered_fn, s->budget) < 0 ||
        ss_http_metrics_init(s->metrics, &s->http_metrics) < 0 ||
        ss_batch_metrics_init(s->metrics, &s->batch_metrics) < 0 ||
        ss_infer_metrics_init(s->metrics, &s->infer_metrics) < 0 ||
        ss_tls_metrics_init(s->metrics, &s->tls_metrics) < 0)
        return ss_err_set(err, SS_ENOMEM, "out of memory for metrics");
    ss_series_set(ss_metric_series(build, bv), 1);
    s->s_reloads = ss_metric_series(reloads, NULL);
    return 0;
}

/* ---- shutdown ---------------------------------------------------------- */

static void
on_closed(uv_handle_t *h)
{
}

static void
finish(ss_server_t *s)
{
    ss_jobs_free(s->jobs);
    s->jobs = NULL;
    /* The loop threads use the registry: join them before it goes.  Every
     * request they handed to a batcher has been answered by now (the
     * registry is idle, or nothing was served). */
    ss_http_close(s->http);
    ss_http_close(s->admin);
    s->http = s->admin = NULL;
    ss_registry_free(s->registry);
    s->registry = NULL;
    ss_looplag_close(s->lag);
    s->lag = NULL;
    uv_close((uv_handle_t *)&s->sig_term, on_closed);
    uv_close((uv_handle_t *)&s->sig_int, on_closed);
    uv_close((uv_handle_t *)&s->sig_hup, on_closed);
    uv_close((uv_handle_t *)&s->drain_timer, on_closed);
    uv_close((uv_handle_t *)&s->poll_timer, on_closed);
}

/* [job thread] Is the data plane serving?  s->http is set before any job
 * can run (jobs are submitted through the admin listener, started after
 * it) and freed after the job thread is joined. */
static int
data_in_flight(void *arg, uint64_t *arrivals)
{
    const ss_server_t *s = arg;

    *arrivals = s->http ? ss_http_arrivals(s->http) : 0;
    return s->http ? ss_http_in_flight(s->http) : 0;
}

static int
in_flight(const ss_server_t *s)
{
    return (s->http ? ss_http_in_flight(s->http) : 0) +
           (s->admin ? ss_http_in_flight(s->admin) : 0);
}

/* Shutdown runs in phases: wait for HTTP requests (bounded by the grace
 * period), then close the registry and wait for its versions to be freed
 * (a batch in progress finishes), then close the listeners. */
static void
on_drain_tick(uv_timer_t *t)
{
    ss_server_t *s = t->data;
    int n = in_flight(s);

    if (s->drain_phase == 0) {
        if (n == 0) {
            ss_log_notice("drained: no request in flight");
        } else if (uv_now(s->loop) >= s->drain_deadline_ms) {
            ss_log_warn("grace period of %gs over with %d request(s) in "
                        "flight", s->cfg->shutdown_grace_s, n);
        } else {
            return;
        }
        /* Jobs hold version references: cancel and join them first. */
        ss_jobs_free(s->jobs);
        s->jobs = NULL;
        ss_registry_close(s->registry);
        s->drain_phase = 1;
    }
    if (s->drain_phase == 1) {
        if (!ss_registry_idle(s->registry))
            return;
        ss_log_notice("models unloaded; exiting");
        s->drain_phase = 2;
    }
    uv_timer_stop(t);
    finish(s);
}

void
ss_server_shutdown(ss_server_t *s)
{
    if (s->draining) {
        ss_log_notice("second signal: cutting the drain short");
        s->drain_deadline_ms = 0;
        return;
    }
    s->draining = true;
    uv_timer_stop(&s->poll_timer);
    ss_notify_stopping();
    ss_log_notice("shutting down: %d request(s) in flight, grace %gs",
                  in_flight(s), s->cfg->shutdown_grace_s);
    ss_http_quiesce(s->http);
    ss_http_quiesce(s->admin);
    s->drain_deadline_ms =
        uv_now(s->loop) + (uint64_t)(s->cfg->shutdown_grace_s * 1000.0);
    uv_timer_start(&s->drain_timer, on_drain_tick, 0, 10);
}

/* The repository scan of start-up or SIGHUP is done. */
static void
on_scanned(void *arg, int rc, const ss_err_t *err)
{
    ss_server_t *s = arg;

    ss_log_info("model repository %s: %d model(s) loaded",
                s->cfg->model_repository,
                ss_registry_model_count(s->registry));
    s->ready = true;
    ss_notify_ready();
}

static void
on_signal(uv_signal_t *h, int signum)
{
    ss_server_t *s = h->data;

    if (signum == SIGHUP) {
        if (s->draining)
            return;
        ss_notify_reloading();
        ss_log_notice("SIGHUP: rescanning the model repository");
        s->reloads++;
        ss_series_add(s->s_reloads, 1);
        ss_registry_scan(s->registry, on_scanned, s);
        /* Certificates are read on a pool thread and swapped in for new
         * connections; open ones keep theirs. */
        ss_tls_reload(s->http_tls, s->loop);
        ss_tls_reload(s->admin_tls, s->loop);
        return;
    }
    ss_log_notice("%s received", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    ss_server_shutdown(s);
}

/* A replica follows what the primary writes to the shared repository: new
 * versions, activations, removed models. */
static void
on_poll(uv_timer_t *t)
{
    ss_server_t *s = t->data;

    if (!s->draining)
        ss_registry_poll(s->registry);
}

/* ---- start ------------------------------------------------------------- */

/* loops 0: on the main loop (admin); else that many loop threads. */
static int
start_listener(ss_server_t *s, const char *name, const char *addr, int port,
               int loops, ss_tls_t *tls, ss_http_handler_fn fn,
               ss_http_t **out, ss_err_t *err)
{
    const ss_config_t *c = s->cfg;
    ss_http_opts_t o = {
        .name = name,
        .address = addr,
        .port = port,
        .loops = loops,
        .max_body_bytes = c->max_body_bytes,
        .max_coded_bytes = c->max_coded_response_bytes,
        .max_header_bytes = c->max_header_bytes,
        .max_connections = c->max_connections,
        /* The admin listener is for a few local operators. */
        .max_connections_per_ip = loops > 0 ? c->max_connections_per_ip : 0,
        .idle_timeout_s = c->connection_timeout_s,
        .header_timeout_s = c->header_timeout_s,
        .body_timeout_s = c->body_timeout_s,
        .keepalive_timeout_s = c->keepalive_timeout_s,
        .retry_after_s = c->retry_after_s,
        .budget = s->budget,
        .handler = fn,
        .arg = s,
        .metrics = &s->http_metrics,
        .tls = tls,
    };

    return ss_http_start(s->loop, &o, out, err);
}

int
ss_server_start(ss_server_t *s, const ss_config_t *cfg, uv_loop_t *loop,
                ss_err_t *err)
{
    cpu_set_t serve_cpus;
    int rc, loops;

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->start_wall = wall_now();
    s->start_ms = uv_now(loop);
    ss_model_config_set_reject_default(cfg->reject_non_finite);
    ss_model_config_set_response_default(cfg->max_response_bytes);
    ss_model_config_set_plan_default(cfg->max_plan_bytes);
    ss_exec_pool_set_idle_release(cfg->idle_release_ms);
    if ((s->budget = ss_http_budget_new(cfg->max_buffered_bytes)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if ((rc = setup_metrics(s, err)) < 0)
        return rc;
    if (cfg->admin_port >= 0) {
        if (cfg->admin_token_file != NULL) {
            if ((rc = ss_auth_load(&s->auth, cfg->admin_token_file, err)) < 0)
                return rc;
        } else if (!cfg->admin_insecure) {
            return ss_err_set(err, SS_EAUTH,
                              "the admin listener needs a token: give "
                              "--admin-token-file=FILE (or --admin-insecure "
                              "to serve it without one, or --admin-port=-1 "
                              "to disable it)");
        } else {
            ss_log_warn("admin listener runs WITHOUT authentication "
                        "(--admin-insecure)");
        }
    }
    /* Certificates before anything binds: a bad file fails the start
     * with a message naming it. */
    if (cfg->http_tls_cert_file != NULL &&
        (rc = ss_tls_new("http", cfg->http_tls_cert_file,
                         cfg->http_tls_key_file, cfg->tls_min_version,
                         &s->tls_metrics, &s->http_tls, err)) < 0)
        return rc;
    if (cfg->admin_port >= 0 && cfg->admin_tls_cert_file != NULL &&
        (rc = ss_tls_new("admin", cfg->admin_tls_cert_file,
                         cfg->admin_tls_key_file, cfg->tls_min_version,
                         &s->tls_metrics, &s->admin_tls, err)) < 0)
        return rc;
    if (cfg->admin_port >= 0 && cfg->admin_tls_cert_file == NULL &&
        cfg->admin_allow_plaintext)
        ss_log_warn("admin listener on %s serves plain HTTP "
                    "(admin_allow_plaintext)", cfg->admin_address);
    /* Handles first: from here on every failure goes through finish(),
     * which closes what was opened so uv_run can return. */
    uv_signal_init(loop, &s->sig_term);
    uv_signal_init(loop, &s->sig_int);
    uv_signal_init(loop, &s->sig_hup);
    uv_timer_init(loop, &s->drain_timer);
    uv_timer_init(loop, &s->poll_timer);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    s->drain_timer.data = s->poll_timer.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
    /* The admin API, the registry and jobs answer on this loop: nothing
     * may block it, and the probe shows when something does. */
    if ((rc = ss_looplag_start(loop, s->metrics, "main", 10, &s->lag,
                               err)) < 0)
        goto fail;

    {
        /* job_threads sizes both sides: the job's OpenMP team, and
         * serving (executors, default model threads, HTTP loops) for the
         * CPUs left.  Whether the sides are also pinned apart depends on
         * the job's priority (jobs.h): an idle job gives a CPU up to any
         * serving thread that wakes there, and the scheduler counts a CPU
         * that runs only idle tasks as free when it places a wake-up, so
         * serving keeps every CPU; a batch or normal job keeps its CPU
         * for its time slice, so it is fenced off on the job CPUs. */
        cpu_set_t job_cpus;
        ss_jobs_prio_t prio;
        bool split, pin;

        if ((rc = ss_jobs_prio_parse(cfg->job_priority, &prio)) < 0) {
            ss_err_set(err, rc, "'job_priority' %s", cfg->job_priority);
            goto fail;
        }
        split = ss_cpus_split(cfg->job_threads, &serve_cpus,
                              &job_cpus) == 0;
        pin = split && prio != SS_JOBS_PRIO_IDLE;
        ss_registry_opts_t ro = {
            .loop = loop,
            .repository = cfg->model_repository,
            .default_threads = cfg->threads ? cfg->threads
                                            : CPU_COUNT(&serve_cpus),
            .metrics = s->metrics,
            .batch_metrics = &s->batch_metrics,
            .cpus = pin ? &serve_cpus : NULL,
        };

        /* Executors and jobs are pinned to their sets; the loop threads
         * are not: a loop is woken for microseconds at a time, and pinned
         * to the serving CPUs it waited behind whatever else ran there
         * (other processes: up to 30 ms measured with perf sched on the
         * 2-core machine) while the job CPU was free or ran only an
         * idle-priority job, which a waking loop preempts at once. */
        if (pin)
            ss_log_info("CPUs: %d for serving executors, %d for "
                        "compression jobs (--job-threads=0 shares them "
                        "all); the loops run on any",
                        CPU_COUNT(&serve_cpus), CPU_COUNT(&job_cpus));
        else if (split)
            ss_log_info("CPUs: serving sized for %d, compression jobs "
                        "for %d, every thread on any CPU (job_priority "
                        "idle)", CPU_COUNT(&serve_cpus),
                        CPU_COUNT(&job_cpus));

        /* A replica's repository is the primary's: what looks left over
         * may be a version the primary is writing now. */
        if (!cfg->replica)
            ss_jobs_clean_repository(cfg->model_repository);
        if ((rc = ss_registry_new(&ro, &s->registry, err)) < 0)
            goto fail;
        if ((rc = ss_jobs_new(loop, s->registry, cfg->model_repository,
                              cfg->job_threads, cfg->max_job_data_bytes,
                              pin ? &job_cpus : NULL, &s->jobs, err)) < 0)
            goto fail;
        ss_jobs_set_prio(s->jobs, prio);
        ss_jobs_set_pace(s->jobs, data_in_flight, s, cfg->job_min_share);
    }

    loops = cfg->http_threads ? cfg->http_threads : CPU_COUNT(&serve_cpus);
    if ((rc = start_listener(s, "http", cfg->http_address, cfg->http_port,
                             loops, s->http_tls, ss_routes_data, &s->http,
                             err)) < 0)
        goto fail;
    if (cfg->admin_port >= 0 &&
        (rc = start_listener(s, "admin", cfg->admin_address, cfg->admin_port,
                             0, s->admin_tls, ss_routes_admin, &s->admin,
                             err)) < 0)
        goto fail;
    ss_log_info("data plane: %d HTTP loop thread(s)%s", loops,
                cfg->http_threads ? "" : " (one per serving core)");
    /* One machine-readable line, whatever the log level: tests and
     * scripts read the chosen ports from it. */
    ss_log_write(SS_LOG_NOTICE, "listening http=%s:%d admin=%s:%d",
                 cfg->http_address, ss_http_port(s->http),
                 cfg->admin_address, s->admin ? ss_http_port(s->admin) : -1);
    /* Ready (and READY=1) once the models found are loaded. */
    ss_registry_scan(s->registry, on_scanned, s);
    if (cfg->repository_poll_s > 0) {
        uint64_t ms = (uint64_t)(cfg->repository_poll_s * 1000.0);

        uv_timer_start(&s->poll_timer, on_poll, ms ? ms : 1, ms ? ms : 1);
    }
    if (cfg->repository_poll_s > 0)
        ss_log_info("role %s: repository read every %gs", cfg->role,
                    cfg->repository_poll_s);
    else
        ss_log_info("role %s: repository read at start and on SIGHUP",
                    cfg->role);
    return 0;
fail:
    finish(s);
    return rc;
}

void
ss_server_close(ss_server_t *s)
{
    ss_auth_close(&s->auth);
    /* Every listener is closed and uv_run has returned: no handshake and
     * no reload can use them any more. */
    ss_tls_free(s->http_tls);
    ss_tls_free(s->admin_tls);
    s->http_tls = s->admin_tls = NULL;
    ss_metrics_free(s->metrics);
    s->metrics = NULL;
    ss_http_budget_free(s->budget);
    s->budget = NULL;
}
