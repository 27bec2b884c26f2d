/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a PEFT adapter from its folder and checking it against the
 * version's sites (adapter.h says what and why): the config, the
 * safetensors file, each module's A^T and s B^T packed for the loops
 * (lora_rows.h).  The same read serves a load and a read-back of a cold
 * adapter (adapter_cache.c), which also checks the files' identities and
 * the packed weights' checksum taken here.
 *
 * THREADS: any thread (a pool thread or an executor): no shared state.
 */

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/io/safetensors.h"
#include "engine/ir/ir.h"
#include "server/model/adapter_int.h"

typedef ss_site_t site_t;     /* engine/ir/sites.h */
typedef ss__lmod_t lmod_t;

#define PANEL SS_LORA_PANEL

/* ---- adapters ----------------------------------------------------------- */

void
ss__adapter_free(ss_adapter_t *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->n_mods; i++) {
        ss_free(a->mods[i].w.at);
        ss_free(a->mods[i].w.bp);
    }
    ss_free(a->mods);
    ss_free(a->of_site);
    ss_free(a->name);
    ss_free(a->load_msg);
    ss_free(a);
}

void
ss__adapter_drop_weights(ss_adapter_t *a)
{
    for (int i = 0; i < a->n_mods; i++) {
        ss_free(a->mods[i].w.at);
        ss_free(a->mods[i].w.bp);
        a->mods[i].w.at = NULL;
        a->mods[i].w.bp = NULL;
    }
}

/* FNV-1a's step over 8-byte words in four independent lanes (a byte at
 * a time, one multiply chain, took ~100 us of a 230 us read-back of an
 * r = 8 adapter on the MNIST-sized MLP). */
static void
mix(uint64_t h[4], const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;

    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;

            memcpy(&w, b + i + 8 * k, 8);
            h[k] = (h[k] ^ w) * 1099511628211ULL;
        }
    for (; i < n; i++)
        h[0] = (h[0] ^ b[i]) * 1099511628211ULL;
}

uint64_t
ss__adapter_sum(const ss_adapter_t *a)
{
    uint64_t h[4] = { 14695981039346656037ULL, 1, 2, 3 };

    for (int i = 0; i < a->n_mods; i++) {
        mix(h, a->mods[i].w.at, (size_t)a->mods[i].w.at_bytes);
        mix(h, a->mods[i].w.bp, (size_t)a->mods[i].w.bp_bytes);
    }
    return h[0] ^ (h[1] * 31) ^ (h[2] * 961) ^ (h[3] * 29791);
}

static int
file_id(const char *path, ss__file_id_t *id)
{
    struct stat sb;

    memset(id, 0, sizeof(*id));
    if (stat(path, &sb) < 0)
        return -errno;
    id->dev = sb.st_dev;
    id->ino = sb.st_ino;
    id->size = sb.st_size;
    id->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000
                 + sb.st_mtim.tv_nsec;
    return 0;
}

bool
ss__file_id_same(const ss__file_id_t *x, const ss__file_id_t *y)
{
    return x->dev == y->dev && x->ino == y->ino && x->size == y->size
           && x->mtime_ns == y->mtime_ns;
}

int
ss__adapter_file_ids(const char *model_dir, const char *name,
                     ss__file_id_t *config, ss__file_id_t *weights)
{
    char path[4400];
    int rc;

    snprintf(path, sizeof(path), "%s/adapters/%s/adapter_config.json",
             model_dir, name);
    if ((rc = file_id(path, config)) < 0)
        return rc;
    snprintf(path, sizeof(path), "%s/adapters/%s/adapter_model.safetensors",
             model_dir, name);
    return file_id(path, weights);
}

void
ss_adapter_count(ss_adapter_t *a, int64_t samples)
{
    if (a == NULL)
        return;
    ss_series_add(a->s_requests, 1);
    ss_series_add(a->s_samples, (double)samples);
}

void
ss_adapter_unref(ss_adapter_t *a)
{
    if (a != NULL && ss_ref_put(&a->ref))
        ss__adapter_free(a);
}

const char *
ss_adapter_name(const ss_adapter_t *a)
{
    return a->name;
}

/* Adapter names are folder names: letters, digits, '_', '-', '.', not
 * starting with '.', 1..64 bytes. */
static int
valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'
              || s[i] == '.'))
            return 0;
    return 1;
}

int
ss__lora_find_site(const ss_lora_t *l, const char *module)
{
    for (int k = 0; k < l->n_sites; k++)
        if (strcmp(l->sites[k].module, module) == 0
            || strcmp(l->sites[k].alt, module) == 0)
            return k;
    return -1;
}

