/* Redis key names: every key the producer, the worker and the limiter read or write is named
 * here, so the layout documented in the README has one home. Keys of one job or one API share
 * a hash tag ({job}, {api}) so a Redis Cluster keeps them in one slot. */
#ifndef FC_KEYS_H
#define FC_KEYS_H

#include <stddef.h>

/* Longest key built here, NUL included. Prefixes, job ids and API names are bounded by their
 * settings' validation well below this. */
#define FC_KEY_MAX 256

/* The parts of a job's record: P:job:{job}:<part>. */
enum fc_job_key {
    FC_JOB_META,      /* hash: items, batches, published, created_ms, batch_size, batch_max_bytes,
                       * cancelled_ms (set by `flashcard-admin cancel`) */
    FC_JOB_CONFIRMED, /* bitmap: batches the broker confirmed (the producer's --resume) */
    FC_JOB_OUTCOME,   /* hash: position -> ok | dead | budget, each item's final outcome */
    FC_JOB_FAILED,    /* hash: position -> the failed item as JSON (term, error, attempts) */
    FC_JOB_STATS,     /* hash: api_calls, prompt_tokens, completion_tokens, cache_hits,
                       * first_outcome_ms, last_outcome_ms */
    FC_JOB_RETRY,     /* hash: position -> attempt, items waiting in a retry queue */
    FC_JOB_BUDGET,    /* hash: tokens, uusd (spent, micro-USD), exhausted_ms (when a call was first
                       * refused for the budget); written by the limiter (fc_limiter_settle), 7 days */
    FC_JOB_REDO,      /* hash: position -> 1, items whose "budget" outcome --resume took back, until republished */
    FC_JOB_TIMELINE,  /* hash: unix time / 10 s -> the job's API calls settled in those 10 s */
    FC_JOB_NKEYS
};

/* The parts of an API's limiter state: P:rl:{api}:<part>. */
enum fc_limit_key {
    FC_LIMIT_CALLS,  /* string: the calls bucket's tat (us) */
    FC_LIMIT_TOKENS, /* string: the tokens bucket's tat (us) */
    FC_LIMIT_PAUSE,  /* string: the fleet pause deadline (us) */
    FC_LIMIT_RATE,   /* hash: rate (calls/s), changed (us), epoch, mode (aimd | advice): the adapted
                      * calls rate (absent = the configured one), 1 h after its last change */
    FC_LIMIT_NKEYS
};

/* Each fc_key_* writes one key into out (outlen bytes, at least FC_KEY_MAX fits every key) and
 * returns 0, or FC_ETOOBIG when it does not fit (out then holds a truncated, unusable key). */
int fc_key_job(char *out, size_t outlen, const char *prefix, const char *job_id, enum fc_job_key part);
int fc_key_limit(char *out, size_t outlen, const char *prefix, const char *api, enum fc_limit_key part);
/* P:breaker:{api}: the fleet's open circuit breaker (PX = the cooldown left). */
int fc_key_breaker(char *out, size_t outlen, const char *prefix, const char *api);
/* P:timeline:<unix hour>: hash: unix time / 10 s -> the fleet's API calls settled in those 10 s
 * (with FC_JOB_TIMELINE, a job's share of the fleet over time); 8 days. */
int fc_key_timeline(char *out, size_t outlen, const char *prefix, long long unix_hour);
/* P:jobs: sorted set of job ids, scored by creation (unix ms); a job whose meta is gone expired. */
int fc_key_jobs(char *out, size_t outlen, const char *prefix);
/* P:workers: sorted set of live worker ids, scored by when their registration expires (unix ms). */
int fc_key_workers(char *out, size_t outlen, const char *prefix);
/* P:worker:<id>: one worker's registration (JSON), with a TTL the worker keeps renewing. */
int fc_key_worker(char *out, size_t outlen, const char *prefix, const char *id);
/* P:replayed:<sha256 of a dead letter's message id, x-failed-at and body>: flashcard-admin's replay
 * marker, 7 days: a hash (the plan and the job's records it took out) while the replay is under way,
 * the string "done" once its publishes are confirmed. */
int fc_key_replayed(char *out, size_t outlen, const char *prefix, const char *hash);
/* P:cache:s<stage>:<hash>: a cached stage answer. */
int fc_key_cache(char *out, size_t outlen, const char *prefix, int stage, const char *hash);

#endif
