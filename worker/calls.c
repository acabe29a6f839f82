/* The scheduler: the run queue, the gate's verdicts, the limiter's reservations and their
 * timers, the calls in flight, and what a finished call means for its task (next stage,
 * success, or a classified failure). Only this file changes the run queue, the timers and the
 * in-flight count; the layers above cancel through calls_cancel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_log.h"
#include "worker.h"

#define REDIS_RETRY_MS 500
#define DEFAULT_429_PAUSE_MS 5000

/* lane_of returns the lane of t's job, opening one (at the current pass, so that a job arriving
 * takes turns from now on, with no credit for the time it had no work) when it has none. */
static lane *lane_of(sched *s, const task *t) {
    const char *job = t->job_id ? t->job_id : "";
    for (int i = 0; i < s->nlanes; i++)
        if (strcmp(s->lanes[i].job_id, job) == 0) return &s->lanes[i];
    if (s->nlanes == LANES_MAX) return &s->lanes[LANES_MAX - 1];
    lane *l = &s->lanes[s->nlanes++];
    memset(l, 0, sizeof(*l));
    snprintf(l->job_id, sizeof(l->job_id), "%s", job);
    l->weight = t->priority > 0 ? t->priority : FC_PRIORITY_DEFAULT;
    l->pass = s->vtime;
    return l;
}

void calls_enqueue(worker *w, task *t, int front) {
    sched *s = &w->sched;
    lane *l = lane_of(s, t);
    t->state = TASK_QUEUED;
    t->next = NULL;
    if (front) {
        t->next = l->head;
        l->head = t;
        if (!l->tail) l->tail = t;
    } else {
        if (l->tail) l->tail->next = t;
        else l->head = t;
        l->tail = t;
    }
    s->queued++;
}

/* lane_close drops lane i, now empty. */
static void lane_close(sched *s, int i) {
    s->lanes[i] = s->lanes[--s->nlanes];
}

task *calls_take(worker *w) {
    sched *s = &w->sched;
    int best = -1;
    for (int i = 0; i < s->nlanes; i++)
        if (s->lanes[i].head && (best < 0 || s->lanes[i].pass < s->lanes[best].pass)) best = i;
    if (best < 0) return NULL;
    lane *l = &s->lanes[best];
    task *t = l->head;
    l->head = t->next;
    if (!l->head) l->tail = NULL;
    s->vtime = l->pass;
    l->pass += 1.0 / l->weight;
    if (!l->head) lane_close(s, best);
    s->queued--;
    t->next = NULL;
    t->state = TASK_IDLE;
    return t;
}

int calls_queued(const worker *w) { return w->sched.queued > 0; }

/* expected_completion estimates a stage's completion tokens for the limiter: 1.2 x the mean
 * seen so far (a quarter of MAX_TOKENS until an answer came), so the token bucket is not drained by
 * reservations that are mostly refunded later. */
static long expected_completion(const worker *w, int stage) {
    const token_mean *m = &w->sched.completion[stage - 1];
    if (m->n == 0) return w->pipe.max_tokens / 4; /* a prior until answers come; corrected upward */
    long e = (long)(m->sum / (double)m->n * 1.2) + 1;
    return e < w->pipe.max_tokens ? e : w->pipe.max_tokens;
}

static void learn_completion(worker *w, int stage, long tokens) {
    token_mean *m = &w->sched.completion[stage - 1];
    if (m->n == 1000) { /* keep it a recent mean */
        m->sum /= 2;
        m->n /= 2;
    }
    m->sum += (double)tokens;
    m->n++;
}

/* end_grant ends the gate grant t holds without a call made. */
static void end_grant(worker *w, task *t) {
    gate_release(&w->gate, t->probe);
    t->probe = 0;
}

/* retry_later ends t's attempt as a retry, for reason (enum metrics_retry). */
static void retry_later(task *t, int reason) {
    t->retry_reason = reason;
    task_finish(t, OUT_RETRY);
}

static void post(worker *w, task *t) {
    t->state = TASK_INFLIGHT;
    if (fc_http_post(w->http, w->url, t->request, strlen(t->request), t) != FC_OK) {
        end_grant(w, t);
        w->sched.inflight--;
        task_fail(t, FC_CLASS_RETRY, 0, "cannot start the HTTP request");
        retry_later(t, RETRY_INTERNAL);
        return;
    }
    t->calls++;
    jobs_count_call(w, t);
}

static void timer_insert(sched *s, task *t) {
    task **pp = &s->timers;
    while (*pp && (*pp)->ready_at_ms <= t->ready_at_ms) pp = &(*pp)->next;
    t->next = *pp;
    *pp = t;
    t->state = TASK_WAITING;
}