/* PEFT's key for a module: "base_model.model.<module>.lora_A.weight"
 * (older files: "...lora_A.default.weight").  Sets *module (new) and
 * *which ('A' or 'B'); 0, or -1 when key is not a LoRA weight. */
static int
parse_key(const char *key, char **module, char *which)
{
    static const char pre[] = "base_model.model.";
    static const char *const suf[] = {
        ".lora_A.weight", ".lora_B.weight",
        ".lora_A.default.weight", ".lora_B.default.weight"
    };
    size_t n = strlen(key);

    if (strncmp(key, pre, sizeof(pre) - 1) != 0)
        return -1;
    for (size_t i = 0; i < 4; i++) {
        size_t sn = strlen(suf[i]);

        if (n > sizeof(pre) - 1 + sn && strcmp(key + n - sn, suf[i]) == 0) {
            *which = i % 2 == 0 ? 'A' : 'B';
            *module = ss_strndup(key + sizeof(pre) - 1,
                                 n - (sizeof(pre) - 1) - sn);
            return *module != NULL ? 0 : -1;
        }
    }
    return -1;
}

/* f32 copy of 2-D t (F32, F16 or BF16) transposed and multiplied by
 * scale, or NULL. */
static float *
to_f32_t(const ss_tensor_t *t, float scale)
{
    size_t rows = (size_t)t->dims[0], cols = (size_t)t->dims[1];
    size_t n = rows * cols;
    float *f = ss_aligned_alloc(n * sizeof(float) + 1);
    float *tr = ss_aligned_alloc(n * sizeof(float) + 1);

    if (f == NULL || tr == NULL) {
        ss_free(f);
        ss_free(tr);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == SS_DTYPE_F32) {
            f[i] = ((const float *)t->data)[i];
        } else if (t->dtype == SS_DTYPE_BF16) {
            uint32_t u = (uint32_t)((const uint16_t *)t->data)[i] << 16;

            memcpy(&f[i], &u, 4);
        } else {
            uint16_t h = ((const uint16_t *)t->data)[i];
            int e = (h >> 10) & 31, m = h & 1023;
            float v = e == 0 ? ldexpf((float)m, -24)
                    : e == 31 ? (m ? NAN : INFINITY)
                    : ldexpf((float)(m + 1024), e - 25);

            f[i] = h & 0x8000 ? -v : v;
        }
    }
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            tr[j * rows + i] = f[i * cols + j] * scale;
    ss_free(f);
    return tr;
}

/* bt [r, out] (row-major) packed as ss_lora_w_t.bp, or NULL; frees bt. */
static float *
pack_panels(float *bt, int64_t r, int64_t out)
{
    int64_t np = (out + PANEL - 1) / PANEL;
    float *bp = bt == NULL ? NULL
              : ss_aligned_alloc((size_t)(np * r * PANEL) * sizeof(float));

    if (bp != NULL) {
        memset(bp, 0, (size_t)(np * r * PANEL) * sizeof(float));
        for (int64_t p = 0; p < np; p++)
            for (int64_t j = 0; j < r; j++)
                for (int64_t l = 0; l < PANEL && p * PANEL + l < out; l++)
                    bp[(p * r + j) * PANEL + l] = bt[j * out + p * PANEL + l];
    }
    ss_free(bt);
    return bp;
}

/* PEFT's target_modules (a list, "all-linear" or a regular expression:
 * ss_site_targeted) against site s. */
static int
targeted(const json_t *tm, const site_t *s)
{
    const char *names[64];
    size_t i, n = json_array_size(tm);
    json_t *v;

    if (json_is_string(tm))
        return ss_site_targeted(s, json_string_value(tm), NULL, 0);
    /* a long list: checked in slices of 64 */
    for (i = 0; i < n; i += 64) {
        int k = 0;

        for (size_t j = i; j < n && k < 64; j++) {
            v = json_array_get(tm, j);
            names[k++] = json_string_value(v);
        }
        if (ss_site_targeted(s, NULL, names, k))
            return 1;
    }
    return 0;
}

/* adapter_config.json: a regular file of at most 1 MiB (as config.json),
 * opened non-blocking so a FIFO cannot stall the pool thread. */
#define MAX_CONFIG_BYTES ((size_t)1 << 20)

