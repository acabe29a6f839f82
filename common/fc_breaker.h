/* Circuit breaker for calls to one API: a pure state machine (closed -> open -> half-open)
 * over a caller-supplied clock in milliseconds, with no I/O of its own.
 *
 * Closed: every call may start; it opens after `failures` consecutive failures, or when
 * `ratio` is set and the failure share of the last `window` results reaches it (only once
 * the window is full). Open: no call starts until the cooldown ends. Half-open: the first
 * fc_breaker_allow after the cooldown lets exactly one probe through; its result closes
 * the breaker (success) or opens it for another cooldown (failure).
 *
 * Sharing across a fleet is the caller's job: publish fc_breaker_open_until when
 * fc_breaker_just_opened says so, and feed other workers' deadlines to fc_breaker_trip.
 *
 * Not thread-safe: use one breaker per thread, or lock around it. */
#ifndef FC_BREAKER_H
#define FC_BREAKER_H

#include <stdint.h>

enum fc_breaker_state { FC_BREAKER_CLOSED, FC_BREAKER_OPEN, FC_BREAKER_HALF_OPEN };

/* Largest accepted window (results kept for the ratio; one byte each). */
#define FC_BREAKER_WINDOW_MAX 100000

typedef struct fc_breaker_conf {
    int failures;     /* consecutive failures that open it (BREAKER_FAILURES), >= 1 */
    double ratio;     /* failure share over the window that opens it, in (0, 1]; 0 = off */
    int window;       /* most recent results the ratio looks at, 1..FC_BREAKER_WINDOW_MAX when
                         ratio > 0 (ignored when ratio is 0); applies only once full */
    long cooldown_ms; /* open -> half-open after this long (BREAKER_COOLDOWN), ms, >= 1 */
} fc_breaker_conf;

typedef struct fc_breaker fc_breaker;

/* fc_breaker_new creates a closed breaker with a copy of c. Returns NULL when c is NULL or
 * out of bounds (see fc_breaker_conf) or out of memory. Free with fc_breaker_free. */
fc_breaker *fc_breaker_new(const fc_breaker_conf *c);

/* fc_breaker_free frees b; accepts NULL. */
void fc_breaker_free(fc_breaker *b);

/* fc_breaker_allow returns 1 if a call may start at now_ms, else 0. Closed: 1. Open: 0
 * until the cooldown ends; then it turns half-open and returns 1 once (the probe).
 * Half-open: 0 until the probe's result is recorded. Every call that got 1 must have its
 * result recorded with fc_breaker_record, or a half-open breaker stays shut until
 * fc_breaker_trip moves it on. */
int fc_breaker_allow(fc_breaker *b, int64_t now_ms);

/* fc_breaker_release returns a grant that was not used: the caller got 1 from fc_breaker_allow
 * but did not make the call (the rate limiter said wait, the fleet is paused, the worker is
 * stopping...). When that grant was the half-open probe, the breaker goes back to open with
 * the same (already past) deadline, so the next fc_breaker_allow grants the probe again; a
 * breaker left half-open with no probe in flight would stay shut for good. Closed or open:
 * nothing to return. */
void fc_breaker_release(fc_breaker *b);

/* fc_breaker_record records the result of a call (ok != 0: success) finished at now_ms.
 * Closed: counts consecutive failures and the ratio window, and opens until
 * now_ms + cooldown_ms when either threshold is reached. Half-open: the result is taken
 * as the probe's; success closes (counters reset), failure opens for a new cooldown.
 * Open: ignored (the call started before it opened). */
void fc_breaker_record(fc_breaker *b, int ok, int64_t now_ms);

/* fc_breaker_state returns the current enum fc_breaker_state. It moves from open to
 * half-open only inside fc_breaker_allow, so an open breaker past its cooldown still
 * reports open until the next allow. */
int fc_breaker_state(const fc_breaker *b);

/* fc_breaker_state_name returns "closed", "open", "half-open", or "unknown" (static). */
const char *fc_breaker_state_name(int state);

/* fc_breaker_open_until returns the end of the current (or, when half-open, the last)
 * cooldown in ms on the caller's clock, or 0 when closed. */
int64_t fc_breaker_open_until(const fc_breaker *b);

/* fc_breaker_trip opens b until until_ms because another worker opened the fleet-wide
 * breaker. It applies only when until_ms is later than the end of the last cooldown this
 * breaker knew of, so a stale or echoed deadline (e.g. its own, read back) is ignored:
 * closed or half-open -> open until until_ms (a probe in flight is then ignored when it
 * returns); open -> the cooldown is extended. Half-open logic resumes after until_ms.
 * It does not set fc_breaker_just_opened (the fleet already knows). A deadline already
 * past makes the next allow a probe, so callers should pass only future deadlines. */
void fc_breaker_trip(fc_breaker *b, int64_t until_ms);

/* fc_breaker_just_opened returns 1 once after each transition to open caused by
 * fc_breaker_record (so the caller publishes fc_breaker_open_until to the fleet), then 0
 * until the next such transition. */
int fc_breaker_just_opened(fc_breaker *b);

/* fc_breaker_opens returns how many times b went to open from closed or half-open, by
 * fc_breaker_record or fc_breaker_trip (extensions of an open breaker are not counted). */
long fc_breaker_opens(const fc_breaker *b);

#endif
