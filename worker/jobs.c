/* The jobs this worker follows: every job listed in P:active (fc_jobs.h) has a work queue of its own,
 * which the worker consumes beside the shared one, so that it holds work of every job at once and
 * its scheduler (calls.c) can share the calls between them. Once a second it reads the list, starts
 * consuming the queues of new jobs, stops consuming those no longer listed, and takes out of the list
 * the jobs whose every item has its final outcome (the worker that takes one out deletes its queue). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_jobs.h"
#include "fc_keys.h"
#include "fc_log.h"
#include "worker.h"

/* listed reads the followed jobs' ids (the oldest first) into ids; returns how many, or -1. */
static int listed(worker *w, char ids[][FC_JOB_ID_MAX + 1]) {
    char key[FC_KEY_MAX];
    fc_reply r;
    if (fc_jobs_key(key, sizeof(key), w->cfg->queue_prefix) != FC_OK) return -1;
    if (fc_redis_cmd(w->redis, &r, "ZRANGE %s 0 %d", key, FC_JOBS_FOLLOWED_MAX - 1) != FC_OK) return -1;
    int n = 0;
    for (size_t i = 0; r.type == FC_REPLY_ARRAY && i < r.nelem && n < FC_JOBS_FOLLOWED_MAX; i++)
        if (r.elem[i].type == FC_REPLY_STR && fc_job_id_valid(r.elem[i].str))
            snprintf(ids[n++], FC_JOB_ID_MAX + 1, "%s", r.elem[i].str);
    fc_reply_free(&r);
    return n;
}

/* unlist takes a complete (or expired) job out of P:active; the worker whose ZREM removed it deletes its
 * queue, unless messages came in meanwhile (a resumed job: it is then listed again). */
static void unlist(worker *w, const char *job, const char *why) {
    char key[FC_KEY_MAX], queue[FC_NAME_MAX];
    fc_reply r;
    if (fc_jobs_key(key, sizeof(key), w->cfg->queue_prefix) != FC_OK) return;
    if (fc_redis_cmd(w->redis, &r, "ZREM %s %s", key, job) != FC_OK) return;
    int removed = r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    if (!removed) return;
    fc_topology_job_queue(queue, w->cfg->queue_prefix, job);
    fc_amqp_cancel_queue(w->amqp, queue);
    int rc = worker_may_ask(w) ? fc_amqp_delete_queue_if_empty(w->amqp, queue) : FC_EBUSY; /* else it expires */
    fc_info("job %s %s: no longer followed%s", job, why,
            rc == FC_OK ? ", its queue deleted" : " (its queue kept: not empty, or not now; it expires after 7 days unused)");
}

/* check_done takes out of the list the jobs whose record says every item has its final outcome, and
 * those whose record expired. One pipelined round trip for all of them. */
static void check_done(worker *w, char ids[][FC_JOB_ID_MAX + 1], int n) {
    if (n == 0) return;
    char keys[FC_JOBS_FOLLOWED_MAX][2][FC_KEY_MAX];
    const char *argv[FC_JOBS_FOLLOWED_MAX * 2][6];
    const char **argvs[FC_JOBS_FOLLOWED_MAX * 2];
    int argcs[FC_JOBS_FOLLOWED_MAX * 2] = {0};
    fc_reply rep[FC_JOBS_FOLLOWED_MAX * 2];
    for (int i = 0; i < n; i++) {
        fc_key_job(keys[i][0], FC_KEY_MAX, w->cfg->queue_prefix, ids[i], FC_JOB_META);
        fc_key_job(keys[i][1], FC_KEY_MAX, w->cfg->queue_prefix, ids[i], FC_JOB_OUTCOME);
        const char *meta[] = {"HMGET", keys[i][0], "items", "published", "created_ms"};
        memcpy(argv[2 * i], meta, sizeof(meta));
        argcs[2 * i] = 5;
        argv[2 * i + 1][0] = "HLEN", argv[2 * i + 1][1] = keys[i][1];
        argcs[2 * i + 1] = 2;
        argvs[2 * i] = argv[2 * i], argvs[2 * i + 1] = argv[2 * i + 1];
    }
    memset(rep, 0, sizeof(rep));
    if (fc_redis_pipeline(w->redis, rep, (size_t)(2 * n), argcs, argvs, NULL) == FC_OK) {
        for (int i = 0; i < n; i++) {
            const fc_reply *m = &rep[2 * i], *h = &rep[2 * i + 1];
            if (m->type != FC_REPLY_ARRAY || m->nelem != 3 || h->type != FC_REPLY_INT) continue;
            if (m->elem[2].type != FC_REPLY_STR) unlist(w, ids[i], "has no record (expired)");
            else if (m->elem[1].type == FC_REPLY_STR && strcmp(m->elem[1].str, "1") == 0 &&
                     m->elem[0].type == FC_REPLY_STR && h->integer >= atoll(m->elem[0].str))
                unlist(w, ids[i], "is complete");
        }
    }
    for (int i = 0; i < 2 * n; i++) fc_reply_free(&rep[i]);
    for (int i = 0; i < n && worker_may_ask(w); i++) {
        char queue[FC_NAME_MAX];
        long ready = -1;
        fc_topology_job_queue(queue, w->cfg->queue_prefix, w->followed[i]);
        if (fc_amqp_queue_depth(w->amqp, queue, &ready, NULL) != FC_OK) ready = -1;
        pthread_mutex_lock(&w->m->jobs_lock);
        metrics_job(w->m, w->followed[i])->ready = ready;
        pthread_mutex_unlock(&w->m->jobs_lock);
    }
}

