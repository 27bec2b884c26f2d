/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin operations on a model's LoRA adapters (adapter.h):
 * GET /admin/models/{m}/adapters, POST .../adapters/{name}/load and
 * .../unload.  They act on the model's active version, the one new
 * requests reach.
 *
 * DESIGN: the loop takes a reference to the active version (so it cannot
 * be freed under the operation), and a load reads the adapter's files on
 * a libuv pool thread (the loop never touches a file), swaps it into the
 * version's set there (under the set's own lock), and answers on the
 * loop.  An unload only takes the adapter out of the set: requests that
 * hold it finish with it (their reference), later ones get 404.
 *
 * THREADS: ss_adapters_* are [loop]; op_work runs on a pool thread and
 * touches only its op and the version it holds a reference to.
 */

#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/model/adapter.h"
#include "server/model/internal.h"

typedef struct op {
    uv_work_t work;
    ss_version_t *v;            /* a reference */
    char name[80];
    int rc;
    ss_err_t err;
    ss_registry_json_cb cb;
    void *arg;
} op_t;

/* The active version's lora, with a reference to the version. */
static int
active(ss_registry_t *r, const char *model, ss_version_t **v, ss_err_t *err)
{
    int rc;

    if ((rc = ss_registry_acquire(r, model, 0, v, err)) < 0)
        return rc;
    if ((*v)->lora == NULL) {
        ss_version_unref(*v);
        *v = NULL;
        return ss_err_set(err, SS_ENOTFOUND, "model '%s' has no adapters "
                          "folder (LoRA is off for it)", model);
    }
    return 0;
}

int
ss_adapters_list(ss_registry_t *r, const char *model, json_t **out,
                 ss_err_t *err)
{
    ss_version_t *v;
    int rc;

    *out = NULL;
    if ((rc = active(r, model, &v, err)) < 0)
        return rc;
    *out = json_pack("{s:s, s:s, s:i, s:o*}", "model", model, "version",
                     v->label, "sites", ss_lora_sites(v->lora), "adapters",
                     ss_lora_list(v->lora));
    ss_version_unref(v);
    return *out != NULL ? 0 : ss_err_set(err, SS_ENOMEM, "out of memory");
}

static void
op_work(uv_work_t *w)
{
    op_t *op = w->data;

    op->rc = ss_lora_load(op->v->lora, op->v->model->dir, op->name,
                          &op->err);
}

static void
op_done(uv_work_t *w, int status)
{
    op_t *op = w->data;
    json_t *j = NULL;

    if (status < 0 && op->rc == 0)
        op->rc = ss_err_set(&op->err, SS_ENOTREADY, "adapter '%s': the "
                            "load was cancelled", op->name);
    if (op->rc == 0) {
        ss_log_notice("model=%s@%s adapter '%s' loaded",
                      op->v->model->name, op->v->label, op->name);
        j = json_pack("{s:s}", "loaded", op->name);
    }
    op->cb(op->arg, op->rc, j, &op->err);
    ss_version_unref(op->v);
    ss_free(op);
}

int
ss_adapters_load(ss_registry_t *r, const char *model, const char *name,
                 ss_registry_json_cb cb, void *arg, ss_err_t *err)
{
    op_t *op;
    int rc;

    if (strlen(name) >= sizeof(op->name))
        return ss_err_set(err, SS_EINVAL, "adapter name too long");
    if ((op = ss_calloc(1, sizeof(*op))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if ((rc = active(r, model, &op->v, err)) < 0) {
        ss_free(op);
        return rc;
    }
    strcpy(op->name, name);
    op->cb = cb;
    op->arg = arg;
    op->work.data = op;
    if (uv_queue_work(r->loop, &op->work, op_work, op_done) < 0) {
        ss_version_unref(op->v);
        ss_free(op);
        return ss_err_set(err, SS_ENOMEM, "cannot queue the load");
    }
    return 0;
}

int
ss_adapters_unload(ss_registry_t *r, const char *model, const char *name,
                   ss_err_t *err)
{
    ss_version_t *v;
    int rc;

    if ((rc = active(r, model, &v, err)) < 0)
        return rc;
    if ((rc = ss_lora_unload(v->lora, name, err)) == 0)
        ss_log_notice("model=%s@%s adapter '%s' unloaded", model, v->label,
                      name);
    ss_version_unref(v);
    return rc;
}