/* hold_reserved puts the calls that wait for their reserved slot back in the run queue, their
 * grants returned: after a 429 the whole fleet pauses, including calls reserved before it. */
static void hold_reserved(worker *w) {
    sched *s = &w->sched;
    while (s->timers) {
        task *t = s->timers;
        s->timers = t->next;
        s->inflight--;
        end_grant(w, t);
        calls_enqueue(w, t, 1);
    }
}

/* apply_fleet_pause learns whether another process's 429 pauses the fleet (refresh: ask Redis);
 * if so the gate holds calls until it ends and reserved calls go back to the queue. */
static int apply_fleet_pause(worker *w, int64_t now, int refresh) {
    int64_t left = fc_limiter_pause_left_us(w->limiter, refresh) / 1000;
    if (left <= 0) return 0;
    gate_pause(&w->gate, now + left);
    hold_reserved(w);
    return 1;
}

/* note_limiter logs the limiter going away and coming back, once each. */
static void note_limiter(worker *w, int down) {
    if (down && !w->sched.limiter_down)
        fc_warn("rate limiter unavailable (%s): calls paused", fc_redis_errstr(w->redis));
    else if (!down && w->sched.limiter_down)
        fc_info("rate limiter available again: calls resume");
    w->sched.limiter_down = down;
}

/* reserve asks the limiter for t's call, within its job's budget, in one step; returns 1 when
 * reserved (the call waits *wait ms), 0 when there is no grant (the gate holds calls until asked
 * again; the caller puts t back in its lane), or -1 when the job's budget is spent. */
static int reserve(worker *w, task *t, int64_t now, long *wait) {
    long prompt = fc_pipeline_estimate_tokens(strlen(t->request), 0), completion = expected_completion(w, t->stage);
    t->est_tokens = prompt + completion;
    fc_budget b;
    jobs_budget(w, t->job_id, now, &b);
    int64_t wait_us = 0;
    long long est_uusd = jobs_cost_uusd(w, prompt, completion);
    int rc = fc_limiter_acquire_job(w->limiter, t->est_tokens, est_uusd, &b, &wait_us);
    /* Refused: the budget may have been raised since it was read (a --resume); read it once more. */
    if (rc == FC_EBUDGET && jobs_budget_aged(w, t->job_id, now, BUDGET_RECHECK_MS, &b))
        rc = fc_limiter_acquire_job(w->limiter, t->est_tokens, est_uusd, &b, &wait_us);
    *wait = (long)((wait_us + 999) / 1000);
    if (rc == FC_EBUDGET) return -1;
    if (rc != FC_OK) { /* busy, Redis away or refusing: anything but a grant is no grant */
        gate_limiter_refused(&w->gate, now + (*wait > 0 ? *wait : REDIS_RETRY_MS));
        if (rc != FC_EBUSY) note_limiter(w, 1);
        return 0;
    }
    note_limiter(w, 0);
    t->rate_epoch = fc_limiter_epoch(w->limiter);
    /* A slot after a pause another process started: ask again when it ends. */
    return !(*wait > 0 && w->sched.timers && apply_fleet_pause(w, now, 0));
}

/* over_budget ends t, whose job's budget is spent: calls in flight finish, no new one starts. Said
 * once per job (the last job said is remembered). */
static void over_budget(worker *w, task *t) {
    task_fail(t, FC_CLASS_BUDGET, 0, "the job's budget is spent (--budget-usd / --budget-tokens)");
    task_finish(t, OUT_BUDGET);
    if (strcmp(w->sched.budget_said, t->job_id ? t->job_id : "") == 0) return;
    snprintf(w->sched.budget_said, sizeof(w->sched.budget_said), "%s", t->job_id ? t->job_id : "");
    fc_warn("job %s: its budget is spent: its remaining items end as failed (budget); --resume with a larger "
            "budget goes on", t->job_id);
}

