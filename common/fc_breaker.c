/* Circuit breaker state machine: consecutive-failure and windowed failure-ratio opening,
 * cooldown, a single half-open probe, and deadlines imported from the fleet. */
#include "fc_breaker.h"

#include <math.h>
#include <stdlib.h>

struct fc_breaker {
    fc_breaker_conf conf;
    int state;            /* enum fc_breaker_state; half-open means the probe is in flight */
    int64_t until;        /* end of the current or last cooldown, ms; kept when closed so
                             fc_breaker_trip can tell stale deadlines (0 = never opened) */
    int consecutive;      /* failures since the last success, while closed */
    unsigned char *ring;  /* last `window` results, 1 = failure; NULL when ratio is off */
    int ring_pos;         /* next slot to overwrite */
    int ring_filled;      /* slots holding a result, <= window */
    int ring_failures;    /* failures among the filled slots */
    int ratio_need;       /* failures in a full window that open it: ceil(ratio * window) */
    int just_opened;      /* set by a record-caused open, cleared by fc_breaker_just_opened */
    long opens;
};

/* conf_ok returns 1 when c is within the bounds documented in fc_breaker.h. */
static int conf_ok(const fc_breaker_conf *c) {
    if (!c || c->failures < 1 || c->cooldown_ms < 1) return 0;
    if (!(c->ratio >= 0.0 && c->ratio <= 1.0)) return 0; /* also rejects NaN */
    if (c->ratio > 0.0 && (c->window < 1 || c->window > FC_BREAKER_WINDOW_MAX)) return 0;
    return 1;
}

/* ratio_need returns the failures a full window must hold to reach c->ratio, at least 1.
 * The small slack keeps e.g. 0.1 * 30 = 3.0000000000000004 at 3. */
static int ratio_need(const fc_breaker_conf *c) {
    int need = (int)ceil(c->ratio * c->window - 1e-9);
    return need < 1 ? 1 : need;
}

fc_breaker *fc_breaker_new(const fc_breaker_conf *c) {
    if (!conf_ok(c)) return NULL;
    fc_breaker *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->conf = *c;
    b->state = FC_BREAKER_CLOSED;
    if (c->ratio > 0.0) {
        b->ring = calloc((size_t)c->window, 1);
        if (!b->ring) {
            fc_breaker_free(b);
            return NULL;
        }
        b->ratio_need = ratio_need(c);
    }
    return b;
}

void fc_breaker_free(fc_breaker *b) {
    if (!b) return;
    free(b->ring);
    free(b);
}

/* reset_counters forgets the consecutive count and the ratio window. */
static void reset_counters(fc_breaker *b) {
    b->consecutive = 0;
    b->ring_pos = 0;
    b->ring_filled = 0;
    b->ring_failures = 0;
}

/* go_open opens b until until_ms and counts the transition. */
static void go_open(fc_breaker *b, int64_t until_ms) {
    b->state = FC_BREAKER_OPEN;
    b->until = until_ms;
    b->opens++;
    reset_counters(b);
}

int fc_breaker_allow(fc_breaker *b, int64_t now_ms) {
    switch (b->state) {
    case FC_BREAKER_CLOSED:
        return 1;
    case FC_BREAKER_OPEN:
        if (now_ms < b->until) return 0;
        b->state = FC_BREAKER_HALF_OPEN; /* this caller's call is the probe */
        return 1;
    default:
        return 0; /* half-open: the probe is still in flight */
    }
}

void fc_breaker_release(fc_breaker *b) {
    if (b->state == FC_BREAKER_HALF_OPEN) b->state = FC_BREAKER_OPEN; /* until is unchanged: due again */
}

/* ring_push adds one result (failed: 1) to the ratio window, dropping the oldest when full. */
static void ring_push(fc_breaker *b, int failed) {
    if (b->ring_filled == b->conf.window)
        b->ring_failures -= b->ring[b->ring_pos];
    else
        b->ring_filled++;
    b->ring[b->ring_pos] = (unsigned char)failed;
    b->ring_failures += failed;
    b->ring_pos = (b->ring_pos + 1) % b->conf.window;
}

/* count_closed counts one result while closed; returns 1 when a threshold is reached. */
static int count_closed(fc_breaker *b, int failed) {
    b->consecutive = failed ? b->consecutive + 1 : 0;
    if (b->ring) ring_push(b, failed);
    if (b->consecutive >= b->conf.failures) return 1;
    return b->ring && b->ring_filled == b->conf.window && b->ring_failures >= b->ratio_need;
}

/* open_by_record opens b for a cooldown from now_ms and flags it for publishing. */
static void open_by_record(fc_breaker *b, int64_t now_ms) {
    go_open(b, now_ms + b->conf.cooldown_ms);
    b->just_opened = 1;
}

void fc_breaker_record(fc_breaker *b, int ok, int64_t now_ms) {
    switch (b->state) {
    case FC_BREAKER_CLOSED:
        if (count_closed(b, !ok)) open_by_record(b, now_ms);
        break;
    case FC_BREAKER_HALF_OPEN:
        if (!ok) {
            open_by_record(b, now_ms);
        } else {
            b->state = FC_BREAKER_CLOSED;
            reset_counters(b);
        }
        break;
    default:
        break; /* open: a call that started before it opened; no say in the state */
    }
}

int fc_breaker_state(const fc_breaker *b) {
    return b->state;
}

const char *fc_breaker_state_name(int state) {
    switch (state) {
    case FC_BREAKER_CLOSED:
        return "closed";
    case FC_BREAKER_OPEN:
        return "open";
    case FC_BREAKER_HALF_OPEN:
        return "half-open";
    default:
        return "unknown";
    }
}

int64_t fc_breaker_open_until(const fc_breaker *b) {
    return b->state == FC_BREAKER_CLOSED ? 0 : b->until;
}

void fc_breaker_trip(fc_breaker *b, int64_t until_ms) {
    if (until_ms <= b->until) return; /* stale, echoed, or not an extension */
    if (b->state == FC_BREAKER_OPEN)
        b->until = until_ms;
    else
        go_open(b, until_ms);
}

int fc_breaker_just_opened(fc_breaker *b) {
    int was = b->just_opened;
    b->just_opened = 0;
    return was;
}

long fc_breaker_opens(const fc_breaker *b) {
    return b->opens;
}
