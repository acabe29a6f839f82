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

/* expected_completion estimates a stage's completion tokens for the limiter: 1.2 x the mean
 * seen so far (a quarter of MAX_TOKENS until an answer came), so the token bucket is not drained by
 * reservations that are mostly refunded later. */
static long expected_completion(const worker *w, int stage) {
    const token_mean *m = &w->completion[stage - 1];
    if (m->n == 0) return w->pipe.max_tokens / 4; /* a prior until answers come; corrected upward */
    long e = (long)(m->sum / (double)m->n * 1.2) + 1;
    return e < w->pipe.max_tokens ? e : w->pipe.max_tokens;
}

static void learn_completion(worker *w, int stage, long tokens) {
    token_mean *m = &w->completion[stage - 1];
    if (m->n == 1000) { /* keep it a recent mean */
        m->sum /= 2;
        m->n /= 2;
    }
    m->sum += (double)tokens;
    m->n++;
}

int calls_prepare(worker *w, job *j) {
    if (j->request) return FC_OK;
    char *user = NULL;
    const char *prev = j->stage > 1 ? j->results[j->stage - 2] : NULL;
    j->request = w->proc.request(w->proc.self, j->stage, j->item, prev, &user);
    if (!j->request) {
        free(user);
        return FC_ENOMEM;
    }
    if (w->cfg->cache_ttl_ms > 0) w->proc.cache_key(w->proc.self, j->stage, user ? user : "", j->cache_key);
    size_t len = strlen(j->request);
    j->est_tokens = fc_pipeline_estimate_tokens(len, 0) + expected_completion(w, j->stage);
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

/* hold_reserved puts the calls that wait for their reserved slot back in the run queue and
 * makes no new call before until_ms: after a 429 the whole fleet pauses, including calls
 * reserved before it. */
static void hold_reserved(worker *w, int64_t until_ms) {
    while (w->timers) {
        job *j = w->timers;
        w->timers = j->next;
        w->inflight--;
        calls_enqueue(w, j, 1);
    }
    if (until_ms > w->limiter_retry_ms) w->limiter_retry_ms = until_ms;
}

/* fleet_paused holds reserved calls while another process's 429 pauses the fleet. */
static int fleet_paused(worker *w, int64_t now, int refresh) {
    int64_t left = fc_limiter_pause_left_us(w->limiter, refresh) / 1000;
    if (left <= 0) return 0;
    hold_reserved(w, now + left);
    return 1;
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
        if (calls_prepare(w, j) != FC_OK) { /* out of memory, or the processor cannot build it */
            snprintf(j->error, sizeof(j->error), "cannot build the stage %d request", j->stage);
            j->err_class = FC_CLASS_RETRY;
            batch_job_done(w, j, OUT_RETRY);
            continue;
        }
        long wait = 0;
        int rc = fc_limiter_acquire(w->limiter, j->est_tokens, &wait);
        if (rc == FC_ECONN || rc == FC_EBUSY) {
            calls_enqueue(w, j, 1);
            w->limiter_retry_ms = now + (rc == FC_EBUSY && wait > 0 ? wait : REDIS_RETRY_MS);
            if (rc == FC_ECONN && !w->limiter_down) fc_warn("rate limiter unavailable (Redis down): calls paused");
            w->limiter_down = rc == FC_ECONN;
            return;
        }
        if (w->limiter_down) fc_info("rate limiter available again: calls resume");
        w->limiter_down = 0;
        if (wait > 0 && w->timers && fleet_paused(w, now, 0)) {
            calls_enqueue(w, j, 1); /* its slot is after the pause; ask again then */
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
    if (w->timers && w->timers->ready_at_ms <= now && fleet_paused(w, now, 1)) return;
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
        learn_completion(w, j->stage, ctok);
        /* Charge what the estimate missed. An over-estimate is not refunded: calls reserved
         * meanwhile still hold their slots, so a refund would let a burst overlap them. */
        if (ptok + ctok > j->est_tokens) fc_limiter_correct(w->limiter, ptok + ctok - j->est_tokens);
        char *result = NULL;
        rc = w->proc.answer(w->proc.self, j->stage, content, strlen(content), &result, why, sizeof(why));
        if (rc == FC_OK) {
            free(j->results[j->stage - 1]);
            j->results[j->stage - 1] = result;
            cache_store(w, j->stage, j->cache_key, content); /* a hit goes through answer again */
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
    if (j->stage < w->proc.nstages) {
        j->stage++;
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
        hold_reserved(w, now_ms() + pause);
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