void calls_schedule(worker *w) {
    sched *s = &w->sched;
    int64_t now = now_ms();
    while (s->queued && s->inflight < w->cfg->worker_count) {
        int probe, verdict = gate_acquire(&w->gate, now, &s->wake_ms, &probe);
        if (verdict != GATE_GO) return; /* GATE_HAND_BACK: the batches hand their items back */
        task *t = calls_take(w);
        t->probe = probe;
        if (probe & GATE_PROBE_AUTH) fc_info("probing the API credentials again");
        if (task_prepare(t, &w->proc, w->cfg->cache_ttl_ms > 0) != FC_OK) {
            end_grant(w, t);
            task_fail(t, FC_CLASS_RETRY, 0, "cannot build the request");
            retry_later(t, RETRY_INTERNAL);
            continue;
        }
        long wait;
        int reserved = reserve(w, t, now, &wait);
        if (reserved <= 0) end_grant(w, t);
        if (reserved < 0) {
            over_budget(w, t);
            continue;
        }
        if (reserved == 0) {
            calls_enqueue(w, t, 1);
            return;
        }
        s->inflight++;
        metrics_observe(&w->m->wait_seconds, (double)wait / 1000.0);
        if (wait > 0) {
            atomic_fetch_add(&w->m->rate_waits, 1);
            t->ready_at_ms = now + wait;
            timer_insert(s, t);
        } else {
            post(w, t);
        }
    }
}

void calls_fire_timers(worker *w) {
    sched *s = &w->sched;
    int64_t now = now_ms();
    if (s->timers && s->timers->ready_at_ms <= now && apply_fleet_pause(w, now, 1)) return;
    while (s->timers && s->timers->ready_at_ms <= now) {
        task *t = s->timers;
        s->timers = t->next;
        t->next = NULL;
        post(w, t);
    }
}

int calls_next_timeout(worker *w, int max_ms) {
    const sched *s = &w->sched;
    int64_t now = now_ms(), next = now + max_ms;
    if (s->timers && s->timers->ready_at_ms < next) next = s->timers->ready_at_ms;
    if (s->queued && s->wake_ms > now && s->wake_ms < next) next = s->wake_ms;
    return next > now ? (int)(next - now) : 0;
}

/* end_cancelled ends a task of a cancelled job whose call came back: no next stage, no retry. */
static void end_cancelled(task *t) {
    task_fail(t, FC_CLASS_CANCELLED, 0, "job cancelled by an operator");
    task_finish(t, OUT_DEAD);
}

/* finish_stage parses a 2xx answer into t's current stage; returns 0 when the stage succeeded. */
static int finish_stage(worker *w, task *t, const fc_http_done *d) {
    char why[256], *content = NULL, *result = NULL;
    long ptok = 0, ctok = 0;
    int rc = fc_pipeline_envelope(d->body, d->len, &content, &ptok, &ctok, why, sizeof(why));
    if (rc == FC_OK) {
        t->prompt_tokens += ptok;
        t->completion_tokens += ctok;
        learn_completion(w, t->stage, ctok);
        /* Charge what the estimate missed. An over-estimate is not refunded: calls reserved
         * meanwhile still hold their slots, so a refund would let a burst overlap them. The job's
         * budget is charged what the call cost, in the same round trip. */
        long over = ptok + ctok > t->est_tokens ? ptok + ctok - t->est_tokens : 0;
        fc_budget b;
        if (jobs_budget(w, t->job_id, now_ms(), &b))
            fc_limiter_settle(w->limiter, over, &b, ptok + ctok, jobs_cost_uusd(w, ptok, ctok));
        else if (over) fc_limiter_correct(w->limiter, over);
        rc = w->proc.answer(w->proc.self, t->stage, content, strlen(content), &result, why, sizeof(why));
    }
    if (rc == FC_OK) {
        cache_store(w, t->stage, t->cache_key, content); /* a hit goes through answer again */
        if (task_advance(t, &w->proc, result)) task_finish(t, OUT_OK);
        else if (t->cancelled) end_cancelled(t);
        else calls_enqueue(w, t, 1);
    } else {
        task_fail(t, FC_CLASS_RETRY, d->status, why);
    }
    free(content);
    return rc;
}

static void log_gate_event(worker *w, int ev, int status) {
    if (ev == GATE_EV_AUTH_BLOCKED)
        fc_error("API rejected the credentials (HTTP %d): stopped consuming; probing every %ld ms (AUTH_RETRY)",
                 status, w->cfg->auth_retry_ms);
    else if (ev == GATE_EV_AUTH_ACCEPTED)
        fc_info("API credentials accepted again: resuming");
}

/* advice_of reads the provider's request limit from an answer's x-ratelimit-* headers; 1 if it has one. */
static int advice_of(const fc_http_done *d, fc_rate_advice *a) {
    if (d->rl_limit_requests < 0 || d->rl_remaining_requests < 0 || d->rl_reset_requests_ms < 0) return 0;
    a->limit = d->rl_limit_requests;
    a->remaining = d->rl_remaining_requests;
    a->reset_ms = d->rl_reset_requests_ms;
    return 1;
}

