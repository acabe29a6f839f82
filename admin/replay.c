/* What a replay or a partial purge does to one selected dead letter D (hash h, marker P:replayed:<h>):
 *   1. Take it on (admin_marker_claim, atomic): the marker becomes pending with the positions taken out
 *      of D, and, for a replay, the job's outcome and failed entries of those items move into it (a
 *      waiting producer waits for them again). Items that ended ok since are not sent again.
 *   2. Replay: publish the replacement R (the items, attempt 1, errors dropped) to P.batches and wait
 *      for its confirm. When only part of D is taken, record that R is out (r = 1), then publish the
 *      remainder Q (D with the other items, same headers) to P.dead and wait for its confirm.
 *   3. Replace the marker with "done" (the stash dropped), then ack D.
 * D stays in P.dead until step 3, so a run killed at any instant loses nothing; the next run that meets
 * D finds its marker and finishes the plan instead of starting another:
 *   - done: D is acked (its replacement and remainder went out);
 *   - pending: R is sent again only if it is not known to be out (r) and none of its items has an outcome
 *     or a retry entry since (a worker took R: it is out); Q is sent only if no copy of it is in P.dead
 *     (every dead letter of the pass is read first) and it was not handled since (its own marker).
 * What cannot be told apart: a run killed after publishing R and before its confirm was recorded, and a
 * next run that comes before any worker took that R, sends R again. Workers then process those items
 * twice (the result cache answers the second time when it is on); the job's record, the producer's
 * output and `results` keep one result per position, so every item still ends exactly once there, and
 * P.dead holds nothing twice.
 * A refusal (nack, unroutable, a broker that stops confirming or stays blocked) puts the records back
 * (never over a worker's fresh outcome) and leaves D in P.dead: exit 1; the plan stays for the next run
 * when something may have gone out, else the marker is released. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dead.h"
#include "fc_error.h"
#include "fc_topology.h"

#define PUBLISH_OVERHEAD 4096 /* bytes of frames and headers around a body, for fc_amqp_writable */

/* ---- the results queue of a replayed job ---- */

/* declare_results declares the job's results queue again (as the producer does), on the side
 * connection, so results of a job whose producer is gone wait there for `results`. A user that may
 * not declare it is told once; the results then go to P.results.unrouted, where `results` finds them too. */
static void declare_results(dead_pass *s, const char *job_id) {
    dead_job *j = dead_job_of(s, job_id);
    if (!j || j->declared || !s->side) return;
    j->declared = 1;
    int rc = fc_amqp_ok(s->side) ? FC_OK : fc_amqp_connect(s->side);
    if (rc == FC_OK) rc = fc_topology_declare_results(s->side, s->ad->cfg->queue_prefix, j->id);
    if (rc != FC_OK)
        admin_say("cannot declare the results queue of job %s (%s): its late results go to %s.results.unrouted, "
                  "where `results %s` finds them", j->id, fc_amqp_errstr(s->side), s->ad->cfg->queue_prefix, j->id);
}

/* ---- ops ---- */

static void op_free(dead_pass *s, dead_op *o) {
    dead_work_free(o->w);
    fc_dead_letter_free(o->dl);
    free(o->sel);
    fc_buf_free(&o->r);
    fc_buf_free(&o->q);
    memset(o, 0, sizeof(*o));
    s->nops--;
}

/* maybe_out: a publish of o awaits its confirm, so its message may be out. */
static int maybe_out(const dead_op *o) { return o->phase == PH_R_WAIT || o->phase == PH_Q_WAIT; }

/* fail_op leaves D in P.dead (it returns at close): the job's records are put back unless the
 * replacement is out; the marker is released when nothing of it may be out, else its plan stays. */
