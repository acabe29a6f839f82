/* flashcard-producer: dataset -> batch messages (publish.c), then optionally wait for the
 * job's outcomes and collect its results (collect.c). */
#ifndef PRODUCER_H
#define PRODUCER_H

#include <stdint.h>
#include <stdio.h>

#include "fc_amqp.h"
#include "fc_config.h"
#include "fc_keys.h"
#include "fc_redis.h"

/* Exit codes, documented in the README. */
enum { EXIT_DONE = 0, EXIT_INCOMPLETE = 1, EXIT_USAGE = 2, EXIT_INFRA = 3 };

typedef struct bad_row {
    long line;
    char *reason;
} bad_row;

/* The job's API calls in 10 s, and the fleet's: its share over time. */
typedef struct share_point {
    long long t10;           /* unix time / 10 */
    long calls, fleet_calls;
} share_point;

/* What a run did, for the summary and the report. */
typedef struct job_stats {
    char job_id[72];
    long rows_read, rows_rejected;
    bad_row *bad;            /* first MAX_BAD_KEPT rejected rows */
    size_t nbad;
    long items_published, batches_published, batches_skipped, batches_total;
    long items_skipped;      /* items of the batches skipped because an earlier run got them confirmed */
    long items_redone;       /* items of those batches the budget had stopped, published again */
    long items_total;        /* items of the whole job (all runs) */
    long succeeded, failed;
    long api_calls, prompt_tokens, completion_tokens, cache_hits;
    double elapsed_s;
    int published;           /* the whole dataset was read and the job record marked published */
    int timed_out;
    int cancelled;      /* an operator cancelled the job while --wait waited */
    long long budget_tokens, budget_uusd;   /* the job's budget (0 = none) */
    long long spent_tokens, spent_uusd;     /* what its calls cost, as the workers settled them */
    long long exhausted_ms;                 /* when a call was first refused for the budget, 0 = never */
    long items_budget;                      /* items the budget stopped */
    share_point *share;
    size_t nshare;
} job_stats;

#define MAX_BAD_KEPT 10000

typedef struct producer {
    fc_config *cfg;
    fc_amqp *amqp;
    fc_redis *redis;
    job_stats st;
    char key[FC_JOB_NKEYS][FC_KEY_MAX]; /* the job's Redis keys, by enum fc_job_key */
    double t0;
    int own_queue;           /* the job's batches go to its own queue (fc_jobs.h), not the shared one */
} producer;

double mono_s(void);

/* publish.c: producer_connect connects with bounded retries and declares the topology and
 * the job's results queue (0 or FC_ECONN/FC_EBROKER); producer_publish returns an exit code. */
int producer_connect(producer *p);
int producer_publish(producer *p, FILE *in, int format);
/* collect.c: waits for the job, writes --output; returns an exit code. */
int producer_wait(producer *p);
int producer_write_report(producer *p, const char *path);
/* spend.c: the job's spend, budget and share of the fleet over time (after --wait). */
void producer_load_spend(producer *p);
void producer_report_spend(const producer *p, FILE *f);
void producer_free_spend(producer *p);

#endif
