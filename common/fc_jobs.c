/* The set of jobs the fleet follows. */
#include "fc_jobs.h"

#include <stdio.h>

#include "fc_error.h"
#include "fc_keys.h"

int fc_jobs_key(char *out, size_t outlen, const char *prefix) {
    int n = snprintf(out, outlen, "%s:active", prefix);
    return n >= 0 && (size_t)n < outlen ? FC_OK : FC_ETOOBIG;
}

int fc_jobs_list(fc_redis *r, const char *prefix, const char *job_id, long long created_ms) {
    char key[FC_KEY_MAX];
    if (fc_jobs_key(key, sizeof(key), prefix) != FC_OK) return FC_EINVAL;
    return fc_redis_cmd(r, NULL, "ZADD %s NX %lld %s", key, created_ms, job_id);
}
