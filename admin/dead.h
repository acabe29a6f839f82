/* The pass over P.dead, shared by dead.c (reading P.dead, selecting, listing, the loop, the summary)
 * and replay.c (what a replay or a partial purge does to one selected dead letter). Internal to them. */
#ifndef ADMIN_DEAD_H
#define ADMIN_DEAD_H

#include "admin.h"
#include "fc_buf.h"
#include "fc_deadletter.h"
#include "fc_message.h"
#include "fc_sha256.h"
#include "fc_topology.h"
#include "marker.h"

enum dead_mode { DEAD_LIST, DEAD_REPLAY, DEAD_PURGE };

#define DEAD_WINDOW 32            /* dead letters in the works at once */
#define DEAD_CONFIRM_WAIT_S 30.0  /* longest wait for a confirm, or for a blocked broker to take a publish */
#define DEAD_ID_MAX 256           /* message ids of replacements and remainders */

/* A selected dead letter copied out of its delivery, waiting for its turn. Only the bytes are kept: the
 * body is parsed again when its turn comes, so a long backlog holds bodies, not parsed trees. */
typedef struct dead_work {
    uint64_t tag;
    char *message_id;
    char *body;                  /* len bytes, NOT NUL-terminated */
    size_t len;
    fc_amqp_field *headers;      /* nheaders, keys and strings owned */
    size_t nheaders;
    char hash[FC_SHA256_HEX_LEN + 1];
    char *sel;                   /* the positions this run selected, comma-separated (owned); NULL when resumed */
    int resume;                  /* a pending marker of this operation was found: its plan is finished */
    size_t bytes;                /* what it counts against the backlog's bound */
    struct dead_work *next;
} dead_work;

/* What a dead letter in the works waits for. Its replacement (replay) goes first; its remainder
 * (when only part of it is taken) goes only once the replacement is confirmed and recorded, so that a
 * remainder in P.dead always means the replacement is out, and only once every dead letter of the pass
 * was seen, so that a copy an interrupted run left in P.dead is known. */
enum dead_phase { PH_R_DUE, PH_R_WAIT, PH_Q_DUE, PH_Q_WAIT };

typedef struct dead_op {
    dead_work *w;                /* owned; NULL: the slot is free */
    fc_dead_letter *dl;          /* w's body parsed (owned) */
    unsigned char *sel;          /* the plan's positions as item flags (owned) */
    admin_marker m;
    int phase;                   /* PH_* */
    int purge;                   /* the plan's operation */
    int claimed;                 /* this run took the dead letter on: nothing of it was out before */
    int r_out;                   /* the replacement is known to be out */
    int q_checked;               /* whether a copy of the remainder is in P.dead was asked */
    uint64_t seq;                /* the publish awaiting its confirm */
    double since;                /* admin_mono_s() since when it waits (to publish, or for a confirm) */
    long items;                  /* items it replays or removes */
    fc_buf r, q;                 /* replacement and remainder bodies; q.len 0: no remainder */
    char r_id[DEAD_ID_MAX], q_id[DEAD_ID_MAX];
} dead_op;

/* A job seen in this pass: whether it is cancelled, whether its results queue was declared again. */
typedef struct dead_job {
    char id[FC_JOB_ID_MAX + 1];
    int cancelled;
    int declared;
} dead_job;

typedef struct dead_pass {
    admin *ad;
    int mode;                    /* DEAD_* */
    int dry;                     /* purge without --yes: list what would go */
    const char *job, *reason;    /* filters (NULL: none) */
    long long left;              /* items --limit still allows; -1 = no limit */
    admin_reader rd;             /* P.dead as it was when the pass began */
    char dead_q[FC_NAME_MAX], batches_x[FC_NAME_MAX], crashed_q[FC_NAME_MAX];
    fc_amqp *side;               /* declarations of results queues (a refused one closes its channel) */
    admin_set *seen;             /* hashes of the dead letters delivered in this pass */
    admin_set *own;              /* message ids of the remainders this pass published */
    dead_job *jobs;
    size_t njobs, capjobs;
    dead_work *head, *tail;      /* selected dead letters not yet taken on, in their order */
    size_t backlog_bytes;
    dead_op ops[DEAD_WINDOW];
    int nops;
    double next_slot;            /* --rate: when the next dead letter may be sent */
    double blocked_since;        /* admin_mono_s() since the broker refuses to take publishes; 0 = not */
    int stopping;                /* gave up: nothing new is started */
    /* the listing */
    admin_table *table;
    long rows_hidden;            /* item rows beyond what the table shows */
    int json_letters;            /* letters printed so far as JSON */
    /* the summary */
    long letters_matched, items_matched;
    long letters_done, items_done, resumed, letters_before, duplicates, ok_items, acks;
    long poison_skipped, cancelled_skipped, not_matching, failed, restored, deferred, other_op, not_attempted;
    int redis_lost;              /* Redis failed: nothing more is written to it */
    int fatal;                   /* ADMIN_INFRA once the broker or Redis is lost */
} dead_pass;

/* ---- dead.c ---- */
/* dead_hash writes the hex sha256 of a dead letter: its message id, x-failed-at and body. The id and the
 * time tell a dead letter from a later one with the same body; copies of one share it. */
void dead_hash(const char *id, const char *failed_at, const void *body, size_t len, char hex[FC_SHA256_HEX_LEN + 1]);
/* dead_header returns the string header key of w, or NULL. */
const char *dead_header(const dead_work *w, const char *key);
void dead_work_free(dead_work *w);
void dead_lost_broker(dead_pass *s);
void dead_lost_redis(dead_pass *s);
/* dead_ack acks a delivery of P.dead: 0, or the broker is lost (said). */
int dead_ack(dead_pass *s, uint64_t tag);
/* dead_job_of returns the pass's record of a job, reading whether it is cancelled the first time; NULL
 * when Redis failed (said) or without memory. */
dead_job *dead_job_of(dead_pass *s, const char *id);
/* dead_intake_done: every dead letter the pass may take was delivered (or none came for a while). */
int dead_intake_done(const dead_pass *s);

/* ---- replay.c ---- */
/* dead_work_off starts and advances replays and partial purges of the backlog, as far as the window,
 * --rate and the broker allow; returns how long the next poll may wait, in ms. */
int dead_work_off(dead_pass *s);
/* dead_check_deadlines gives up when a confirm or a blocked publish waited DEAD_CONFIRM_WAIT_S. */
void dead_check_deadlines(dead_pass *s);
/* dead_on_confirm is the fc_amqp confirm callback of the pass. */
void dead_on_confirm(void *ud, uint64_t seq, int status);
/* dead_abandon settles what is in the works when the pass ends early (the broker lost, or given up):
 * each dead letter stays in P.dead and its job's records are put back. */
void dead_abandon(dead_pass *s);

#endif