static json_t *
load_config(const char *path, json_error_t *je)
{
    struct stat sb;
    char *buf = NULL;
    json_t *c = NULL;
    ssize_t n = 0;
    int fd;

    snprintf(je->text, sizeof(je->text), "cannot be read");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        return NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)
        && (size_t)sb.st_size <= MAX_CONFIG_BYTES
        && (buf = ss_malloc((size_t)sb.st_size + 1)) != NULL
        && (n = read(fd, buf, (size_t)sb.st_size)) == (ssize_t)sb.st_size)
        c = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, je);
    else
        snprintf(je->text, sizeof(je->text), "not a regular file of at "
                 "most %zu bytes", MAX_CONFIG_BYTES);
    ss_free(buf);
    close(fd);
    return c;
}

static int
read_config(const char *dir, const char *name, ss_adapter_t *a,
            json_t **tm_out, ss_err_t *err)
{
    char path[4200];
    json_error_t je;
    json_t *c = NULL, *r, *al, *bias, *tm, *rs, *pat;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    if ((c = load_config(path, &je)) == NULL || !json_is_object(c)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': adapter_config.json: "
                        "%s", name, c == NULL ? je.text : "not an object");
        goto done;
    }
    r = json_object_get(c, "r");
    al = json_object_get(c, "lora_alpha");
    bias = json_object_get(c, "bias");
    tm = json_object_get(c, "target_modules");
    rs = json_object_get(c, "use_rslora");
    if (!json_is_integer(r) || json_integer_value(r) < 1
        || json_integer_value(r) > SS_LORA_MAX_RANK) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"r\" must be an "
                        "integer from 1 to %d", name, SS_LORA_MAX_RANK);
        goto done;
    }
    a->r = (int)json_integer_value(r);
    a->alpha = al == NULL ? (float)a->r : (float)json_number_value(al);
    if ((al != NULL && !json_is_number(al)) || !isfinite(a->alpha)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"lora_alpha\" must "
                        "be a number", name);
        goto done;
    }
    if (bias != NULL && !json_is_null(bias)
        && !(json_is_string(bias)
             && strcmp(json_string_value(bias), "none") == 0)) {
        rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': \"bias\" must be "
                        "\"none\" (trained biases are not supported)", name);
        goto done;
    }
    if (!json_is_array(tm) && !json_is_string(tm)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"target_modules\" "
                        "must be a list of module names", name);
        goto done;
    }
    /* Per-module ranks and alphas: not supported. */
    pat = json_object_get(c, "rank_pattern");
    if (json_object_size(pat) > 0
        || json_object_size(json_object_get(c, "alpha_pattern")) > 0) {
        rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': rank_pattern and "
                        "alpha_pattern are not supported", name);
        goto done;
    }
    a->scale = json_is_true(rs) ? a->alpha / sqrtf((float)a->r)
                                : a->alpha / (float)a->r;
    *tm_out = json_incref(tm);
done:
    json_decref(c);
    return rc;
}

