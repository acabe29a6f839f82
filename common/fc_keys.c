/* Redis key names. */
#include "fc_keys.h"

#include <stdio.h>

#include "fc_error.h"

static const char *const job_parts[FC_JOB_NKEYS] = {"meta", "confirmed", "outcome", "failed", "stats", "retry", "budget", "redo", "timeline"};
static const char *const limit_parts[FC_LIMIT_NKEYS] = {"calls", "tokens", "pause", "rate"};

static int fits(int n, size_t outlen) { return n >= 0 && (size_t)n < outlen ? FC_OK : FC_ETOOBIG; }

int fc_key_job(char *out, size_t outlen, const char *prefix, const char *job_id, enum fc_job_key part) {
    return fits(snprintf(out, outlen, "%s:job:{%s}:%s", prefix, job_id, job_parts[part]), outlen);
}

int fc_key_limit(char *out, size_t outlen, const char *prefix, const char *api, enum fc_limit_key part) {
    return fits(snprintf(out, outlen, "%s:rl:{%s}:%s", prefix, api, limit_parts[part]), outlen);
}

int fc_key_breaker(char *out, size_t outlen, const char *prefix, const char *api) {
    return fits(snprintf(out, outlen, "%s:breaker:{%s}", prefix, api), outlen);
}

int fc_key_cache(char *out, size_t outlen, const char *prefix, int stage, const char *hash) {
    return fits(snprintf(out, outlen, "%s:cache:s%d:%s", prefix, stage, hash), outlen);
}

int fc_key_timeline(char *out, size_t outlen, const char *prefix, long long unix_hour) {
    return fits(snprintf(out, outlen, "%s:timeline:%lld", prefix, unix_hour), outlen);
}

int fc_key_jobs(char *out, size_t outlen, const char *prefix) {
    return fits(snprintf(out, outlen, "%s:jobs", prefix), outlen);
}

int fc_key_workers(char *out, size_t outlen, const char *prefix) {
    return fits(snprintf(out, outlen, "%s:workers", prefix), outlen);
}

int fc_key_worker(char *out, size_t outlen, const char *prefix, const char *id) {
    return fits(snprintf(out, outlen, "%s:worker:%s", prefix, id), outlen);
}

int fc_key_replayed(char *out, size_t outlen, const char *prefix, const char *hash) {
    return fits(snprintf(out, outlen, "%s:replayed:%s", prefix, hash), outlen);
}
