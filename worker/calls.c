/* API calls: the run queue, the limiter's reservations, the breaker, and what a finished
 * call means for its item (next stage, success, or a classified failure). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_log.h"
#include "worker.h"

#define REDIS_RETRY_MS 500
#define DEFAULT_429_PAUSE_MS 5000

static const char *stage_model(const worker *w, int stage) {
    return stage == 1 ? w->pipe.stage1_model : w->pipe.stage2_model;
}
static const char *stage_prompt(const worker *w, int stage) {
    return stage == 1 ? w->pipe.stage1_prompt : w->pipe.stage2_prompt;
}

void calls_enqueue(worker *w, job *j, int front) {
    j->state = JOB_QUEUED;
    j->next = NULL;
    if (front) {
        j->next = w->runq;
        w->runq = j;
        if (!w->runq_tail) w->runq_tail = j;
    } else {
        if (w->runq_tail) w->runq_tail->next = j;
        else w->runq = j;
        w->runq_tail = j;
    }
}

static job *runq_pop(worker *w) {
    job *j = w->runq;
    if (!j) return NULL;
    w->runq = j->next;
    if (!w->runq) w->runq_tail = NULL;
    j->next = NULL;
    return j;
}

/* prepare builds the request body and cache key of the job's current stage. */
static int prepare(worker *w, job *j) {
    if (j->request) return FC_OK;
    char *user = NULL;
    j->request = j->stage == 1 ? fc_pipeline_stage1_body(&w->pipe, j->item, &user)
                               : fc_pipeline_stage2_body(&w->pipe, j->item, j->stage1, &user);
    if (!j->request) {
        free(user);
        return FC_ENOMEM;
    }
    fc_pipeline_cache_key(stage_model(w, j->stage), stage_prompt(w, j->stage), user, j->cache_key);
    j->est_tokens = fc_pipeline_estimate_tokens(strlen(j->request), w->pipe.max_tokens);
    free(user);
    return FC_OK;
}

static void post(worker *w, job *j) {
    j->state = JOB_INFLIGHT;
    if (fc_http_post(w->http, w->url, j->request, strlen(j->request), j) != FC_OK) {
        snprintf(j->error, sizeof(j->error), "cannot start the HTTP request");
        j->err_class = FC_CLASS_RETRY;
        w->inflight--;
        batch_job_done(w, j, OUT_RETRY);
        return;
    }
    j->calls++;
    atomic_fetch_add(&w->m->api_calls, 1);
}

static void timer_insert(worker *w, job *j) {
    job **pp = &w->timers;
    while (*pp && (*pp)->ready_at_ms <= j->ready_at_ms) pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    j->state = JOB_WAITING;
}

/* may_call says whether new calls may start: not stopping, not blocked by auth or the breaker. */
static int may_call(worker *w, int64_t now) {
    if (w->stopping) return 0;
    if (w->auth_blocked) {
        if (now < w->auth_probe_ms || w->inflight > 0) return 0;
        w->auth_probe_ms = now + w->cfg->auth_retry_ms; /* one probe, then wait again */
        fc_info("probing the API credentials again");
        return 1;
    }
    if (now < w->limiter_retry_ms) return 0;
    return fc_breaker_allow(w->breaker, now);
}

void calls_schedule(worker *w) {
    int64_t now = now_ms();
    while (w->runq && w->inflight < w->cfg->worker_count && may_call(w, now)) {
        job *j = runq_pop(w);
        if (prepare(w, j) != FC_OK) {
            calls_enqueue(w, j, 1);
            return;
        }
        long wait = 0;
        int rc = fc_limiter_acquire(w->limiter, j->est_tokens, &wait);
        if (rc == FC_ECONN || rc == FC_EBUSY) {
            calls_enqueue(w, j, 1);
            w->limiter_retry_ms = now + (rc == FC_EBUSY && wait > 0 ? wait : REDIS_RETRY_MS);
            if (rc == FC_ECONN) fc_warn("rate limiter unavailable (Redis down): calls paused");
            return;
        }
        w->inflight++;
        if (wait > 0) {
            atomic_fetch_add(&w->m->rate_waits, 1);
            atomic_fetch_add(&w->m->rate_wait_ms, wait);
            j->ready_at_ms = now + wait;
            timer_insert(w, j);
        } else {
            post(w, j);
        }
    }
}

