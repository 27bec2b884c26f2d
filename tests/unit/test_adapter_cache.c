/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The LoRA residency budget (server/model/adapter_cache.c) on the
 * fixtures' MLP with six adapters r = 8 on fc3 (2,560 packed bytes each)
 * and a budget of three: which adapters stay resident (least recently
 * pinned evicted first), pinned ones never evicted and the budget
 * exceeded only while they are pinned, weights read back bit for bit
 * those loaded, a changed file refused naming the adapter without
 * touching the others, no budget = every adapter resident and pins
 * free, and four threads pinning at random (under ASan/TSan in CI).
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/engine.h"
#include "engine/io/safetensors.h"
#include "server/model/adapter_int.h"
#include "tests/tap.h"

#define N 6
#define W_BYTES 2560            /* 64 x 8 x 4 + 16 x 8 x 4 */

static char dir[256];

static void
write_adapter(int i, float v)
{
    char path[512];
    float a[8 * 64], b[10 * 8];
    const char *names[] = { "base_model.model.fc3.lora_A.weight",
                            "base_model.model.fc3.lora_B.weight" };
    ss_tensor_t t[2] = {
        { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { 8, 64 }, .data = a },
        { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { 10, 8 }, .data = b },
    };
    ss_err_t err = { 0 };
    FILE *f;

    for (int k = 0; k < 8 * 64; k++)
        a[k] = v + (float)k / 1024.0f;
    for (int k = 0; k < 80; k++)
        b[k] = v - (float)k / 512.0f;
    snprintf(path, sizeof path, "%s/adapters/c%d", dir, i);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/adapters/c%d/adapter_config.json", dir,
             i);
    if ((f = fopen(path, "w")) != NULL) {
        fputs("{\"r\": 8, \"lora_alpha\": 16, \"target_modules\": "
              "[\"fc3\"]}", f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/adapters/c%d/adapter_model.safetensors",
             dir, i);
    if (ss_safetensors_write(path, 2, names, t, 0, NULL, &err) < 0)
        tap_diag("write: %s", err.msg);
}

static ss_lora_t *
open_lora(ss_graph_t *g, int64_t budget)
{
    ss_lora_opts_t o = { 0 };
    ss_lora_t *l = NULL;
    ss_err_t err = { 0 };

    o.resident_bytes = budget;
    if (ss_lora_new(g, dir, &o, &l, &err) < 0)
        tap_diag("ss_lora_new: %s", err.msg);
    return l;
}

/* Which of ad[] are resident, as a bit mask. */
static int
resident(ss_lora_t *l, ss_adapter_t **ad)
{
    int m = 0;

    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < N; i++)
        m |= ad[i]->resident ? 1 << i : 0;
    pthread_mutex_unlock(&l->set_lock);
    return m;
}

static int
touch(ss_lora_t *l, ss_adapter_t *a)
{
    ss_err_t err = { 0 };
    int rc = ss_lora_pin(l, a, &err);

    if (rc == 0)
        ss_lora_unpin(l, a);
    return rc;
}

typedef struct worker {
    ss_lora_t *l;
    ss_adapter_t **ad;
    unsigned seed;
    int bad;
} worker_t;

static void *
work(void *arg)
{
    worker_t *w = arg;

    for (int it = 0; it < 300; it++) {
        ss_adapter_t *a = w->ad[rand_r(&w->seed) % N];
        ss_err_t err = { 0 };

        if (ss_lora_pin(w->l, a, &err) < 0) {
            w->bad++;
            continue;
        }
        /* pinned: the weights are there and the ones loaded */
        if (a->mods[0].w.at == NULL || ss__adapter_sum(a) != a->sum)
            w->bad++;
        ss_lora_unpin(w->l, a);
    }
    return NULL;
}