static void fail_op(dead_pass *s, dead_op *o, int pending_out) {
    int restore = !o->purge && !o->r_out, release = o->claimed && !o->r_out && !pending_out;
    if (!s->redis_lost && admin_marker_fail(&o->m, restore, release) != FC_OK) dead_lost_redis(s);
    else if (restore) s->restored++;
    s->failed++;
    op_free(s, o);
}

/* finish marks D done, then acks it. */
static void finish(dead_pass *s, dead_op *o) {
    if (admin_marker_done(&o->m) != FC_OK) {
        dead_lost_redis(s);
        return; /* D stays; its plan is finished by the next run */
    }
    if (dead_ack(s, o->w->tag) != FC_OK) return;
    s->letters_done++;
    s->resumed += !o->claimed;
    s->items_done += o->items;
    op_free(s, o);
}

/* remainder_headers copies D's headers, x-error and x-error-class those of the first item kept. */
static size_t remainder_headers(const dead_op *o, fc_amqp_field *h) {
    const fc_dead_item *first = NULL;
    for (size_t i = 0; !first && i < fc_dead_letter_nitems(o->dl); i++)
        if (!o->sel[i]) first = fc_dead_letter_item(o->dl, i);
    size_t n = 0;
    for (size_t i = 0; i < o->w->nheaders && n < FC_AMQP_HEADERS_MAX; i++) {
        h[n] = o->w->headers[i];
        if (first && !h[n].is_num && strcmp(h[n].key, "x-error") == 0 && *first->message) h[n].str = first->message;
        if (first && !h[n].is_num && strcmp(h[n].key, "x-error-class") == 0 && *first->cls) h[n].str = first->cls;
        n++;
    }
    return n;
}

/* try_publish sends o's due message unless the broker blocks publishers or the socket would not take
 * it now (a send would then wait, perhaps for good); it is tried again on the next turn. */
static void try_publish(dead_pass *s, dead_op *o) {
    int is_r = o->phase == PH_R_DUE;
    fc_buf *body = is_r ? &o->r : &o->q;
    fc_amqp *a = s->ad->amqp;
    if (fc_amqp_blocked(a) || !fc_amqp_writable(a, body->len + PUBLISH_OVERHEAD)) {
        if (!s->blocked_since) s->blocked_since = admin_mono_s();
        return;
    }
    s->blocked_since = 0;
    fc_amqp_field h[FC_AMQP_HEADERS_MAX];
    size_t nh = is_r ? 0 : remainder_headers(o, h);
    fc_amqp_props p = {is_r ? o->r_id : o->q_id, "application/json", h, nh};
    int rc = is_r ? FC_OK : admin_set_add(s->own, o->q_id) < 0 ? FC_ENOMEM : FC_OK;
    if (rc == FC_OK) rc = fc_amqp_publish(a, is_r ? s->batches_x : s->dead_q, "", &p, body->data, body->len, &o->seq);
    if (rc == FC_ECONN) { /* part of it may have been written: count it as maybe out */
        o->phase = is_r ? PH_R_WAIT : PH_Q_WAIT;
        dead_lost_broker(s);
        return;
    }
    if (rc != FC_OK) {
        admin_say("cannot send the %s of dead letter %s: %s; it stays in %s", is_r ? "replacement" : "remainder",
                  o->w->message_id, fc_strerror(rc), s->dead_q);
        fail_op(s, o, 0);
        return;
    }
    o->phase = is_r ? PH_R_WAIT : PH_Q_WAIT;
    o->since = admin_mono_s();
}

/* build_remainder makes Q and its id; 0 or FC_ENOMEM. */
static int build_remainder(dead_op *o) {
    snprintf(o->q_id, sizeof(o->q_id), "%s-rest-%.12s", o->w->message_id, o->w->hash);
    return fc_dead_letter_remainder(o->dl, o->sel, &o->q);
}

/* q_copy_exists says whether Q is already in P.dead or was handled: a copy was delivered in this pass
 * (asked once every dead letter of the pass was seen), or Q has a marker of its own. 1, 0, or -1 when
 * Redis failed. */