void calls_fire_timers(worker *w) {
    int64_t now = now_ms();
    while (w->timers && w->timers->ready_at_ms <= now) {
        job *j = w->timers;
        w->timers = j->next;
        j->next = NULL;
        post(w, j);
    }
}

int calls_next_timeout(worker *w, int max_ms) {
    int64_t now = now_ms(), next = now + max_ms;
    if (w->timers && w->timers->ready_at_ms < next) next = w->timers->ready_at_ms;
    if (w->runq && w->limiter_retry_ms > now && w->limiter_retry_ms < next) next = w->limiter_retry_ms;
    return next > now ? (int)(next - now) : 0;
}

/* cache_store remembers a stage's answer (best effort: a failure only costs a future call). */
static void cache_store(worker *w, const char *key, int stage, const char *value) {
    if (w->cfg->cache_ttl_ms <= 0) return;
    char k[160];
    snprintf(k, sizeof(k), "%s:cache:s%d:%s", w->cfg->queue_prefix, stage, key);
    fc_redis_cmd(w->redis, NULL, "SET %s %s PX %ld", k, value, w->cfg->cache_ttl_ms);
}

static void set_failure(job *j, int cls, int status, const char *why) {
    j->err_class = cls;
    j->http_status = status;
    snprintf(j->error, sizeof(j->error), "%s", why);
}

/* finish_stage parses a 2xx answer; returns 0 when the stage succeeded. */
static int finish_stage(worker *w, job *j, const fc_http_done *d) {
    char why[256], *content = NULL;
    long ptok = 0, ctok = 0;
    int rc = fc_pipeline_envelope(d->body, d->len, &content, &ptok, &ctok, why, sizeof(why));
    if (rc == FC_OK) {
        j->prompt_tokens += ptok;
        j->completion_tokens += ctok;
        fc_limiter_correct(w->limiter, ptok + ctok - j->est_tokens);
        if (j->stage == 1) {
            free(j->stage1);
            j->stage1 = NULL;
            rc = fc_pipeline_stage1_parse(content, strlen(content), &j->stage1, why, sizeof(why));
            if (rc == FC_OK) cache_store(w, j->cache_key, 1, j->stage1);
        } else {
            rc = fc_pipeline_stage2_parse(content, strlen(content), &j->cards, &j->ncards, why, sizeof(why));
            if (rc == FC_OK) cache_store(w, j->cache_key, 2, content);
        }
    }
    free(content);
    if (rc != FC_OK) set_failure(j, FC_CLASS_RETRY, d->status, why);
    return rc;
}

/* advance moves a job whose stage succeeded to the next stage, or to success. */
static void advance(worker *w, job *j) {
    free(j->request);
    j->request = NULL;
    if (j->stage == 1) {
        j->stage = 2;
        calls_enqueue(w, j, 1);
    } else {
        batch_job_done(w, j, OUT_OK);
    }
}

static void on_auth_failure(worker *w, job *j, const fc_http_done *d) {
    if (!w->auth_blocked)
        fc_error("API rejected the credentials (HTTP %d): stopped consuming; probing every %ld ms (AUTH_RETRY)",
                 d->status, w->cfg->auth_retry_ms);
    w->auth_blocked = 1;
    w->auth_probe_ms = now_ms() + w->cfg->auth_retry_ms;
    atomic_store(&w->m->ready, 0);
    calls_enqueue(w, j, 1); /* not the item's fault: it waits for valid credentials */
}