static int among(char ids[][FC_JOB_ID_MAX + 1], int n, const char *job) {
    for (int i = 0; i < n; i++)
        if (strcmp(ids[i], job) == 0) return 1;
    return 0;
}

void jobs_follow(worker *w, int64_t now) {
    char ids[FC_JOBS_FOLLOWED_MAX][FC_JOB_ID_MAX + 1], queue[FC_NAME_MAX];
    if (!w->consuming || w->gate.stopping) return;
    /* Publishes awaiting confirms (or the broker blocking us): ask next time, not now (worker_may_ask). */
    if (!worker_may_ask(w)) {
        w->jobs_due_ms = 0;
        return;
    }
    if (now < w->jobs_due_ms) return;
    w->jobs_due_ms = now + JOBS_FOLLOW_MS;
    int n = listed(w, ids);
    if (n < 0) return; /* Redis away: keep following what is followed */
    for (int i = w->nfollowed - 1; i >= 0; i--) {
        if (among(ids, n, w->followed[i])) continue;
        fc_topology_job_queue(queue, w->cfg->queue_prefix, w->followed[i]);
        fc_amqp_cancel_queue(w->amqp, queue);
        pthread_mutex_lock(&w->m->jobs_lock); /* its queue's depth is no longer sampled */
        metrics_job(w->m, w->followed[i])->ready = -1;
        pthread_mutex_unlock(&w->m->jobs_lock);
        memmove(w->followed[i], w->followed[w->nfollowed - 1], sizeof(w->followed[0]));
        w->nfollowed--;
    }
    for (int i = 0; i < n && worker_may_ask(w); i++) {
        fc_topology_job_queue(queue, w->cfg->queue_prefix, ids[i]);
        if (fc_amqp_consuming_queue(w->amqp, queue)) continue;
        if (fc_amqp_queue_depth(w->amqp, queue, NULL, NULL) != FC_OK) continue; /* not declared (yet) */
        if (fc_amqp_consume(w->amqp, queue, worker_prefetch(w)) != FC_OK) break;
        if (!among(w->followed, w->nfollowed, ids[i]))
            snprintf(w->followed[w->nfollowed++], FC_JOB_ID_MAX + 1, "%s", ids[i]);
        fc_info("following job %s (its queue %s)", ids[i], queue);
    }
    check_done(w, ids, n);
}

/* ---- budgets ----------------------------------------------------------------------- */

/* budget_slot returns the cached budget of job, read again from its record when older than
 * BUDGET_ASK_MS (a --resume may raise it); the oldest entry makes room for a new job. */
static job_budget *budget_slot(worker *w, const char *job, int64_t now, long max_age_ms) {
    job_budget *slot = &w->budgets[0];
    for (int i = 0; i < BUDGET_CACHE; i++) {
        job_budget *b = &w->budgets[i];
        if (strcmp(b->job_id, job) == 0) {
            if (now - b->asked_ms < max_age_ms) return b;
            slot = b;
            break;
        }
        if (b->asked_ms < slot->asked_ms) slot = b;
    }
    char key[FC_KEY_MAX];
    fc_reply r;
    if (fc_key_job(key, sizeof(key), w->cfg->queue_prefix, job, FC_JOB_META) != FC_OK) return NULL;
    const char *argv[] = {"HMGET", key, "budget_tokens", "budget_uusd"};
    if (fc_redis_command(w->redis, &r, 4, argv, NULL) != FC_OK) {
        /* Redis away: the limiter gives no grant either; a known budget is kept meanwhile. */
        return strcmp(slot->job_id, job) == 0 ? slot : NULL;
    }
    snprintf(slot->job_id, sizeof(slot->job_id), "%s", job);
    slot->asked_ms = now;
    slot->tokens = r.type == FC_REPLY_ARRAY && r.nelem == 2 && r.elem[0].str ? atoll(r.elem[0].str) : 0;
    slot->uusd = r.type == FC_REPLY_ARRAY && r.nelem == 2 && r.elem[1].str ? atoll(r.elem[1].str) : 0;
    fc_reply_free(&r);
    return slot;
}