static int q_copy_exists(dead_pass *s, const dead_op *o) {
    const char *at = dead_header(o->w, "x-failed-at");
    char hex[FC_SHA256_HEX_LEN + 1];
    dead_hash(o->q_id, at ? at : "", o->q.data, o->q.len, hex);
    if (admin_set_has(s->seen, hex)) return 1;
    admin_marker qm;
    int state, purge;
    admin_marker_init(&qm, s->ad, hex, NULL);
    if (admin_marker_peek(&qm, &state, &purge) != FC_OK) return -1;
    return state != ADMIN_MARKER_NONE;
}

/* plan_messages builds what o still has to send from its plan: R unless it is known out, and Q (sent
 * unless a copy is in P.dead, see q_due). 0, FC_ENOMEM, FC_EREDIS (Redis lost) or FC_EINVAL (the plan
 * does not fit D). */
static int plan_messages(dead_pass *s, dead_op *o, const admin_plan *plan) {
    size_t n = fc_dead_letter_nitems(o->dl);
    unsigned char *rep = calloc(n ? n : 1, 1);
    o->sel = calloc(n ? n : 1, 1);
    if (!rep || !o->sel) {
        free(rep);
        return FC_ENOMEM;
    }
    size_t nsel = fc_dead_letter_select_positions(o->dl, plan->sel, o->sel);
    size_t nrep = fc_dead_letter_select_positions(o->dl, plan->rep, rep);
    int rc = nsel == 0 ? FC_EINVAL : FC_OK, need_r = !o->purge && nrep > 0 && !o->r_out, delivered = 0;
    o->items = (long)(o->purge ? nsel : nrep);
    if (o->claimed && !o->purge) s->ok_items += (long)(nsel - nrep);
    if (rc == FC_OK && need_r && !o->claimed) {
        rc = admin_marker_check(&o->m, &delivered);
        if (rc == FC_OK && delivered) need_r = 0, o->r_out = 1;
        else if (rc != FC_OK && rc != FC_ENOTFOUND) rc = FC_EREDIS;
    }
    if (rc == FC_OK && need_r) {
        snprintf(o->r_id, sizeof(o->r_id), "%s-replay-%.12s", o->w->message_id, o->w->hash);
        rc = fc_dead_letter_replacement(o->dl, rep, &o->r);
    }
    free(rep);
    if (rc == FC_OK && nsel < n) rc = build_remainder(o);
    o->phase = need_r ? PH_R_DUE : PH_Q_DUE;
    return rc;
}

/* take_on claims D (or finds its earlier plan) and sets o up; returns 1 when o goes on, 0 when D was
 * settled (acked as done, left, or failed: o is freed). */
static int take_on(dead_pass *s, dead_op *o) {
    const char *job = fc_dead_letter_job(o->dl);
    admin_plan plan;
    admin_marker_init(&o->m, s->ad, o->w->hash, job);
    int rc = admin_marker_claim(&o->m, s->mode == DEAD_PURGE, job, o->w->sel ? o->w->sel : "", &plan);
    int go = 0;
    if (rc != FC_OK && rc != FC_ENOMEM) dead_lost_redis(s);
    else if (rc == FC_ENOMEM) admin_say("out of memory with dead letter %s; it stays", o->w->message_id), s->failed++;
    else if (plan.state == ADMIN_MARKER_DONE) s->letters_before += dead_ack(s, o->w->tag) == FC_OK;
    else if (plan.purge != (s->mode == DEAD_PURGE)) s->other_op++;
    else if (o->w->resume && plan.claimed) s->not_attempted++; /* its plan vanished meanwhile: next run */
    else go = 1;
    if (!go) {
        if (rc == FC_OK && plan.claimed) admin_marker_fail(&o->m, 0, 1);
        admin_plan_free(&plan);
        op_free(s, o);
        return 0;
    }
    o->purge = plan.purge;
    o->claimed = plan.claimed;
    o->r_out = plan.r_out;
    rc = plan_messages(s, o, &plan);
    admin_plan_free(&plan);
    if (rc == FC_EREDIS) dead_lost_redis(s);
    if (rc == FC_ENOMEM || rc == FC_EINVAL)
        admin_say("%s dead letter %s; it stays in %s", rc == FC_ENOMEM ? "out of memory with" : "the plan of an "
                  "earlier run does not fit", o->w->message_id, s->dead_q);
    if (rc != FC_OK) {
        if (rc == FC_EREDIS) op_free(s, o);
        else fail_op(s, o, 0);
        return 0;
    }
    return 1;
}

