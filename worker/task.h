/* A task: one item's progress through the processor's API stages, inside the delivery that
 * carries it. The leaf of the worker: it knows nothing of the scheduler, the cache or the
 * broker. Final outcomes are set only through task_finish, which keeps the owning delivery's
 * count of unfinished tasks exact (a task finishes once; a second finish is refused). */
#ifndef TASK_H
#define TASK_H

#include <stddef.h>
#include <stdint.h>

#include "fc_item.h"
#include "fc_pipeline.h"

enum task_state {
    TASK_IDLE,     /* in no queue: not started, or taken out of the scheduler */
    TASK_QUEUED,   /* in the run queue */
    TASK_WAITING,  /* a call is reserved with the limiter: waits for its slot on the timer list */
    TASK_INFLIGHT, /* its HTTP call is in flight */
    TASK_DONE      /* has its final outcome */
};

/* OUT_BUDGET: its job's budget was spent before it was done; recorded as failed (class budget), not
 * dead-lettered, so that --resume with a larger budget can publish it again. */
enum task_outcome { OUT_NONE, OUT_OK, OUT_RETRY, OUT_DEAD, OUT_UNFINISHED, OUT_BUDGET, OUT_NKINDS };

typedef struct task {
    fc_item *item;                /* borrowed from the delivery's message */
    const void *owner;            /* the delivery holding it: the scheduler cancels by owner */
    const char *job_id;           /* its job (borrowed from the delivery): the scheduler's lane */
    int priority;                 /* its job's weight in the fair share, 1..FC_PRIORITY_MAX */
    size_t *open;                 /* the owner's count of tasks not yet TASK_DONE */
    int stage;                    /* 1..nstages (flashcards: 1 = analysis, 2 = cards) */
    int state;                    /* enum task_state */
    int outcome;                  /* enum task_outcome; OUT_NONE until TASK_DONE */
    int probe;                    /* enum gate_probe bits its reserved or running call carries */
    char *results[FC_STAGES_MAX]; /* each finished stage's result (compact JSON), owned */
    char *request;                /* body of the current stage's call, owned; NULL until prepared */
    char cache_key[65];           /* cache key of the current stage ("" when the cache is off) */
    long est_tokens;              /* the limiter's charge for the current call */
    long long rate_epoch;         /* the adapted rate's epoch its call was granted under (fc_limiter_epoch) */
    long prompt_tokens, completion_tokens;
    int calls, cache_hits;
    int64_t ready_at_ms;          /* TASK_WAITING: when its reserved slot comes */
    int http_status;              /* of the last failure */
    int err_class;                /* enum fc_class of the last failure */
    int retry_reason;             /* enum metrics_retry of the last retryable failure */
    int cancelled;                /* its job was cancelled: a call in flight ends it, no next stage or retry */
    char error[256];              /* the last failure, for retries and dead letters */
    struct task *next;            /* run queue or timer list */
} task;

/* task_init makes t the idle stage-1 task of item it in owner, counted in *open. */
void task_init(task *t, fc_item *it, const void *owner, size_t *open);

/* task_finish gives t its final outcome and takes it off the owner's open count. Returns 0, or
 * FC_EINVAL when t already had one (nothing changes: an outcome is never overwritten). */
int task_finish(task *t, int outcome);

/* task_fail records why t's last attempt failed (why is copied, cut to fit). */
void task_fail(task *t, int cls, int status, const char *why);

/* task_prepare builds the request of t's current stage (and its cache key when with_key), if
 * not built yet. Returns 0, or FC_ENOMEM when the processor cannot build it. */
int task_prepare(task *t, const fc_processor *p, int with_key);

/* task_advance stores result (owned, taken) as the current stage's and moves to the next stage;
 * returns 1 when every stage is done. */
int task_advance(task *t, const fc_processor *p, char *result);

/* task_clear frees what t owns. */
void task_clear(task *t);

#endif