int jobs_budget(worker *w, const char *job_id, int64_t now, fc_budget *out) {
    return jobs_budget_aged(w, job_id, now, BUDGET_ASK_MS, out);
}

int jobs_budget_aged(worker *w, const char *job_id, int64_t now, long max_age_ms, fc_budget *out) {
    memset(out, 0, sizeof(*out));
    if (!job_id || !job_id[0]) return 0;
    const job_budget *b = budget_slot(w, job_id, now, max_age_ms);
    if (!b || (b->tokens <= 0 && b->uusd <= 0)) return 0;
    out->job_id = b->job_id;
    out->limit_tokens = b->tokens;
    out->limit_uusd = b->uusd;
    return 1;
}

long long jobs_cost_uusd(const worker *w, long prompt_tokens, long completion_tokens) {
    /* PRICE_INPUT and PRICE_OUTPUT are USD per million tokens: micro-USD per token. */
    return (long long)(prompt_tokens * w->cfg->price_input + completion_tokens * w->cfg->price_output + 0.5);
}

/* ---- metrics --------------------------------------------------------------------------- */

void jobs_count_call(worker *w, const task *t) {
    if (!t->job_id || !t->job_id[0]) return;
    pthread_mutex_lock(&w->m->jobs_lock);
    job_gauge *g = metrics_job(w->m, t->job_id);
    g->calls++;
    g->priority = t->priority;
    pthread_mutex_unlock(&w->m->jobs_lock);
}

void jobs_sample(worker *w, int64_t now) {
    (void)now;
    int n = w->nfollowed;
    if (n == 0) return;
    char keys[FC_JOBS_FOLLOWED_MAX][2][FC_KEY_MAX];
    const char *argv[FC_JOBS_FOLLOWED_MAX * 2][5];
    const char **argvs[FC_JOBS_FOLLOWED_MAX * 2];
    int argcs[FC_JOBS_FOLLOWED_MAX * 2] = {0};
    fc_reply rep[FC_JOBS_FOLLOWED_MAX * 2];
    for (int i = 0; i < n; i++) {
        fc_key_job(keys[i][0], FC_KEY_MAX, w->cfg->queue_prefix, w->followed[i], FC_JOB_META);
        fc_key_job(keys[i][1], FC_KEY_MAX, w->cfg->queue_prefix, w->followed[i], FC_JOB_BUDGET);
        const char *meta[] = {"HMGET", keys[i][0], "budget_tokens", "budget_uusd", "priority"};
        const char *spent[] = {"HMGET", keys[i][1], "tokens", "uusd", NULL};
        memcpy(argv[2 * i], meta, sizeof(meta));
        memcpy(argv[2 * i + 1], spent, sizeof(spent));
        argcs[2 * i] = 5, argcs[2 * i + 1] = 4;
        argvs[2 * i] = argv[2 * i], argvs[2 * i + 1] = argv[2 * i + 1];
    }
    memset(rep, 0, sizeof(rep));
    if (fc_redis_pipeline(w->redis, rep, (size_t)(2 * n), argcs, argvs, NULL) == FC_OK) {
        pthread_mutex_lock(&w->m->jobs_lock);
        for (int i = 0; i < n; i++) {
            const fc_reply *m = &rep[2 * i], *s = &rep[2 * i + 1];
            if (m->type != FC_REPLY_ARRAY || m->nelem != 3 || s->type != FC_REPLY_ARRAY || s->nelem != 2) continue;
            job_gauge *g = metrics_job(w->m, w->followed[i]);
            g->budget_tokens = m->elem[0].str ? atoll(m->elem[0].str) : 0;
            g->budget_uusd = m->elem[1].str ? atoll(m->elem[1].str) : 0;
            if (m->elem[2].str) g->priority = atoi(m->elem[2].str);
            g->spent_tokens = s->elem[0].str ? atoll(s->elem[0].str) : 0;
            g->spent_uusd = s->elem[1].str ? atoll(s->elem[1].str) : 0;
        }
        pthread_mutex_unlock(&w->m->jobs_lock);
    }
    for (int i = 0; i < 2 * n; i++) fc_reply_free(&rep[i]);
}