/* q_due advances o, whose remainder is due: it waits until every dead letter of the pass was seen
 * (a copy of Q from an interrupted run would be among them), then finishes o when Q is there already,
 * else sends it. Returns 1 if it sent something. */
static int q_due(dead_pass *s, dead_op *o) {
    if (o->q.len && !o->q_checked) {
        if (!dead_intake_done(s)) return 0;
        int exists = q_copy_exists(s, o);
        if (exists < 0) {
            dead_lost_redis(s);
            return 0;
        }
        if (exists) fc_buf_reset(&o->q);
        o->q_checked = 1;
        o->since = admin_mono_s();
    }
    if (o->q.len == 0) {
        finish(s, o);
        return 0;
    }
    try_publish(s, o);
    return 1;
}

/* act takes on the dead letter w (o takes w): returns 1 if it sent something (a --rate slot used). */
static int act(dead_pass *s, dead_work *w) {
    dead_op *o = NULL;
    for (int i = 0; i < DEAD_WINDOW && !o; i++)
        if (!s->ops[i].w) o = &s->ops[i];
    memset(o, 0, sizeof(*o));
    o->w = w;
    s->nops++;
    char why[256];
    if (fc_dead_letter_parse(w->body, w->len, &o->dl, why, sizeof(why)) != FC_OK) {
        admin_say("cannot read dead letter %s again (%s); it stays", w->message_id, why);
        s->failed++;
        op_free(s, o);
        return 0;
    }
    if (!take_on(s, o)) return 0;
    o->since = admin_mono_s();
    if (o->phase == PH_Q_DUE) return q_due(s, o);
    declare_results(s, fc_dead_letter_job(o->dl));
    try_publish(s, o);
    return 1;
}

/* ---- pacing and the backlog ---- */

/* pace_wait returns the ms until --rate lets the next dead letter be sent (0: now). */
static int pace_wait(const dead_pass *s) {
    double left = s->next_slot - admin_mono_s();
    return s->mode == DEAD_REPLAY && s->ad->cfg->admin_rate > 0 && left > 0 ? (int)(left * 1000) + 1 : 0;
}

static void pace_next(dead_pass *s) {
    double now = admin_mono_s(), rate = s->ad->cfg->admin_rate;
    if (rate > 0) s->next_slot = (s->next_slot > now ? s->next_slot : now) + 1.0 / rate;
}

/* pop_work takes the next dead letter off the backlog, or returns NULL. */
static dead_work *pop_work(dead_pass *s) {
    dead_work *w = s->head;
    if (!w) return NULL;
    s->head = w->next;
    if (!s->head) s->tail = NULL;
    w->next = NULL;
    s->backlog_bytes -= w->bytes;
    return w;
}

