/* The result cache: each stage's validated answer is kept in Redis under a hash of model,
 * prompt and input, so a redelivered batch, a resumed job or a re-run pays only for what was
 * not done before. Lookups take one round trip per batch and stage (MGET) and serve the hits
 * into the tasks; writes are queued and sent as one pipeline per turn of the event loop. A Redis
 * failure only costs calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "fc_log.h"
#include "worker.h"

/* serve validates a cached answer as t's current stage; 1 on success (t moved on). A cached
 * answer goes through the same validation as a fresh one: a bad entry is only a miss. */
static int serve(worker *w, task *t, const char *v, size_t len) {
    char why[256], *result = NULL;
    if (w->proc.answer(w->proc.self, t->stage, v, len, &result, why, sizeof(why)) != FC_OK) {
        fc_debug("cached stage %d answer unusable (%s): calling the API", t->stage, why);
        return 0;
    }
    t->cache_hits++;
    atomic_fetch_add(&w->m->cache_hits, 1);
    if (task_advance(t, &w->proc, result)) task_finish(t, OUT_OK);
    return 1;
}

/* lookup asks for the current stage of the tasks v[0..n) at once and serves the hits; returns
 * how many it served. */
static size_t lookup(worker *w, task **v, size_t n) {
    const char **argv = calloc(n + 1, sizeof(*argv));
    char (*keys)[FC_KEY_MAX] = calloc(n, FC_KEY_MAX);
    fc_reply r = {0};
    size_t hits = 0;
    if (!argv || !keys) goto out;
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        fc_key_cache(keys[i], FC_KEY_MAX, w->cfg->queue_prefix, v[i]->stage, v[i]->cache_key);
        argv[i + 1] = keys[i];
    }
    if (fc_redis_command(w->redis, &r, (int)n + 1, argv, NULL) != FC_OK || r.type != FC_REPLY_ARRAY || r.nelem != n)
        goto out;
    for (size_t i = 0; i < n; i++)
        if (r.elem[i].type == FC_REPLY_STR && serve(w, v[i], r.elem[i].str, r.elem[i].len)) v[hits++] = v[i];
out:
    fc_reply_free(&r);
    free(argv);
    free(keys);
    return hits;
}

size_t cache_lookup(worker *w, task *v, size_t n) {
    if (w->cfg->cache_ttl_ms <= 0 || n == 0) return 0;
    task **want = calloc(n, sizeof(*want));
    size_t m = 0, first = 0, done = 0;
    if (!want) return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].state == TASK_IDLE && task_prepare(&v[i], &w->proc, 1) == FC_OK) want[m++] = &v[i];
    /* A stage is looked up only after a hit of the stage before: its request is made from that result. */
    for (int s = 0; s < w->proc.nstages && m > 0; s++) {
        m = lookup(w, want, m);
        if (s == 0) first = m;
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            if (want[i]->state == TASK_DONE) done++;
            else if (task_prepare(want[i], &w->proc, 1) == FC_OK) want[k++] = want[i];
        }
        m = k;
    }
    if (first) fc_debug("%zu of %zu items' first stage from the cache, %zu all stages", first, n, done);
    free(want);
    return done;
}

void cache_store(worker *w, int stage, const char *hash, const char *value) {
    if (w->cfg->cache_ttl_ms <= 0 || !hash[0]) return;
    if (w->ncache_out == w->cache_cap) {
        size_t cap = w->cache_cap ? w->cache_cap * 2 : 64;
        cache_write *p = realloc(w->cache_out, cap * sizeof(*p));
        if (!p) return;
        w->cache_out = p;
        w->cache_cap = cap;
    }
    char key[FC_KEY_MAX];
    if (fc_key_cache(key, sizeof(key), w->cfg->queue_prefix, stage, hash) != FC_OK) return;
    cache_write *c = &w->cache_out[w->ncache_out];
    c->key = strdup(key);
    c->value = strdup(value);
    if (c->key && c->value) w->ncache_out++;
    else free(c->key), free(c->value);
}

void cache_flush(worker *w) {
    size_t n = w->ncache_out;
    if (n == 0) return;
    char ttl[32];
    snprintf(ttl, sizeof(ttl), "%ld", w->cfg->cache_ttl_ms);
    int *argcs = malloc(n * sizeof(*argcs));
    const char ***argvs = malloc(n * sizeof(*argvs));
    const char **flat = malloc(n * 5 * sizeof(*flat));
    if (argcs && argvs && flat) {
        for (size_t i = 0; i < n; i++) {
            const char **a = flat + i * 5;
            a[0] = "SET", a[1] = w->cache_out[i].key, a[2] = w->cache_out[i].value, a[3] = "PX", a[4] = ttl;
            argvs[i] = a;
            argcs[i] = 5;
        }
        if (fc_redis_pipeline(w->redis, NULL, n, argcs, argvs, NULL) != FC_OK)
            fc_debug("cache writes failed: %s", fc_redis_errstr(w->redis));
    }
    for (size_t i = 0; i < n; i++) free(w->cache_out[i].key), free(w->cache_out[i].value);
    w->ncache_out = 0;
    free(argcs);
    free(argvs);
    free(flat);
}
