/* The result cache: each stage's validated answer is kept in Redis under a hash of model,
 * prompt and input, so a redelivered batch, a resumed job or a re-run pays only for what was
 * not done before. Lookups take one round trip per batch and stage (MGET); writes are queued
 * and sent as one pipeline per turn of the event loop. A Redis failure only costs calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_log.h"
#include "worker.h"

#define KEY_MAX 160

static void cache_key(const worker *w, int stage, const char *hash, char *out) {
    snprintf(out, KEY_MAX, "%s:cache:s%d:%s", w->cfg->queue_prefix, stage, hash);
}

/* serve validates a cached answer into the job's current stage's result; 1 on success. */
static int serve(worker *w, job *j, const char *v, size_t len) {
    char why[256], *result = NULL;
    if (w->proc.answer(w->proc.self, j->stage, v, len, &result, why, sizeof(why)) != FC_OK) return 0;
    free(j->results[j->stage - 1]);
    j->results[j->stage - 1] = result;
    free(j->request);
    j->request = NULL;
    j->cache_hits++;
    atomic_fetch_add(&w->m->cache_hits, 1);
    return 1;
}

/* lookup asks for the current stage of the jobs in v[0..n) at once and marks the hits. */
static void lookup(worker *w, job **v, size_t n, char *hit) {
    const char **argv = calloc(n + 1, sizeof(*argv));
    char (*keys)[KEY_MAX] = calloc(n, KEY_MAX);
    fc_reply r = {0};
    if (!argv || !keys) goto out;
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        cache_key(w, v[i]->stage, v[i]->cache_key, keys[i]);
        argv[i + 1] = keys[i];
    }
    if (fc_redis_command(w->redis, &r, (int)n + 1, argv, NULL) != FC_OK || r.type != FC_REPLY_ARRAY || r.nelem != n)
        goto out;
    for (size_t i = 0; i < n; i++)
        hit[i] = r.elem[i].type == FC_REPLY_STR && serve(w, v[i], r.elem[i].str, r.elem[i].len);
out:
    fc_reply_free(&r);
    free(argv);
    free(keys);
}

/* lookup_stage looks up every job of v[0..n) that is at `stage`; returns the hits' count and
 * leaves the hits first in v. */
static size_t lookup_stage(worker *w, job **v, size_t n) {
    char *hit = calloc(n ? n : 1, 1);
    size_t k = 0;
    if (!hit) return 0;
    lookup(w, v, n, hit);
    for (size_t i = 0; i < n; i++)
        if (hit[i]) {
            job *t = v[k];
            v[k++] = v[i];
            v[i] = t;
        }
    free(hit);
    return k;
}

void cache_lookup_batch(worker *w, batch *b) {
    size_t n = b->msg.nitems, hits[FC_STAGES_MAX] = {0};
    job **v = calloc(n, sizeof(*v));
    if (v && w->cfg->cache_ttl_ms > 0) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (calls_prepare(w, &b->jobs[i]) == FC_OK) v[m++] = &b->jobs[i];
        /* A stage is looked up only after a hit of the stage before: its request is made from that result. */
        for (int s = 0; s < w->proc.nstages && m > 0; s++) {
            m = hits[s] = lookup_stage(w, v, m);
            if (s + 1 == w->proc.nstages) break;
            size_t k = 0; /* the hits move on; one whose next request cannot be made now is made when it runs */
            for (size_t i = 0; i < m; i++) {
                v[i]->stage++;
                if (calls_prepare(w, v[i]) == FC_OK) {
                    job *t = v[k];
                    v[k++] = v[i];
                    v[i] = t;
                }
            }
            m = k;
        }
        for (size_t i = 0; i < hits[w->proc.nstages - 1]; i++) batch_job_done(w, v[i], OUT_OK);
    }
    for (size_t i = 0; i < n; i++)
        if (b->jobs[i].state != JOB_DONE) calls_enqueue(w, &b->jobs[i], 0);
    if (hits[0]) fc_debug("batch %s-%ld: %zu of %zu items' first stage from the cache, %zu all stages", b->msg.hdr.job_id,
                          b->msg.hdr.batch, hits[0], n, hits[w->proc.nstages - 1]);
    free(v);
}

void cache_store(worker *w, int stage, const char *hash, const char *value) {
    if (w->cfg->cache_ttl_ms <= 0) return;
    if (w->ncache_out == w->cache_cap) {
        size_t cap = w->cache_cap ? w->cache_cap * 2 : 64;
        cache_write *p = realloc(w->cache_out, cap * sizeof(*p));
        if (!p) return;
        w->cache_out = p;
        w->cache_cap = cap;
    }
    char key[KEY_MAX];
    cache_key(w, stage, hash, key);
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