int dead_work_off(dead_pass *s) {
    fc_amqp *a = s->ad->amqp;
    int due = 0;
    for (int i = 0; i < DEAD_WINDOW && !s->fatal; i++) {
        dead_op *o = &s->ops[i];
        if (o->w && o->phase == PH_Q_DUE) q_due(s, o);
        else if (o->w && o->phase == PH_R_DUE) try_publish(s, o);
        due += o->w && (o->phase == PH_R_DUE || (o->phase == PH_Q_DUE && o->q_checked));
    }
    if (!due && !fc_amqp_blocked(a)) s->blocked_since = 0;
    if (fc_amqp_blocked(a) && s->head && !s->blocked_since) s->blocked_since = admin_mono_s();
    while (!s->stopping && !s->fatal && s->nops < DEAD_WINDOW && !due && !fc_amqp_blocked(a) && s->head) {
        int wait = pace_wait(s);
        if (wait > 0) return wait < 200 ? wait : 200;
        if (act(s, pop_work(s))) pace_next(s);
        due = s->blocked_since != 0;
    }
    return due || fc_amqp_blocked(a) ? 50 : 200;
}

/* ---- confirms, deadlines, giving up ---- */

void dead_on_confirm(void *ud, uint64_t seq, int status) {
    dead_pass *s = ud;
    dead_op *o = NULL;
    for (int i = 0; i < DEAD_WINDOW && !o; i++)
        if (s->ops[i].w && maybe_out(&s->ops[i]) && s->ops[i].seq == seq) o = &s->ops[i];
    if (!o || s->fatal) return;
    int is_r = o->phase == PH_R_WAIT;
    if (status != FC_OK) {
        admin_say("the broker refused the %s of dead letter %s (%s); it stays in %s%s", is_r ? "replacement" : "remainder",
                  o->w->message_id, fc_strerror(status), s->dead_q,
                  is_r && !o->purge ? ", its items' records put back" : "");
        fail_op(s, o, 0);
        return;
    }
    if (is_r) o->r_out = 1;
    if (!is_r || o->q.len == 0) {
        finish(s, o);
        return;
    }
    if (admin_marker_sent(&o->m) != FC_OK) { /* Q waits until R is recorded as out */
        dead_lost_redis(s);
        return;
    }
    o->phase = PH_Q_DUE;
    o->since = admin_mono_s();
}

/* give_up stops the pass: what is in the works is settled, what waits is left for the next run. */
static void give_up(dead_pass *s, const char *why, double waited) {
    int n = s->nops;
    dead_abandon(s);
    long left = 0;
    for (dead_work *w = s->head; w; w = w->next) left++;
    s->not_attempted += left;
    admin_say("%s for %.0f s: gave up; %d dead letters in the works stay in %s%s, %ld not started; run the %s "
              "again once the broker takes messages", why, waited, n, s->dead_q,
              s->mode == DEAD_REPLAY ? " (their items' records put back)" : "", left,
              s->mode == DEAD_REPLAY ? "replay" : "purge");
    s->stopping = 1;
}

void dead_check_deadlines(dead_pass *s) {
    double now = admin_mono_s(), oldest = now;
    int waiting_confirm = 0;
    if (s->stopping || s->fatal) return;
    for (int i = 0; i < DEAD_WINDOW; i++)
        if (s->ops[i].w && (s->ops[i].phase != PH_Q_DUE || s->ops[i].q_checked) && s->ops[i].since < oldest) {
            oldest = s->ops[i].since;
            waiting_confirm = maybe_out(&s->ops[i]);
        }
    if (s->blocked_since && (s->head || s->nops) && now - s->blocked_since >= DEAD_CONFIRM_WAIT_S)
        give_up(s, "the broker refused to take messages (blocked: a memory or disk alarm)", now - s->blocked_since);
    else if (now - oldest >= DEAD_CONFIRM_WAIT_S)
        give_up(s, waiting_confirm ? "no confirm from the broker" : "the broker did not take a message",
                now - oldest);
}

void dead_abandon(dead_pass *s) {
    for (int i = 0; i < DEAD_WINDOW; i++)
        if (s->ops[i].w) {
            if (s->redis_lost) {
                s->failed++;
                op_free(s, &s->ops[i]);
            } else {
                fail_op(s, &s->ops[i], maybe_out(&s->ops[i]));
            }
        }
}
