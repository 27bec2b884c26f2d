/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control plane, on its own listener (loopback by default).
 *
 * Every request is authenticated first: "Authorization: Bearer <token>",
 * 401 with a WWW-Authenticate challenge otherwise.  Only when the daemon
 * was started with --admin-insecure is there no token to check.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#include "common/log.h"
#include "common/utf8.h"
#include "server/http/router.h"
#include "server/http/ui.h"
#include "server/model/adapter.h"
#include "server/server.h"

static void
status(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    ss_req_respond_json(
        r, 200,
        json_pack("{s:s,s:s,s:f,s:b,s:b,s:{s:i,s:i},s:{s:i,s:i},s:s,s:i,"
                  "s:I,s:b,s:s,s:f}",
                  "name", PACKAGE_NAME, "version", PACKAGE_VERSION,
                  "uptime_seconds", ss_server_uptime(s), "ready",
                  s->ready && !s->draining, "draining", s->draining,
                  "ports", "http", ss_http_port(s->http), "admin",
                  s->admin ? ss_http_port(s->admin) : -1,
                  "in_flight", "http", ss_http_in_flight(s->http), "admin",
                  s->admin ? ss_http_in_flight(s->admin) : 0,
                  "model_repository", s->cfg->model_repository,
                  "models_loaded", ss_registry_model_count(s->registry), "reloads",
                  (json_int_t)s->reloads, "auth", s->auth.token != NULL,
                  "role", s->cfg->role, "repository_poll_s",
                  s->cfg->repository_poll_s));
}

/* ---- registry operations: answered when the registry calls back ---- */

typedef enum { OP_LOAD, OP_UNLOAD, OP_ACTIVATE, OP_ROLLBACK } op_kind_t;

/* One registry operation on behalf of a request.  The registry may call
 * back before the call returns (nothing to wait for) or later, from the
 * loop; in_handler tells the two apart. */
typedef struct op {
    ss_req_t *req;
    bool in_handler;
    bool done;
    int rc;
    ss_err_t err;
} op_t;

/* {"error": msg} with msg made valid UTF-8 (it may quote a model file). */
static json_t *
error_json(const char *msg)
{
    char buf[SS_ERR_MSG_MAX * 3];

    ss_utf8_sanitize(buf, sizeof(buf), msg);
    return json_pack("{s:s}", "error", buf);
}