static int adapts(const worker *w) { return w->cfg->rate_adapt && atomic_load(&w->m->rate_limit_milli) > 0; }

/* adapt_rate tells the fleet's adapted rate what an answer says: the provider's headers when it sends
 * them, else, for a 429, a multiplicative decrease (once per epoch). Returns 1 when a 429 needs no fleet
 * pause: it had no Retry-After, and the rate adapts instead. */
static int adapt_rate(worker *w, const task *t, const fc_http_done *d) {
    fc_rate_advice a;
    if (!adapts(w)) return 0;
    if (advice_of(d, &a)) fc_limiter_advise(w->limiter, &a);
    else if (d->status == 429) fc_limiter_backoff(w->limiter, t->rate_epoch);
    if (d->status != 429 || d->retry_after_s > 0) return 0;
    int64_t now = now_ms();
    sched *s = &w->sched;
    s->throttled_unlogged++;
    if (now - s->throttled_logged_ms >= 5000) {
        fc_warn("API throttled (429) %ld times: the fleet's rate adapts, now %.2f calls/s", s->throttled_unlogged,
                fc_limiter_rate(w->limiter));
        s->throttled_logged_ms = now;
        s->throttled_unlogged = 0;
    }
    return 1;
}

/* on_throttled pauses the fleet after a 429 for its Retry-After, capped at RETRY_AFTER_MAX; with
 * RATE_ADAPT and no Retry-After, the adapted rate slows the fleet instead. */
static void on_throttled(worker *w, const task *t, const fc_http_done *d) {
    if (adapt_rate(w, t, d)) return;
    long pause = gate_pause_ms(d->retry_after_s, DEFAULT_429_PAUSE_MS, w->cfg->retry_after_max_ms);
    fc_limiter_pause(w->limiter, pause);
    gate_pause(&w->gate, now_ms() + pause);
    hold_reserved(w);
    if (d->retry_after_s * 1000 > pause)
        fc_warn("API throttled (429) asking for a %ld s pause: the fleet pauses %ld ms (RETRY_AFTER_MAX)",
                d->retry_after_s, pause);
    else
        fc_warn("API throttled (429): the fleet pauses %ld ms", pause);
}

/* failure_class sorts a failed call: what the gate learns, and the item's error class. */
static int failure_class(const fc_http_done *d, int *gate_result) {
    if (d->err == FC_ETOOBIG) { /* the API answered, too much: the item's problem */
        *gate_result = GATE_CALL_ITEM_FAULT;
        return FC_CLASS_RETRY;
    }
    int api_fault = d->err || d->status >= 500 || d->status == 429 || d->status == 408;
    *gate_result = api_fault ? GATE_CALL_API_FAULT : GATE_CALL_ITEM_FAULT;
    return d->err ? FC_CLASS_RETRY : fc_pipeline_classify(d->status);
}

/* note_transport_failure logs a call that failed without an HTTP answer (timeout, connection
 * lost or refused): a healthy worker loses no call silently. At most one line a second, with
 * the count of those not logged, so an API that is down does not flood the log. */
static void note_transport_failure(worker *w, const task *t, const char *why, int64_t now) {
    sched *s = &w->sched;
    if (now - s->failure_logged_ms < 1000) {
        s->failures_unlogged++;
        return;
    }
    fc_info("call of item %lld (stage %d) failed: %s; the item is retried (%ld more such failures not logged)",
            t->item->position, t->stage, why, s->failures_unlogged);
    s->failure_logged_ms = now;
    s->failures_unlogged = 0;
}

/* retry_reason names why a failed call is retried, for the metrics. */
static int retry_reason(const fc_http_done *d) {
    if (d->err == FC_ETOOBIG) return RETRY_TOO_BIG;
    if (d->err == FC_ETIMEOUT) return RETRY_TIMEOUT;
    if (d->err) return RETRY_CONNECTION;
    if (d->status == 429) return RETRY_THROTTLED;
    if (d->status >= 500) return RETRY_SERVER_ERROR;
    return RETRY_CLIENT_ERROR;
}

/* count_call adds a finished call to the metrics: its stage, status class and duration. */
static void count_call(worker *w, const task *t, const fc_http_done *d) {
    int s = t->stage - 1 < METRICS_STAGES ? t->stage - 1 : METRICS_STAGES - 1;
    int k = STATUS_TRANSPORT;
    if (!d->err || d->status > 0) {
        if (d->status == 429) k = STATUS_429;
        else if (d->status >= 500) k = STATUS_5XX;
        else if (d->status >= 300) k = STATUS_4XX;
        else if (d->status >= 200) k = STATUS_2XX;
    }
    atomic_fetch_add(&w->m->api_calls[s][k], 1);
    metrics_observe(&w->m->call_seconds[s], d->elapsed_ms / 1000.0);
}