int
ss_adapter_read(const ss_lora_t *l, const char *model_dir, const char *name,
                ss_adapter_t **out, ss_err_t *err)
{
    ss_adapter_t *a = NULL;
    ss_safetensors_t *st = NULL;
    json_t *tm = NULL;
    char dir[4096], path[4200];
    int rc = 0;

    *out = NULL;
    if (!valid_name(name))
        return ss_err_set(err, SS_EINVAL, "adapter name '%s' is not a "
                          "plain name (letters, digits, _ - .)", name);
    if (snprintf(dir, sizeof(dir), "%s/adapters/%s", model_dir, name)
        >= (int)sizeof(dir))
        return ss_err_set(err, SS_EINVAL, "adapter '%s': path too long",
                          name);
    if ((a = ss_calloc(1, sizeof(*a))) == NULL
        || (a->name = ss_strdup(name)) == NULL
        || (a->of_site = ss_malloc(((size_t)l->n_sites + 1)
                                   * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'", name);
        goto done;
    }
    ss_ref_init(&a->ref);
    for (int k = 0; k < l->n_sites; k++)
        a->of_site[k] = -1;
    /* the files as they are before the read: a read-back compares */
    ss__adapter_file_ids(model_dir, name, &a->f_config, &a->f_weights);
    if ((rc = read_config(dir, name, a, &tm, err)) < 0)
        goto done;
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    if ((rc = ss_safetensors_read(path, SS_LORA_MAX_FILE_BYTES, &st,
                                  err)) < 0) {
        ss_err_wrap(err, rc, "adapter '%s'", name);
        goto done;
    }
    if ((a->mods = ss_calloc((size_t)ss_safetensors_count(st) + 1,
                             sizeof(lmod_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'", name);
        goto done;
    }
    /* Every lora_A names a module; its lora_B must be there too. */
    for (int i = 0; i < ss_safetensors_count(st); i++) {
        const char *key = ss_safetensors_name(st, i);
        const ss_tensor_t *ta = ss_safetensors_tensor(st, i), *tb;
        char *module = NULL, which, bkey[600];
        const site_t *s;
        lmod_t *m;
        int k, j;

        if (parse_key(key, &module, &which) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': tensor '%s' is "
                            "not a PEFT LoRA weight (base_model.model."
                            "<module>.lora_A.weight)", name, key);
            goto done;
        }
        if (which == 'B') {
            ss_free(module);
            continue;
        }
        k = ss__lora_find_site(l, module);
        /* bkey: key with lora_A swapped for lora_B */
        {
            const char *p = strstr(key, ".lora_A.");

            snprintf(bkey, sizeof(bkey), "%.*s.lora_B.%s",
                     (int)(p - key), key, p + 8);
        }
        j = ss_safetensors_find(st, bkey);
        tb = ss_safetensors_tensor(st, j);
        if (k < 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' is "
                            "not a Gemm or MatMul weight of the model",
                            name, module);
        } else if (!targeted(tm, &l->sites[k])) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' has "
                            "weights but is not in target_modules", name,
                            module);
        } else if (a->of_site[k] >= 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' "
                            "appears twice", name, module);
        } else if (tb == NULL) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' has "
                            "lora_A but no lora_B", name, module);
        }
        s = k >= 0 ? &l->sites[k] : NULL;
        if (rc == 0
            && ((ta->dtype != SS_DTYPE_F32 && ta->dtype != SS_DTYPE_F16
                 && ta->dtype != SS_DTYPE_BF16) || tb->dtype != ta->dtype))
            rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': module '%s': "
                            "dtype %s (F32, F16 or BF16 expected)", name,
                            module, ss_safetensors_dtype_name(ta->dtype));
        if (rc == 0
            && (ta->ndim != 2 || ta->dims[0] != a->r || ta->dims[1] != s->in
                || tb->ndim != 2 || tb->dims[0] != s->out
                || tb->dims[1] != a->r))
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s': "
                            "lora_A is [%lld, %lld] and lora_B [%lld, %lld] "
                            "where r = %d and the weight's in = %lld, out = "
                            "%lld need [%d, %lld] and [%lld, %d]", name,
                            module, (long long)ta->dims[0],
                            (long long)(ta->ndim > 1 ? ta->dims[1] : 0),
                            (long long)(tb->ndim > 0 ? tb->dims[0] : 0),
                            (long long)(tb->ndim > 1 ? tb->dims[1] : 0),
                            a->r, (long long)s->in, (long long)s->out, a->r,
                            (long long)s->in, (long long)s->out, a->r);
        ss_free(module);
        if (rc < 0)
            goto done;
        m = &a->mods[a->n_mods];
        m->site = k;
        m->w.at_bytes = a->r * s->in * (int64_t)sizeof(float);
        m->w.bp_bytes = (s->out + PANEL - 1) / PANEL * PANEL * a->r
                      * (int64_t)sizeof(float);
        m->w.at = to_f32_t(ta, 1.0f);
        m->w.bp = pack_panels(to_f32_t(tb, a->scale), a->r, s->out);
        a->n_mods++;
        if (m->w.at == NULL || m->w.bp == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'",
                            name);
            goto done;
        }
        a->of_site[k] = a->n_mods - 1;
        a->bytes += (size_t)a->r * (size_t)(s->in + s->out) * sizeof(float);
        a->w_bytes += (size_t)(m->w.at_bytes + m->w.bp_bytes);
    }
    /* Every lora_B has its lora_A (counted: each A took one B). */
    if (2 * a->n_mods != ss_safetensors_count(st)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': a lora_B without "
                        "its lora_A", name);
        goto done;
    }
    if (a->n_mods == 0) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': no LoRA weights",
                        name);
        goto done;
    }
    a->sum = ss__adapter_sum(a);
    /* mods was sized for every tensor: keep one per module (a cold
     * adapter keeps it) */
    {
        lmod_t *m = ss_realloc(a->mods, (size_t)a->n_mods * sizeof(lmod_t));

        if (m != NULL)
            a->mods = m;
    }
    /* what stays when the weights are dropped: the struct, its name, the
     * per-site index and the modules (allocator overhead not counted) */
    a->meta_bytes = sizeof(*a) + strlen(a->name) + 1
                  + ((size_t)l->n_sites + 1) * sizeof(int)
                  + (size_t)a->n_mods * sizeof(lmod_t);
    *out = a;
    a = NULL;
done:
    ss__adapter_free(a);
    ss_safetensors_free(st);
    json_decref(tm);
    return rc;
}