static char *
op_body(const op_t *op, size_t *len)
{
    json_t *j = op->rc == 0 ? json_object() : error_json(op->err.msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    *len = text ? strlen(text) : 0;
    return text;
}

static void
op_cb(void *arg, int rc, const ss_err_t *err)
{
    op_t *op = arg;
    size_t len;
    char *body;

    op->rc = rc;
    if (err != NULL)
        op->err = *err;
    if (op->in_handler) {
        op->done = true;
        return;
    }
    body = op_body(op, &len);
    ss_req_finish(op->req, ss_http_status_of(rc), "application/json", body,
                  len);
    ss_free(op);
}

/* Starts the operation and answers at once when it failed or completed
 * synchronously; otherwise parks the request until op_cb. */
static void
run_op(ss_req_t *r, ss_server_t *s, op_kind_t kind, const char *model,
       int64_t version, json_t *override)
{
    op_t *op = ss_calloc(1, sizeof(*op));
    ss_err_t err = { 0 };
    size_t len;
    int rc;

    if (op == NULL) {
        ss_req_fail(r, SS_ENOMEM, "out of memory");
        return;
    }
    op->req = r;
    op->in_handler = true;
    switch (kind) {
    case OP_LOAD:
        rc = ss_registry_load(s->registry, model, override, op_cb, op, &err);
        break;
    case OP_UNLOAD:
        rc = ss_registry_unload(s->registry, model, op_cb, op, &err);
        break;
    case OP_ACTIVATE:
        rc = ss_registry_activate(s->registry, model, version, op_cb, op,
                                  &err);
        break;
    default:
        rc = ss_registry_rollback(s->registry, model, op_cb, op, &err);
        break;
    }
    op->in_handler = false;
    if (rc < 0) {
        ss_req_fail(r, rc, "%s", err.msg);
        ss_free(op);
    } else if (op->done) {
        char *body = op_body(op, &len);

        ss_req_respond(r, ss_http_status_of(op->rc), "application/json",
                       body, len);
        ss_free(op);
    } else {
        ss_req_suspend(r);
    }
}

/* Parses an optional JSON body; NULL body text is an empty object. */
static json_t *
body_json(ss_req_t *r)
{
    size_t len;
    const char *b = ss_req_body(r, &len);
    json_error_t je;
    json_t *j;

    if (len == 0)
        return json_object();
    j = json_loadb(b, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        ss_req_fail(r, SS_EINVAL, "request body: %s",
                    j ? "must be a JSON object" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The registry reads the repository on a pool thread and calls back on
 * the loop: the request waits suspended. */
static void
json_done(void *arg, int rc, json_t *value, const ss_err_t *err)
{
    ss_req_t *r = arg;
    json_t *j = rc == 0 ? value : error_json(err ? err->msg : "failed");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (text == NULL)
        rc = SS_ENOMEM;
    ss_req_finish(r, rc == 0 ? 200 : ss_http_status_of(rc),
                  "application/json",
                  text ? text : strdup("{\"error\":\"out of memory\"}"),
                  text ? strlen(text) : 25);
}

static void
repo_index(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    json_t *body = body_json(r);
    ss_err_t err = { 0 };
    int rc;

    if (body == NULL)
        return;
    rc = ss_registry_index(s->registry,
                           json_is_true(json_object_get(body, "ready")),
                           json_done, r, &err);
    json_decref(body);
    if (rc < 0)
        ss_req_fail(r, rc, "%s", err.msg);
    else
        ss_req_suspend(r);
}

static void
repo_load(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    json_t *body = body_json(r), *override = NULL, *cfg;
    json_error_t je;

    if (body == NULL)
        return;
    /* Triton passes a config override as a JSON string in
     * parameters.config. */
    cfg = json_object_get(json_object_get(body, "parameters"), "config");
    if (cfg != NULL) {
        if (!json_is_string(cfg) ||
            (override = json_loads(json_string_value(cfg),
                                   JSON_REJECT_DUPLICATES, &je)) == NULL) {
            ss_req_fail(r, SS_EINVAL, "parameters.config must be a string "
                        "holding a JSON object");
            json_decref(body);
            return;
        }
    }
    run_op(r, s, OP_LOAD, m->cap[0], 0, override);
    json_decref(override);
    json_decref(body);
}

static void
repo_unload(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    run_op(r, s, OP_UNLOAD, m->cap[0], 0, NULL);
}

/* A replica serves a repository another daemon writes: what would write
 * a version or config.json there is the primary's to do (two writers
 * would race on config.json).  True when r was refused. */
static bool
replica_refuses(ss_req_t *r, const ss_server_t *s)
{
    const ss_config_t *c = s->cfg;

    if (!c->replica)
        return false;
    ss_req_fail(r, SS_ECONFLICT, "this server is a replica of the "
                "repository: compression jobs, activations and rollbacks "
                "go to the primary%s%s", c->primary_url ? " at " : "",
                c->primary_url ? c->primary_url : "");
    return true;
}

static void
activate(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    int64_t v = ss_route_number(m->cap[1]);

    if (replica_refuses(r, s))
        return;
    if (v <= 0) {
        ss_req_fail(r, SS_ENOTFOUND, "model '%s' has no version '%s'",
                    m->cap[0], m->cap[1]);
        return;
    }
    run_op(r, s, OP_ACTIVATE, m->cap[0], v, NULL);
}

static void
rollback(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    if (replica_refuses(r, s))
        return;
    run_op(r, s, OP_ROLLBACK, m->cap[0], 0, NULL);
}

static void
versions(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    ss_err_t err = { 0 };
    int rc = ss_registry_versions(s->registry, m->cap[0], json_done, r, &err);

    if (rc < 0)
        ss_req_fail(r, rc, "%s", err.msg);
    else
        ss_req_suspend(r);
}

/* ---- LoRA adapters (server/model/adapter.h, docs/lora.md) ----------- */

static void
adapters_list(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    ss_err_t err = { 0 };
    json_t *j;
    char *text;
    int rc = ss_adapters_list(s->registry, m->cap[0], &j, &err);

    if (rc < 0) {
        ss_req_fail(r, rc, "%s", err.msg);
        return;
    }
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text == NULL)
        ss_req_fail(r, SS_ENOMEM, "out of memory");
    else
        ss_req_respond(r, 200, "application/json", text, strlen(text));
}

/* The files are read on a pool thread: the request waits suspended. */
static void
adapter_load(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    ss_err_t err = { 0 };
    int rc = ss_adapters_load(s->registry, m->cap[0], m->cap[1], json_done,
                              r, &err);

    if (rc < 0)
        ss_req_fail(r, rc, "%s", err.msg);
    else
        ss_req_suspend(r);
}

static void
adapter_unload(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    ss_err_t err = { 0 };
    int rc = ss_adapters_unload(s->registry, m->cap[0], m->cap[1], &err);
    json_t *j;
    char *text;

    if (rc < 0) {
        ss_req_fail(r, rc, "%s", err.msg);
        return;
    }
    j = json_pack("{s:s}", "unloaded", m->cap[1]);
    text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        ss_req_fail(r, SS_ENOMEM, "out of memory");
    else
        ss_req_respond(r, 200, "application/json", text, strlen(text));
}

/* ---- compression jobs ------------------------------------------------ */

static int64_t
job_id(const char *text)
{
    return ss_route_number(text);
}

typedef int64_t (*submit_fn)(ss_jobs_t *, const char *, const char *, size_t,
                             ss_err_t *);

/* Queues a job from the body for the model in the route: 202 with its id. */
static void
submit(ss_req_t *r, ss_server_t *s, const ss_route_match_t *m, submit_fn fn)
{
    ss_err_t err = { 0 };
    const char *body;
    size_t len;
    int64_t id;

    if (replica_refuses(r, s))
        return;
    body = ss_req_body(r, &len);
    id = fn(s->jobs, m->cap[0], body, len, &err);
    if (id < 0) {
        ss_req_fail(r, (int)id, "%s", err.msg);
        return;
    }
    ss_req_respond_json(r, 202, json_pack("{s:I}", "job", (json_int_t)id));
}

static void
compress(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    submit(r, arg, m, ss_jobs_submit);
}

/* A variant search (server/jobs/search_job.c). */
static void
optimize(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    submit(r, arg, m, ss_jobs_submit_search);
}

static void
jobs_list(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    ss_req_respond_json(r, 200, ss_jobs_list(s->jobs));
}

static void
job_get(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    int64_t id = job_id(m->cap[0]);
    json_t *j = id > 0 ? ss_jobs_get(s->jobs, id) : NULL;

    if (j == NULL)
        ss_req_fail(r, SS_ENOTFOUND, "no job '%s'", m->cap[0]);
    else
        ss_req_respond_json(r, 200, j);
}

static void
job_cancel(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    int64_t id = job_id(m->cap[0]);
    ss_err_t err = { 0 };
    int rc;

    if (id <= 0) {
        ss_req_fail(r, SS_ENOTFOUND, "no job '%s'", m->cap[0]);
        return;
    }
    if ((rc = ss_jobs_cancel(s->jobs, id, &err)) < 0) {
        ss_req_fail(r, rc, "%s", err.msg);
        return;
    }
    ss_req_respond_json(r, 200, ss_jobs_get(s->jobs, id));
}

/* The admin page; its data comes from the routes below. */
static void
ui(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    size_t len;
    const char *page = ss_ui_page(&len);
    char *body = ss_malloc(len);

    if (body == NULL) {
        ss_req_fail(r, SS_ENOMEM, "out of memory");
        return;
    }
    memcpy(body, page, len);
    /* Nothing from elsewhere, and not inside another site's frame. */
    ss_req_add_header(r, "Content-Security-Policy", "default-src 'self'; "
                      "script-src 'unsafe-inline'; style-src "
                      "'unsafe-inline'; frame-ancestors 'none'");
    ss_req_add_header(r, "Cache-Control", "no-store");
    ss_req_respond(r, 200, "text/html; charset=utf-8", body, len);
}

static const ss_route_t routes[] = {
    { "GET", "/admin/ui", SS_EP_ADMIN, ui },
    { "POST", "/admin/models/*/compress", SS_EP_ADMIN, compress },
    { "POST", "/admin/models/*/optimize", SS_EP_ADMIN, optimize },
    { "GET", "/admin/jobs", SS_EP_ADMIN, jobs_list },
    { "GET", "/admin/jobs/*", SS_EP_ADMIN, job_get },
    { "DELETE", "/admin/jobs/*", SS_EP_ADMIN, job_cancel },
    { "GET", "/admin/status", SS_EP_ADMIN, status },
    { "POST", "/v2/repository/index", SS_EP_REPOSITORY, repo_index },
    { "POST", "/v2/repository/models/*/load", SS_EP_REPOSITORY, repo_load },
    { "POST", "/v2/repository/models/*/unload", SS_EP_REPOSITORY,
      repo_unload },
    { "GET", "/admin/models/*/versions", SS_EP_ADMIN, versions },
    { "POST", "/admin/models/*/versions/*/activate", SS_EP_ADMIN, activate },
    { "POST", "/admin/models/*/rollback", SS_EP_ADMIN, rollback },
    { "GET", "/admin/models/*/adapters", SS_EP_ADMIN, adapters_list },
    { "POST", "/admin/models/*/adapters/*/load", SS_EP_ADMIN, adapter_load },
    { "POST", "/admin/models/*/adapters/*/unload", SS_EP_ADMIN,
      adapter_unload },
};

void
ss_routes_admin(ss_req_t *r, void *arg)
{
    ss_server_t *s = arg;

    ss_req_set_endpoint(r, SS_EP_ADMIN);
    if (s->auth.token != NULL &&
        !ss_auth_check(&s->auth, ss_req_header(r, "Authorization"))) {
        ss_log_info("admin: req=%llu %s %s refused: bad or missing token",
                    (unsigned long long)ss_req_id(r), ss_req_method(r),
                    ss_req_path(r));
        /* Browsers (the admin page) answer Basic, with the token as the
         * password; API clients use Bearer. */
        ss_req_add_header(r, "WWW-Authenticate",
                          "Basic realm=\"slimserve-admin\", "
                          "charset=\"UTF-8\"");
        ss_req_add_header(r, "WWW-Authenticate",
                          "Bearer realm=\"slimserve-admin\"");
        ss_req_fail(r, SS_EAUTH, "missing or invalid bearer token");
        return;
    }
    ss_router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), r, arg);
}