int
main(void)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_graph_t *g = NULL;
    ss_lora_t *l;
    ss_adapter_t *ad[N];
    ss_err_t err = { 0 };
    int64_t res, meta;
    int nres, rc;

    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op17/model.onnx",
             top != NULL ? top : ".");
    snprintf(dir, sizeof dir, "/tmp/ss-adapter-cache-XXXXXX");
    if (mkdtemp(dir) == NULL || ss_graph_load_onnx(path, &g, &err) < 0) {
        ok(0, "setup: %s", err.msg);
        return tap_done();
    }
    snprintf(path, sizeof path, "%s/1", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/adapters", dir);
    mkdir(path, 0755);
    for (int i = 0; i < N; i++)
        write_adapter(i, 0.01f * (float)(i + 1));

    /* No budget: everything resident, pins free. */
    l = open_lora(g, 0);
    for (int i = 0; l != NULL && i < N; i++) {
        char name[8];

        snprintf(name, sizeof name, "c%d", i);
        ss_lora_acquire(l, name, &ad[i], &err);
    }
    if (!ok(l != NULL, "loads without a budget"))
        return tap_done();
    ss_lora_memory(l, &res, &meta, &nres);
    ok(nres == N && res == N * W_BYTES && resident(l, ad) == (1 << N) - 1,
       "no budget: all %d resident, %lld bytes", nres, (long long)res);
    ok(touch(l, ad[0]) == 0 && ad[0]->pins == 0,
       "no budget: a pin counts nothing");
    for (int i = 0; i < N; i++)
        ss_adapter_unref(ad[i]);
    ss_lora_free(l);

    /* Budget of three. */
    l = open_lora(g, 3 * W_BYTES);
    for (int i = 0; l != NULL && i < N; i++) {
        char name[8];

        snprintf(name, sizeof name, "c%d", i);
        if (ss_lora_acquire(l, name, &ad[i], &err) < 0)
            l = NULL;
    }
    if (!ok(l != NULL, "six adapters load with a budget of three"))
        return tap_done();
    ss_lora_memory(l, &res, &meta, &nres);
    ok(nres == 3 && res == 3 * W_BYTES && meta > 0 && meta < N * 400,
       "at load: 3 resident, %lld bytes; metadata %lld bytes for 6",
       (long long)res, (long long)meta);
    rc = touch(l, ad[0]) | touch(l, ad[1]) | touch(l, ad[2]);
    nres = resident(l, ad);
    ok(rc == 0 && nres == 0x07, "c0, c1, c2 pinned in turn: those three "
       "resident (%#x)", nres);
    rc = touch(l, ad[3]);
    nres = resident(l, ad);
    ok(rc == 0 && nres == 0x0e, "c3: the least recently used, c0, evicted "
       "(%#x)", nres);
    rc = touch(l, ad[1]) | touch(l, ad[4]);
    nres = resident(l, ad);
    ok(rc == 0 && nres == 0x1a, "c1 used again, then c4: c2 evicted, not "
       "c1 (%#x)", nres);

    /* Bit for bit: c1's weights now, then read back. */
    {
        size_t na = (size_t)ad[1]->mods[0].w.at_bytes;
        size_t nb = (size_t)ad[1]->mods[0].w.bp_bytes;
        char *ca = ss_malloc(na), *cb = ss_malloc(nb);

        memcpy(ca, ad[1]->mods[0].w.at, na);
        memcpy(cb, ad[1]->mods[0].w.bp, nb);
        touch(l, ad[0]);
        touch(l, ad[2]);
        touch(l, ad[3]);
        ok(!ad[1]->resident && touch(l, ad[1]) == 0
           && memcmp(ca, ad[1]->mods[0].w.at, na) == 0
           && memcmp(cb, ad[1]->mods[0].w.bp, nb) == 0,
           "c1 evicted and read back: its weights bit for bit");
        ss_free(ca);
        ss_free(cb);
    }

    /* Pinned: never evicted; over the budget only while pinned. */
    {
        int all = 1;

        for (int i = 0; i < 5; i++)
            all &= ss_lora_pin(l, ad[i], &err) == 0;
        ss_lora_memory(l, &res, &meta, &nres);
        ok(all && nres == 5 && res == 5 * W_BYTES
           && (resident(l, ad) & 0x1f) == 0x1f,
           "five pinned: all resident, %lld bytes over the budget",
           (long long)res);
        for (int i = 0; i < 5; i++)
            ss_lora_unpin(l, ad[i]);
        ss_lora_memory(l, &res, &meta, &nres);
        ok(nres == 3 && res == 3 * W_BYTES && (resident(l, ad) & 0x1c) == 0x1c,
           "unpinned: back to three, the last pinned (%#x)",
           resident(l, ad));
    }

    /* A changed file: refused naming the adapter; the others serve. */
    write_adapter(0, 0.5f);
    ss_err_clear(&err);
    rc = ss_lora_pin(l, ad[0], &err);
    ok(rc == SS_EIO && strstr(err.msg, "adapter 'c0'") != NULL,
       "c0's file rewritten while cold: SS_EIO naming it (%s)", err.msg);
    ok(touch(l, ad[5]) == 0 && touch(l, ad[1]) == 0,
       "the others still read back and pin");
    ok(ss_lora_pin(l, ad[0], &err) == SS_EIO && !ad[0]->resident,
       "and c0 again: still refused, still cold");

    /* A hostile header written in place, size and mtime kept: the
     * identity matches, the reader refuses it. */
    {
        struct stat sb;
        struct timespec ts[2];
        FILE *f;
        int c;

        touch(l, ad[1]);
        touch(l, ad[3]);
        touch(l, ad[4]);
        snprintf(path, sizeof path, "%s/adapters/c2/adapter_model"
                 ".safetensors", dir);
        stat(path, &sb);
        if ((f = fopen(path, "r+b")) != NULL) {
            fseek(f, 0, SEEK_SET);
            fputs("\xff\xff\xff\xff\xff\xff\xff\x7f{\"", f);
            fclose(f);
        }
        ts[0] = sb.st_atim;
        ts[1] = sb.st_mtim;
        utimensat(AT_FDCWD, path, ts, 0);
        ss_err_clear(&err);
        c = ad[2]->resident;
        rc = ss_lora_pin(l, ad[2], &err);
        ok(!c && rc == SS_EIO && strstr(err.msg, "adapter 'c2'") != NULL
           && strstr(err.msg, "reading it back failed") != NULL,
           "c2's header garbled in place (mtime kept): SS_EIO from the "
           "reader (%s)", err.msg);
    }

    /* Four threads at random over the good ones (c0, c2 fail). */
    {
        pthread_t th[4];
        worker_t w[4];
        int bad = 0, cnt = 0;

        ss_lora_unload(l, "c0", &err);
        ss_lora_unload(l, "c2", &err);
        ss_adapter_unref(ad[0]);
        ss_adapter_unref(ad[2]);
        ss_lora_acquire(l, "c5", &ad[0], &err);     /* c5 and c4 twice */
        ss_lora_acquire(l, "c4", &ad[2], &err);
        for (int i = 0; i < 4; i++) {
            w[i] = (worker_t){ l, ad, 17u + (unsigned)i, 0 };
            pthread_create(&th[i], NULL, work, &w[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            bad += w[i].bad;
        }
        ss_lora_memory(l, &res, &meta, &nres);
        cnt = __builtin_popcount(resident(l, ad) & 0x3a);
        ok(bad == 0 && res <= 3 * W_BYTES && nres == cnt
           && res == (int64_t)nres * W_BYTES,
           "4 threads x 300 pins: weights present and unchanged while "
           "pinned (%d bad), %d resident (%lld bytes) after", bad, nres,
           (long long)res);
    }

    /* A sync (a replica's scan) reads only what changed. */
    {
        ss_adapter_t *c1 = NULL, *c3 = NULL, *c2 = NULL, *c0 = NULL;
        int64_t m0 = 0;

        write_adapter(3, 0.25f);
        ss_lora_sync(l, dir);
        ss_lora_acquire(l, "c1", &c1, &err);
        ss_lora_acquire(l, "c3", &c3, &err);
        ss_lora_acquire(l, "c0", &c0, &err);
        rc = ss_lora_acquire(l, "c2", &c2, &err);
        ss_lora_memory(l, &res, &m0, &nres);
        ok(c1 == ad[1] && c3 != NULL && c3 != ad[3] && c0 != NULL
           && rc == SS_ENOTFOUND && res <= 3 * W_BYTES,
           "sync: c1 unchanged kept, c3 rewritten read again, c0 (its new "
           "file) loaded, c2 (garbled) refused; %lld bytes resident",
           (long long)res);
        ss_adapter_unref(c0);
        ss_adapter_unref(c1);
        ss_adapter_unref(c3);
    }

    for (int i = 0; i < N; i++)
        ss_adapter_unref(ad[i]);
    ss_lora_free(l);
    ss_graph_free(g);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path) != 0)
        tap_diag("could not remove %s", dir);
    return tap_done();
}