static void on_failure(worker *w, job *j, const fc_http_done *d) {
    char why[256];
    int cls = d->err ? FC_CLASS_RETRY : fc_pipeline_classify(d->status);
    if (d->err) snprintf(why, sizeof(why), "%s: %s", d->err == FC_ETIMEOUT ? "timeout" : "connection", d->error);
    else {
        char reason[200];
        fc_pipeline_error_reason(d->body, d->len, reason, sizeof(reason));
        snprintf(why, sizeof(why), "HTTP %d: %s", d->status, reason);
    }
    atomic_fetch_add(&w->m->api_errors, 1);
    if (d->status == 429) {
        long pause = d->retry_after_s > 0 ? d->retry_after_s * 1000 : DEFAULT_429_PAUSE_MS;
        atomic_fetch_add(&w->m->api_429, 1);
        fc_limiter_pause(w->limiter, pause);
        fc_warn("API throttled (429): the fleet pauses %ld ms", pause);
    }
    set_failure(j, cls, d->status, why);
    batch_job_done(w, j, cls == FC_CLASS_PERMANENT ? OUT_DEAD : OUT_RETRY);
}

void calls_on_done(worker *w, const fc_http_done *d) {
    job *j = d->ud;
    w->inflight--;
    int64_t now = now_ms();
    if (d->status >= 200 && d->status < 300) {
        int ok = finish_stage(w, j, d) == FC_OK;
        fc_breaker_record(w->breaker, 1, now); /* the API answered; a bad answer is the item's problem */
        if (w->auth_blocked) {
            w->auth_blocked = 0;
            fc_info("API credentials accepted again: resuming");
        }
        if (ok) advance(w, j);
        else batch_job_done(w, j, OUT_RETRY);
        return;
    }
    if (!d->err && (d->status == 401 || d->status == 403)) {
        on_auth_failure(w, j, d);
        return;
    }
    int api_fault = d->err || d->status >= 500 || d->status == 429 || d->status == 408;
    fc_breaker_record(w->breaker, !api_fault, now);
    on_failure(w, j, d);
}

void calls_abandon_queued(worker *w, batch *b) {
    job **pp = &w->runq;
    w->runq_tail = NULL;
    while (*pp) {
        if ((*pp)->b == b) {
            job *j = *pp;
            *pp = j->next;
            j->next = NULL;
            j->state = JOB_DONE;
        } else {
            w->runq_tail = *pp;
            pp = &(*pp)->next;
        }
    }
    pp = &w->timers;
    while (*pp) {
        if ((*pp)->b == b) {
            job *j = *pp;
            *pp = j->next;
            j->next = NULL;
            j->state = JOB_DONE;
            w->inflight--;
        } else {
            pp = &(*pp)->next;
        }
    }
}

/* cache_get fetches a cached stage answer; NULL on a miss (caller frees). */
static char *cache_get(worker *w, int stage, const char *key) {
    char k[160];
    fc_reply r;
    snprintf(k, sizeof(k), "%s:cache:s%d:%s", w->cfg->queue_prefix, stage, key);
    if (fc_redis_cmd(w->redis, &r, "GET %s", k) != FC_OK || r.type != FC_REPLY_STR) {
        fc_reply_free(&r);
        return NULL;
    }
    char *v = r.str;
    r.str = NULL;
    fc_reply_free(&r);
    return v;
}

/* try_cache serves the job's current stage from the cache; returns 1 on a hit. */
static int try_cache(worker *w, job *j) {
    if (prepare(w, j) != FC_OK) return 0;
    char *v = cache_get(w, j->stage, j->cache_key);
    if (!v) return 0;
    char why[256];
    int rc = j->stage == 1 ? fc_pipeline_stage1_parse(v, strlen(v), &j->stage1, why, sizeof(why))
                           : fc_pipeline_stage2_parse(v, strlen(v), &j->cards, &j->ncards, why, sizeof(why));
    free(v);
    if (rc != FC_OK) return 0;
    j->cache_hits++;
    atomic_fetch_add(&w->m->cache_hits, 1);
    return 1;
}

void calls_cache_lookup(worker *w, batch *b) {
    for (size_t i = 0; i < b->msg.nitems; i++) {
        job *j = &b->jobs[i];
        /* Stage 2 is looked up only after a stage-1 hit: a fresh analysis has no cached cards. */
        if (w->cfg->cache_ttl_ms > 0 && try_cache(w, j)) {
            free(j->request);
            j->request = NULL;
            j->stage = 2;
            if (try_cache(w, j)) {
                free(j->request);
                j->request = NULL;
                j->state = JOB_DONE;
                batch_job_done(w, j, OUT_OK);
                continue;
            }
        }
        calls_enqueue(w, j, 0);
    }
}