static void on_failure(worker *w, task *t, const fc_http_done *d, int probe, int64_t now) {
    char why[256];
    int r, cls = failure_class(d, &r);
    if (d->err == FC_ETOOBIG) snprintf(why, sizeof(why), "HTTP %d: %s", d->status, d->error);
    else if (d->err) snprintf(why, sizeof(why), "%s: %s", d->err == FC_ETIMEOUT ? "timeout" : "connection", d->error);
    else {
        char reason[200];
        fc_pipeline_error_reason(d->body, d->len, reason, sizeof(reason));
        snprintf(why, sizeof(why), "HTTP %d: %s", d->status, reason);
    }
    if (d->err && d->err != FC_ETOOBIG) note_transport_failure(w, t, why, now);
    if (d->status == 429 && adapts(w) && d->retry_after_s <= 0) r = GATE_CALL_THROTTLED;
    gate_call_done(&w->gate, probe, r, now);
    if (d->status == 429) on_throttled(w, t, d);
    task_fail(t, cls, d->status, why);
    snprintf(w->last_error, sizeof(w->last_error), "%s", why);
    w->last_error_ms = now;
    if (cls == FC_CLASS_PERMANENT) task_finish(t, OUT_DEAD);
    else if (t->cancelled) end_cancelled(t);
    else retry_later(t, retry_reason(d));
}

void calls_on_done(worker *w, const fc_http_done *d) {
    task *t = d->ud;
    int probe = t->probe;
    int64_t now = now_ms();
    w->sched.inflight--;
    t->probe = 0;
    t->state = TASK_IDLE;
    count_call(w, t, d);
    if (!d->err && d->status >= 200 && d->status < 300) {
        log_gate_event(w, gate_call_done(&w->gate, probe, GATE_CALL_OK, now), d->status);
        adapt_rate(w, t, d);
        if (finish_stage(w, t, d) == FC_OK) return;
        snprintf(w->last_error, sizeof(w->last_error), "%s", t->error);
        w->last_error_ms = now;
        if (t->cancelled) end_cancelled(t);
        else retry_later(t, RETRY_INVALID_ANSWER);
    } else if (!d->err && (d->status == 401 || d->status == 403)) {
        log_gate_event(w, gate_call_done(&w->gate, probe, GATE_CALL_AUTH_REJECTED, now), d->status);
        if (t->cancelled) end_cancelled(t);
        else calls_enqueue(w, t, 1); /* not the item's fault: it waits for valid credentials */
    } else {
        on_failure(w, t, d, probe, now);
    }
}

/* unlink_owned takes the tasks of owner out of the list at *pp; returns how many were queued (in a
 * lane) or waiting (on the timers). */
static int unlink_owned(worker *w, task **pp, task **tail, const void *owner, int queued) {
    int n = 0;
    task *last = NULL;
    while (*pp) {
        task *t = *pp;
        if (t->owner != owner) {
            last = t;
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        t->next = NULL;
        if (t->state == (queued ? TASK_QUEUED : TASK_WAITING)) n++;
        t->state = TASK_IDLE;
        end_grant(w, t);
    }
    if (tail) *tail = last;
    return n;
}

void calls_cancel(worker *w, task *v, size_t n, int inflight_too) {
    sched *s = &w->sched;
    if (n == 0) return;
    for (int i = s->nlanes - 1; i >= 0; i--) {
        lane *l = &s->lanes[i];
        s->queued -= unlink_owned(w, &l->head, &l->tail, v[0].owner, 1);
        if (!l->head) lane_close(s, i);
    }
    s->inflight -= unlink_owned(w, &s->timers, NULL, v[0].owner, 0);
    for (size_t i = 0; inflight_too && i < n; i++) {
        if (v[i].state != TASK_INFLIGHT) continue;
        fc_http_cancel(w->http, &v[i]);
        s->inflight--;
        v[i].state = TASK_IDLE;
        end_grant(w, &v[i]);
    }
}

static void release_inflight(void *ud, void *arg) { end_grant(arg, ud); }

void calls_cancel_all(worker *w) {
    sched *s = &w->sched;
    fc_http_cancel_all(w->http, release_inflight, w);
    while (s->timers) {
        task *t = s->timers;
        s->timers = t->next;
        end_grant(w, t);
    }
    s->nlanes = 0;
    s->queued = 0;
    s->inflight = 0;
}
