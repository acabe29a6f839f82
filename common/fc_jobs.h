/* Jobs with a work queue of their own, which the whole fleet follows.
 *
 * The producer declares the job's queue (<prefix>.job.<id>, fc_topology_declare_job), lists the job in
 * P:active (a sorted set scored by the job's creation, unix ms) and publishes its batches there. Every
 * worker consumes the queues of the listed jobs (worker/jobs.c) and shares its calls between the jobs it
 * holds work of (worker/calls.c), so a small job submitted behind a large one does not wait for it. A job
 * leaves the list once every item has its final outcome; the worker that takes it out deletes its queue.
 * Retries, continuations and replays of every job go through the shared work queue, <prefix>.batches. */
#ifndef FC_JOBS_H
#define FC_JOBS_H

#include <stddef.h>

#include "fc_redis.h"

/* The most jobs a worker follows at once (the oldest first); more wait until one completes. */
#define FC_JOBS_FOLLOWED_MAX 64

/* fc_jobs_key writes "<prefix>:active" into out; 0 or FC_ETOOBIG. */
int fc_jobs_key(char *out, size_t outlen, const char *prefix);

/* fc_jobs_list lists job_id in P:active (its first listing's score is kept); 0 or an fc_redis error. */
int fc_jobs_list(fc_redis *r, const char *prefix, const char *job_id, long long created_ms);

#endif
