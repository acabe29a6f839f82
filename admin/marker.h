/* A dead letter's marker in Redis, P:replayed:<h> (h: the letter's hash, see dead.h), which lets the
 * next run finish a replay or a partial purge that was interrupted without sending anything twice:
 *   absent    nothing was done to the dead letter.
 *   a hash    pending: a run took it on. Fields: state ("pending"; "void" after a failure that sent
 *             nothing: as absent), mode (replay | purge), job, sel (the positions taken out of the dead
 *             letter, comma-separated), rep (those sent in the replacement: sel without the items that
 *             ended ok since), r (1: the replacement is known to be out), restored (1: the job's records
 *             were put back), and o:<pos> / f:<pos>, the job's outcome and failed entries of each replayed
 *             item as they were (the stash the records are put back from).
 *   a string  done: the replacement and the remainder were confirmed; a dead letter with this hash is
 *             a copy to remove.
 * It lives 7 days, as long as a job's record. A marker and the job's records change together in Lua
 * scripts: the marker is not in the job's hash slot, so this needs one Redis (or a Sentinel setup),
 * not a Redis Cluster. */
#ifndef ADMIN_MARKER_H
#define ADMIN_MARKER_H

#include "admin.h"

enum { ADMIN_MARKER_NONE, ADMIN_MARKER_PENDING, ADMIN_MARKER_DONE };

/* A marker and the job records it moves items of. */
typedef struct admin_marker {
    fc_redis *redis;                 /* borrowed */
    char key[FC_KEY_MAX];            /* P:replayed:<h> */
    char outcome[FC_KEY_MAX], failed[FC_KEY_MAX], retry[FC_KEY_MAX]; /* P:job:{job}:... */
} admin_marker;

/* What a pending marker says. */
typedef struct admin_plan {
    int state;       /* ADMIN_MARKER_* */
    int purge;       /* its operation: 1 a partial purge, 0 a replay */
    int claimed;     /* 1: this call took the dead letter on; 0: an earlier run had */
    int r_out;       /* the replacement is known to be out */
    int restored;    /* the job's records were put back */
    char *sel, *rep; /* comma-separated positions (owned: admin_plan_free) */
} admin_plan;

/* admin_marker_init names the marker of the dead letter with hash hex, and the records of job_id
 * (NULL: none, for a marker only peeked at or set done). */
void admin_marker_init(admin_marker *m, admin *ad, const char *hex, const char *job_id);

/* admin_marker_peek reads the marker's state (ADMIN_MARKER_*) and, when pending, its operation into
 * *purge. 0 or an fc_redis error. */
int admin_marker_peek(admin_marker *m, int *state, int *purge);

/* admin_marker_claim takes the dead letter on (atomically): when the marker is absent (or void) it
 * becomes pending with the positions sel (comma-separated) and, for a replay, moves the job's outcome
 * and failed entries of those positions into it (items that ended ok since, or wait in a retry
 * queue, stay and are not replayed: out->rep lacks them). Otherwise it is left as it is and *out says
 * what it holds (done, or an earlier run's plan). 0 or an fc_redis error; free out with admin_plan_free. */
int admin_marker_claim(admin_marker *m, int purge, const char *job_id, const char *sel, admin_plan *out);
void admin_plan_free(admin_plan *p);

/* admin_marker_check tells whether the replacement of a pending replay reached a worker since: an item
 * of it has an outcome or a retry entry it did not have when the replay left it (*delivered = 1; the
 * marker then records r). When it did not, the records are taken out again if they had been put
 * back. 0, FC_ENOTFOUND (the marker is no longer pending) or an fc_redis error. */
int admin_marker_check(admin_marker *m, int *delivered);

/* admin_marker_sent records that the replacement is out (r = 1), before the remainder is sent. */
int admin_marker_sent(admin_marker *m);

/* admin_marker_fail settles a replay or purge that did not finish: with restore, puts the stashed
 * records back for the items that have no outcome and no retry entry now (a worker's fresh outcome is
 * never overwritten); with release, makes the marker void (nothing was sent: the next run starts
 * afresh, with its own selection). Otherwise the plan stays for the next run to finish. */
int admin_marker_fail(admin_marker *m, int restore, int release);

/* admin_marker_done replaces the marker with "done" (its stash dropped), 7 days. */
int admin_marker_done(admin_marker *m);

#endif
