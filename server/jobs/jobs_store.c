/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Variant folders: a job's graph written as the model's next version, or
 * a LoRA adapter into the active version's adapters/, each appearing only
 * by rename(2) of a complete, fsynced temporary folder whose name is not
 * a number; start-up removes what a crash left (ss_jobs_clean_repository).
 *
 * THREADS: [job thread], except ss_jobs_clean_repository (start-up).
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomicfile.h"
#include "common/log.h"
#include "engine/ir/edit.h"
#include "server/model/adapter.h"

#define TMP_PREFIX ".slimserve-tmp-"

/* ---- the variant folder --------------------------------------------------- */

static void
remove_tree(const char *dir)
{
    struct dirent *e;
    char path[4200];
    DIR *d = opendir(dir);

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int64_t
next_version(const char *dir)
{
    struct dirent *e;
    int64_t best = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return 1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long long v = strtoll(e->d_name, &end, 10);

        if (*end == '\0' && v > best && e->d_name[0] != '-')
            best = v;
    }
    closedir(d);
    return best + 1;
}

/* Writes model.onnx and variant.json into a temporary folder and renames
 * it to the next version number.  Both files are atomic files (synced,
 * and the folder with them); the folder is published with
 * ss_atomic_rename. */
int
ss__jobs_write_version(ss_jobs_t *js, ss__job_t *j, const ss_graph_t *graph,
                       json_t *variant, bool stop_on_cancel, int64_t *version,
                       ss_err_t *err)
{
    char mdir[4096], tmp[4200], path[4300], final[4200];
    ss_atomic_file_t af = { .fd = -1 };
    char *text = NULL;
    struct stat st;
    int64_t v;
    int rc;

    snprintf(mdir, sizeof(mdir), "%s/%s", js->repo, j->model);
    snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "%lld", mdir,
             (long long)j->id);
    remove_tree(tmp);
    if (mkdir(tmp, 0755) < 0)
        return ss_err_set(err, SS_EIO, "%s: %s", tmp, strerror(errno));
    snprintf(path, sizeof(path), "%s/model.onnx", tmp);
    if ((rc = ss_graph_save_onnx(graph, path, err)) < 0)
        goto fail;
    if (variant == NULL ||
        (text = json_dumps(variant, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) ==
            NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/variant.json", tmp);
    if ((rc = ss_atomic_open(&af, path, err)) < 0 ||
        (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0 ||
        (rc = ss_atomic_commit(&af, err)) < 0)
        goto fail;
    if (stop_on_cancel && atomic_load(&j->cancel)) {
        rc = ss_err_set(err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    v = next_version(mdir);
    snprintf(final, sizeof(final), "%s/%lld", mdir, (long long)v);
    if ((rc = ss_atomic_rename(tmp, final, err)) < 0) {
        if (stat(final, &st) != 0)
            goto fail;
        /* In place, but the rename may not survive a crash. */
        ss_log_warn("model=%s@%lld: %s", j->model, (long long)v,
                    err != NULL ? err->msg : "directory not synced");
        rc = 0;
    }
    *version = v;
    ss_log_notice("model=%s@%lld written by job %lld", j->model,
                  (long long)v, (long long)j->id);
    free(text);
    return 0;
fail:
    ss_atomic_abort(&af);
    free(text);
    remove_tree(tmp);
    return rc;
}

/* A lora job's adapter (docs/lora.md): written into a temporary folder
 * under the model's adapters/ (hidden: the loader skips names starting
 * with '.'), published as adapters/<name> by ss_atomic_rename.  An
 * adapter of that name already there is renamed away first and removed
 * after, so a reader sees the old files or the new ones, never a mix.
 * Then, when the active version serves adapters (it had an adapters/
 * folder when it loaded), the adapter is loaded into it at once, as an
 * admin load would: result gets "adapter" and "loaded". */
int
ss__jobs_write_adapter(ss_jobs_t *js, ss__job_t *j, const ss_lora_adapter_t *a,
                       json_t *result, ss_err_t *err)
{
    char mdir[4096], adir[4200], tmp[4400], dst[4400], old[4400];
    ss_version_t *act = NULL;
    struct stat st;
    bool loaded = false;
    ss_err_t le = { 0 };
    int rc;

    snprintf(mdir, sizeof(mdir), "%s/%s", js->repo, j->model);
    snprintf(adir, sizeof(adir), "%s/adapters", mdir);
    snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "adapter-%lld", adir,
             (long long)j->id);
    snprintf(old, sizeof(old), "%s/" TMP_PREFIX "old-%lld", adir,
             (long long)j->id);
    snprintf(dst, sizeof(dst), "%s/%s", adir, a->name);
    if ((mkdir(adir, 0755) < 0 && errno != EEXIST)
        || (remove_tree(tmp), mkdir(tmp, 0755) < 0))
        return ss_err_set(err, SS_EIO, "%s: %s", tmp, strerror(errno));
    if ((rc = ss_lora_adapter_write(a, tmp, err)) < 0)
        goto fail;
    if (atomic_load(&j->cancel)) {
        rc = ss_err_set(err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    if (stat(dst, &st) == 0 && rename(dst, old) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: %s", dst, strerror(errno));
        goto fail;
    }
    if ((rc = ss_atomic_rename(tmp, dst, err)) < 0 && stat(dst, &st) != 0)
        goto fail;
    remove_tree(old);
    ss_log_notice("model=%s adapter '%s' written by job %lld", j->model,
                  a->name, (long long)j->id);
    if (ss_registry_acquire(js->reg, j->model, 0, &act, NULL) == 0
        && act->lora != NULL) {
        if (ss_lora_load(act->lora, mdir, a->name, &le) == 0)
            loaded = true;
        else
            ss_log_warn("model=%s adapter '%s' written but not loaded: %s",
                        j->model, a->name, le.msg);
    }
    ss_version_unref(act);
    json_object_set_new(result, "adapter", json_string(a->name));
    json_object_set_new(result, "loaded", json_boolean(loaded));
    return 0;
fail:
    remove_tree(tmp);
    return rc;
}

/* ".<name>.tmp.XXXXXX": a file ss_atomic_open made and nobody
 * committed (common/atomicfile.c). */
static bool
is_atomic_leftover(const char *name)
{
    const char *t = strstr(name, ".tmp.");
    size_t i;

    if (name[0] != '.' || t == NULL || t == name)
        return false;
    while (strstr(t + 1, ".tmp.") != NULL)
        t = strstr(t + 1, ".tmp.");
    for (i = 0; i < 6; i++)
        if (!isalnum((unsigned char)t[5 + i]))
            return false;
    return t[11] == '\0';
}

/* Removes what an interrupted writer left in dir: temporary variant
 * folders (dirs) and uncommitted atomic files; not following links. */
static void
clean_dir(const char *dir, bool dirs)
{
    struct dirent *e;
    char path[4400];
    struct stat st;
    DIR *d = opendir(dir);

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
                (int)sizeof(path) ||
            lstat(path, &st) < 0)
            continue;
        if (dirs && S_ISDIR(st.st_mode) &&
            strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            ss_log_notice("removing %s left by an interrupted job", path);
            remove_tree(path);
        } else if (S_ISREG(st.st_mode) && is_atomic_leftover(e->d_name)) {
            ss_log_notice("removing %s left by an interrupted write", path);
            unlink(path);
        }
    }
    closedir(d);
}

void
ss_jobs_clean_repository(const char *repo)
{
    struct dirent *m, *v;
    char mdir[4096], vdir[4400];
    DIR *d = opendir(repo), *md;

    if (d == NULL)
        return;
    clean_dir(repo, false);
    while ((m = readdir(d)) != NULL) {
        if (m->d_name[0] == '.' ||
            snprintf(mdir, sizeof(mdir), "%s/%s", repo, m->d_name) >=
                (int)sizeof(mdir))
            continue;
        clean_dir(mdir, true);
        /* Version folders: files written into them in place. */
        if ((md = opendir(mdir)) == NULL)
            continue;
        while ((v = readdir(md)) != NULL) {
            if (v->d_name[0] < '1' || v->d_name[0] > '9' ||
                snprintf(vdir, sizeof(vdir), "%s/%s", mdir, v->d_name) >=
                    (int)sizeof(vdir))
                continue;
            clean_dir(vdir, false);
        }
        closedir(md);
    }
    closedir(d);
}
