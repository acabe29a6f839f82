/* The gate: one answer, from one blocking state, to "may this call start now?", "may this held
 * delivery go on?", "should the worker take deliveries?" and "is it ready?". The state is the
 * worker's stop, rejected credentials and their probe, the circuit breaker and its probe, the
 * fleet pause after a 429 and the rate limiter's refusals. A pure state machine over a
 * caller-supplied clock in milliseconds, like fc_breaker: no I/O, no logging; the caller logs the
 * events the functions return.
 *
 * A grant may carry probes (enum gate_probe). Every grant ends exactly once: gate_call_done when
 * its call was made and answered, gate_release when it was not (the limiter said wait, the fleet
 * paused, the delivery was checkpointed, the worker stops). A probe is therefore never lost, and
 * neither the breaker nor the credentials stay shut with no probe in flight. */
#ifndef GATE_H
#define GATE_H

#include <stdint.h>

#include "fc_breaker.h"

#define GATE_NEVER INT64_MAX /* "until something else changes" */

enum gate_verdict {
    GATE_GO,        /* start the call now */
    GATE_WAIT,      /* keep it queued; ask again at the time given */
    GATE_HAND_BACK  /* the worker stops: hand the item back unfinished */
};

enum gate_probe { GATE_PROBE_AUTH = 1, GATE_PROBE_BREAKER = 2 };

/* What a finished call tells the gate. */
enum gate_result {
    GATE_CALL_OK,           /* a 2xx answer (valid or not: the API works) */
    GATE_CALL_ITEM_FAULT,   /* the API answered, the item is at fault (400, 404, 422...) */
    GATE_CALL_API_FAULT,    /* 408, 429, 5xx, timeout, connection failure */
    GATE_CALL_AUTH_REJECTED,/* 401 or 403 */
    GATE_CALL_THROTTLED     /* a 429 the adapted rate answers (no Retry-After): the API works, no breaker failure */
};

/* Events for the caller to log or count, returned by the functions that change the state. */
enum gate_event { GATE_EV_NONE, GATE_EV_AUTH_BLOCKED, GATE_EV_AUTH_ACCEPTED, GATE_EV_BREAKER_OPENED };

/* How a held delivery must go on. */
enum gate_hold { GATE_HOLD_RUN, GATE_HOLD_STOP_NEW, GATE_HOLD_STOP_NOW };

typedef struct gate_conf {
    long auth_retry_ms;       /* between credentials probes (AUTH_RETRY) */
    long hold_limit_ms;       /* longest a delivery is held (HOLD_LIMIT) */
    long api_timeout_ms;      /* longest a call takes (API_TIMEOUT) */
    fc_breaker_conf breaker;  /* see fc_breaker.h */
} gate_conf;

typedef struct gate {
    gate_conf conf;
    fc_breaker *breaker;        /* owned */
    int stopping;               /* SIGTERM seen */
    int64_t stop_deadline_ms;   /* calls still in flight then are cut short */
    int auth_blocked;           /* the API rejected this worker's credentials */
    int auth_probe_out;         /* a credentials probe is granted and not yet ended */
    int64_t auth_probe_at_ms;   /* when the next credentials probe is due */
    int64_t auth_probe_was_ms;  /* the due time of the probe out, restored when it is released */
    int64_t pause_until_ms;     /* the fleet is paused (a 429) until then */
    int64_t limiter_until_ms;   /* the limiter gave no grant: ask again then */
} gate;

/* gate_init fills g from c with a closed breaker; 0 or FC_EINVAL (bad breaker settings) /
 * FC_ENOMEM. gate_free releases it; accepts a zeroed gate. */
int gate_init(gate *g, const gate_conf *c);
void gate_free(gate *g);

/* gate_acquire answers for one call at now: GATE_GO with *probe set to the probes the grant
 * carries (0 for none), GATE_WAIT with *until set (GATE_NEVER: until a result or a release),
 * or GATE_HAND_BACK once stopping. */
int gate_acquire(gate *g, int64_t now, int64_t *until, int *probe);

/* gate_release ends a grant whose call was not made; its probes are due again at once. */
void gate_release(gate *g, int probe);

/* gate_call_done ends a grant whose call was answered (or failed) at now with result r. Returns
 * the event it caused: credentials blocked or accepted, breaker opened, or none. */
int gate_call_done(gate *g, int probe, int r, int64_t now);

/* gate_limiter_refused makes calls wait until until_ms: the limiter gave no grant (busy, Redis
 * unavailable or refusing). */
void gate_limiter_refused(gate *g, int64_t until_ms);

/* gate_pause pauses calls until until_ms (a 429 here or elsewhere in the fleet); a later
 * deadline already known is kept. */
void gate_pause(gate *g, int64_t until_ms);

/* gate_pause_ms returns the pause a 429 applies: its Retry-After (seconds; <= 0 when absent
 * gives default_ms), capped at max_ms. */
long gate_pause_ms(long retry_after_s, long default_ms, long max_ms);

/* gate_stop starts the graceful stop: no new call; at deadline_ms calls in flight are cut. */
void gate_stop(gate *g, int64_t deadline_ms);

/* gate_hold says how a delivery received at received_ms may go on at now: run; start no new
 * call (from HOLD_LIMIT - API_TIMEOUT, at least half of HOLD_LIMIT; while stopping; while the
 * credentials are rejected and no probe is due); or stop now (HOLD_LIMIT, the stop deadline). */
int gate_hold(const gate *g, int64_t received_ms, int64_t now);

/* gate_ready says whether the worker can do its work (/readyz): not stopping, credentials not
 * rejected, breaker not open. */
int gate_ready(const gate *g);

/* gate_wants_deliveries says whether to consume: when ready, or when blocked but a probe is due
 * and the worker holds no queued call to probe with (holds_queued == 0). */
int gate_wants_deliveries(const gate *g, int64_t now, int holds_queued);

/* gate_trip opens the breaker until until_ms because another worker opened it (fc_breaker_trip). */
void gate_trip(gate *g, int64_t until_ms);

#endif
