/* Publishing: stream the dataset into batch messages and publish them with pipelined
 * publisher confirms; remember confirmed batches in Redis so --resume skips them. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fc_batcher.h"
#include "fc_dataset.h"
#include "fc_error.h"
#include "fc_jobs.h"
#include "fc_keys.h"
#include "fc_log.h"
#include "fc_message.h"
#include "fc_topology.h"
#include "producer.h"

#define WINDOW_MSGS 256
#define WINDOW_BYTES (4L << 20)
#define CONNECT_TRIES 5
#define CONNECT_BUDGET_S 10.0 /* connect_with_retry gives up after about this long */
#define BACKOFF_FIRST_US 500000u
#define BACKOFF_MAX_US 4000000u
#define CONFIRM_TIMEOUT_S 30.0
#define RECORD_MIN 64 /* confirmed batches recorded in Redis in one round trip (drain) */

typedef struct inflight {
    uint64_t seq;
    long batch;
    long items;
    int redo;   /* items of confirmed batches published again (--resume after the budget stopped them) */
    char *body; /* kept until confirmed, to re-publish after a reconnect */
    size_t len;
} inflight;

typedef struct pub {
    producer *p;
    fc_dataset *ds;
    fc_batcher b;              /* the batch being built; b.max_items is the batch size */
    unsigned char *confirmed;  /* resume: bitmap of batches confirmed by earlier runs */
    size_t confirmed_len;
    inflight win[WINDOW_MSGS];
    int nwin;
    long win_bytes;
    long unrecorded[WINDOW_MSGS]; /* confirmed batches not yet recorded in Redis (record_confirmed) */
    int nunrecorded;
    long long *redo;           /* resume: sorted positions the budget stopped, to publish again */
    size_t nredo, redo_found;
    fc_batcher rb;             /* the batch of such items being built */
    int failed;                /* a nack or return: exit 3 */
    int redis_failed;          /* a confirmed batch could not be recorded: exit 3 */
} pub;

/* declare_job_queue declares the job's own queue, which the fleet shares fairly with other jobs' (fc_jobs.h).
 * A broker user without the permission to declare it publishes to the shared work queue instead: the job is
 * processed as before, first in first out behind the jobs published before it. */
static int declare_job_queue(producer *p) {
    if (!p->cfg->fair_share) return FC_OK;
    fc_topology t = {p->cfg->queue_prefix, p->cfg->retry_delays, p->cfg->nretry_delays, p->cfg->delivery_limit};
    int rc = fc_topology_declare_job(p->amqp, &t, p->st.job_id);
    if (rc == FC_EACCESS && p->own_queue)
        fc_warn("job %s: this broker user may no longer declare the job's queue: the shared work queue takes the rest",
                p->st.job_id);
    else if (rc == FC_EACCESS)
        fc_warn("job %s: this broker user may not declare %s.job.%s (configure permission): its batches go to the "
                "shared work queue, first in first out, without a fair share beside other jobs",
                p->st.job_id, p->cfg->queue_prefix, p->st.job_id);
    p->own_queue = rc == FC_OK;
    return rc == FC_EACCESS ? FC_OK : rc;
}

/* producer_connect connects and declares the topology, retrying with backoff (0.5 s doubling, at most 4 s)
 * for at most CONNECT_TRIES attempts or about CONNECT_BUDGET_S seconds, whichever comes first; it never sleeps
 * after the last attempt. Returns 0, FC_EBROKER (the broker refused twice) or FC_ECONN. */
int producer_connect(producer *p) {
    fc_topology t = {p->cfg->queue_prefix, p->cfg->retry_delays, p->cfg->nretry_delays, p->cfg->delivery_limit};
    double deadline = mono_s() + CONNECT_BUDGET_S;
    useconds_t backoff = BACKOFF_FIRST_US;
    for (int i = 0; i < CONNECT_TRIES; i++) {
        int rc = fc_amqp_connect(p->amqp);
        if (rc == FC_OK) rc = fc_topology_declare(p->amqp, &t);
        if (rc == FC_OK) rc = fc_topology_declare_results(p->amqp, p->cfg->queue_prefix, p->st.job_id);
        if (rc == FC_OK) rc = declare_job_queue(p);
        if (rc == FC_OK) return FC_OK;
        fc_warn("broker: %s (attempt %d of %d)", fc_amqp_errstr(p->amqp), i + 1, CONNECT_TRIES);
        if (rc == FC_EBROKER && i > 0) return rc;
        double left = deadline - mono_s();
        if (i + 1 == CONNECT_TRIES || left <= 0) break;
        if (backoff / 1e6 > left) backoff = (useconds_t)(left * 1e6);
        usleep(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : backoff * 2;
    }
    return FC_ECONN;
}

/* record_confirmed records the batches confirmed since its last call in the job's bitmap, the record --resume
 * trusts, in one pipelined round trip (a round trip per batch, or per confirm frame, would cap the producer at
 * about one batch, or a few, per Redis round trip). SETBIT is idempotent: on failure the whole pipeline is sent once more (the client
 * reconnects), then the run ends with exit 3. A kill before it runs only makes --resume publish those batches
 * again, as a kill before their confirms would. */
static void record_confirmed(pub *u) {
    if (u->nunrecorded == 0) return;
    char nums[WINDOW_MSGS][24];
    const char *argv[WINDOW_MSGS][4];
    const char **argvs[WINDOW_MSGS];
    int argcs[WINDOW_MSGS];
    for (int i = 0; i < u->nunrecorded; i++) {
        snprintf(nums[i], sizeof(nums[i]), "%ld", u->unrecorded[i]);
        argv[i][0] = "SETBIT";
        argv[i][1] = u->p->key[FC_JOB_CONFIRMED];
        argv[i][2] = nums[i];
        argv[i][3] = "1";
        argvs[i] = argv[i];
        argcs[i] = 4;
    }
    int rc = FC_EREDIS;
    for (int try = 0; try < 2 && rc != FC_OK; try++)
        rc = fc_redis_pipeline(u->p->redis, NULL, (size_t)u->nunrecorded, argcs, argvs, NULL);
    if (rc != FC_OK) u->redis_failed = 1;
    u->nunrecorded = 0;
}

static void on_confirm(void *ud, uint64_t seq, int status) {
    pub *u = ud;
    for (int i = 0; i < u->nwin; i++) {
        if (u->win[i].seq != seq) continue;
        if (status != FC_OK) {
            fc_error("broker refused batch %ld: %s", u->win[i].batch, fc_strerror(status));
            u->failed = 1;
        } else if (u->win[i].redo) { /* its batch is confirmed already */
            u->p->st.items_redone += u->win[i].items;
        } else {
            if (u->nunrecorded == WINDOW_MSGS) record_confirmed(u);
            u->unrecorded[u->nunrecorded++] = u->win[i].batch;
            u->p->st.items_published += u->win[i].items;
            u->p->st.batches_published++;
        }
        u->win_bytes -= (long)u->win[i].len;
        free(u->win[i].body);
        u->win[i] = u->win[--u->nwin];
        return;
    }
}

/* poll_confirms is fc_amqp_poll with the confirmed batches recorded as it returns. */
static int poll_confirms(pub *u, int timeout_ms) {
    fc_amqp_handler h = {NULL, on_confirm, NULL, u};
    int rc = fc_amqp_poll(u->p->amqp, timeout_ms, &h);
    record_confirmed(u);
    return rc;
}

static int send_one(pub *u, inflight *f) {
    char mid[128], exchange[FC_NAME_MAX];
    fc_batch_hdr h = u->b.hdr;
    h.batch = f->batch;
    h.attempt = 1;
    fc_message_batch_id(mid, sizeof(mid), &h, f->redo ? "resumed" : NULL);
    fc_topology_name(exchange, u->p->cfg->queue_prefix, u->p->own_queue ? "jobs" : "batches");
    fc_amqp_props props = {mid, NULL, NULL, 0};
    return fc_amqp_publish(u->p->amqp, exchange, u->p->own_queue ? u->p->st.job_id : "", &props, f->body, f->len,
                           &f->seq);
}

/* recover reconnects after a lost connection and re-publishes every unconfirmed batch. */
static int recover(pub *u) {
    fc_warn("broker connection lost (%s); reconnecting", fc_amqp_errstr(u->p->amqp));
    if (producer_connect(u->p) != FC_OK) return FC_ECONN;
    for (int i = 0; i < u->nwin; i++)
        if (send_one(u, &u->win[i]) != FC_OK) return FC_ECONN;
    return FC_OK;
}

/* drain waits for confirms until at most `left` publishes of at most `bytes_left` bytes in all are
 * unconfirmed. A confirmed batch not yet recorded in Redis still counts against `left`, so that a kill
 * never makes --resume publish more than one window again; they are recorded RECORD_MIN at a time, or
 * when only they stand in the way. Returns 0, FC_ENACK (a batch was refused), FC_ETIMEOUT or FC_ECONN. */
static int drain(pub *u, int left, long bytes_left) {
    fc_amqp_handler h = {NULL, on_confirm, NULL, u};
    double deadline = mono_s() + CONFIRM_TIMEOUT_S;
    int reconnects = 0;
    while (u->nwin + u->nunrecorded > left || u->win_bytes > bytes_left) {
        if (u->nunrecorded >= RECORD_MIN || (u->nunrecorded && u->nwin <= left && u->win_bytes <= bytes_left)) {
            record_confirmed(u);
            continue;
        }
        if (mono_s() > deadline) {
            fc_error("no publisher confirms within %.0f s", CONFIRM_TIMEOUT_S);
            return FC_ETIMEOUT;
        }
        if (fc_amqp_poll(u->p->amqp, 200, &h) != FC_OK) {
            if (++reconnects > CONNECT_TRIES || recover(u) != FC_OK) return FC_ECONN;
            deadline = mono_s() + CONFIRM_TIMEOUT_S;
        }
    }
    return u->failed ? FC_ENACK : FC_OK;
}

/* wait_input is the dataset's wait hook: while the input has nothing to read (a slow pipe), it keeps the broker
 * connection serviced, so confirms are recorded (a kill then repeats fewer batches) and heartbeats go out.
 * Returns 0 once fd is readable; a lost connection is left for the next publish or drain to recover. */
static int wait_input(void *ud, int fd) {
    pub *u = ud;
    fc_amqp *a = u->p->amqp;
    for (;;) {
        int live = fc_amqp_ok(a) && fc_amqp_fd(a) >= 0;
        if (live && fc_amqp_pending(a) && poll_confirms(u, 0) != FC_OK) live = 0;
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {live ? fc_amqp_fd(a) : -1, POLLIN, 0}};
        int n = poll(pf, live ? 2 : 1, live ? 1000 : -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || pf[0].revents) return FC_OK;
        /* a frame arrived, or a second passed: handle frames and send a heartbeat if one is due */
        if (poll_confirms(u, 0) != FC_OK) fc_warn("broker connection lost while waiting for input");
    }
}

static int is_confirmed(const pub *u, long batch) {
    size_t byte = (size_t)batch / 8;
    return byte < u->confirmed_len && (u->confirmed[byte] >> (7 - batch % 8)) & 1;
}

/* publish_batch publishes a closed batch (unless an earlier run got it confirmed; redo: a batch of the
 * items of confirmed batches the budget stopped, published again whatever the bitmap says). */
static int publish_batch(pub *u, fc_closed_batch *c, int redo) {
    if (!redo) u->p->st.batches_total++;
    if (!redo && is_confirmed(u, c->batch)) {
        u->p->st.batches_skipped++;
        u->p->st.items_skipped += c->items;
        fc_buf_free(&c->body);
        return FC_OK;
    }
    /* Room in the window for this batch; one as big as the byte budget or bigger (BATCH_MAX_BYTES
     * allows 16 MiB) goes out alone, once every batch before it is confirmed. */
    long len = (long)c->body.len;
    int rc = len < WINDOW_BYTES ? drain(u, WINDOW_MSGS - 1, WINDOW_BYTES - len) : drain(u, 0, 0);
    if (rc != FC_OK) {
        fc_buf_free(&c->body);
        return rc;
    }
    inflight *f = &u->win[u->nwin];
    f->batch = c->batch;
    f->items = c->items;
    f->redo = redo;
    f->len = c->body.len;
    if (!(f->body = fc_buf_steal(&c->body))) return FC_ENOMEM;
    u->nwin++;
    u->win_bytes += (long)f->len;
    rc = send_one(u, f);
    /* FC_ENOMEM: sent, but the client could not track its confirm; stop rather than trust it */
    if (rc == FC_ENOMEM) return rc;
    if (rc != FC_OK && recover(u) != FC_OK) return FC_ECONN;
    return FC_OK;
}

/* reject reports a bad row and keeps it (the first MAX_BAD_KEPT) for the report. Returns 0, or
 * FC_ENOMEM when it cannot be kept: the run stops rather than write a report that leaves it out. */
static int reject(producer *p, long line, const char *reason) {
    fprintf(stderr, "flashcard-producer: rejected: %s\n", reason);
    p->st.rows_rejected++;
    if (p->st.nbad >= MAX_BAD_KEPT) return FC_OK;
    bad_row *b = realloc(p->st.bad, (p->st.nbad + 1) * sizeof(*b));
    if (!b) return FC_ENOMEM;
    p->st.bad = b;
    if (!(b[p->st.nbad].reason = strdup(reason))) return FC_ENOMEM;
    b[p->st.nbad].line = line;
    p->st.nbad++;
    return FC_OK;
}

static int cmp_pos(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* add_redo adds it, just added to a batch an earlier run got confirmed, to the batch of items published
 * again when the budget stopped it (a resumed run). */
static int add_redo(pub *u, const fc_item *it) {
    long batch = u->b.hdr.batch;
    if (!u->nredo || !is_confirmed(u, batch) || !bsearch(&it->position, u->redo, u->nredo, sizeof(*u->redo), cmp_pos))
        return FC_OK;
    u->redo_found++;
    fc_closed_batch c;
    if (u->rb.items == 0) u->rb.hdr.batch = batch; /* a label: the bitmap does not record these */
    int rc = fc_batcher_add(&u->rb, it, &c);
    return rc == 1 ? publish_batch(u, &c, 1) : rc;
}

/* add appends one item to the batch being built, publishing that batch first when it is full.
 * In dry mode (--strict's first pass) it only checks that the item fits in a batch. */
static int add(pub *u, const fc_item *it, int dry) {
    fc_closed_batch c;
    int rc = dry ? fc_batcher_fits(&u->b, it) : fc_batcher_add(&u->b, it, &c);
    if (rc == FC_ETOOBIG) {
        char why[200];
        snprintf(why, sizeof(why), "line %ld: item of %zu bytes does not fit in a batch of BATCH_MAX_BYTES (%ld)",
                 it->line, u->b.one.len, u->b.max_bytes);
        if (dry) {
            fprintf(stderr, "flashcard-producer: --strict: %s; nothing was published\n", why);
            return FC_EPARSE;
        }
        return reject(u->p, it->line, why);
    }
    if (rc == 1 && (rc = publish_batch(u, &c, 0)) != FC_OK) return rc;
    return rc == FC_OK ? add_redo(u, it) : rc;
}

/* read_all streams every row; in dry mode (--strict's first pass) nothing is published. */
static int read_all(pub *u, int dry) {
    fc_item it = {0};
    fc_row_error re;
    int rc, out = FC_OK;
    while ((rc = fc_dataset_next(u->ds, &it, &re)) != 0) {
        if (rc == FC_EPARSE) {
            if (dry) {
                fprintf(stderr, "flashcard-producer: --strict: %s; nothing was published\n", re.reason);
                out = FC_EPARSE;
                break;
            }
            if ((out = reject(u->p, re.line, re.reason)) != FC_OK) break;
            continue;
        }
        if (rc < 0) {
            fprintf(stderr, "flashcard-producer: reading the dataset failed: %s\n", fc_strerror(rc));
            out = rc;
            break;
        }
        if ((out = add(u, &it, dry)) != FC_OK) break;
        fc_item_clear(&it);
    }
    fc_item_clear(&it);
    u->p->st.rows_read = fc_dataset_rows(u->ds);
    return out;
}

static int auto_batch_size(const fc_config *cfg) {
    /* One batch is about a minute of fleet work: RATE_LIMIT calls per minute, two calls per item. */
    long n = cfg->rate_limit > 0 ? cfg->rate_limit / 2 : 100;
    return (int)(n < 1 ? 1 : n > 100 ? 100 : n);
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* list_job notes when the job was created, and lists it in P:jobs, where flashcard-admin finds it
 * (a resumed job keeps its first date). */
static int list_job(producer *p) {
    char jobs[FC_KEY_MAX];
    long long now = (long long)(wall_s() * 1000);
    if (fc_key_jobs(jobs, sizeof(jobs), p->cfg->queue_prefix) != FC_OK) return FC_EINVAL;
    int rc = fc_redis_cmd(p->redis, NULL, "HSETNX %s created_ms %lld", p->key[FC_JOB_META], now);
    if (rc == FC_OK) rc = fc_redis_cmd(p->redis, NULL, "ZADD %s NX %lld %s", jobs, now, p->st.job_id);
    return rc;
}

/* The script that takes back, on --resume, the outcomes of the items the budget stopped: it moves them
 * from the outcome and failure records to the redo record in one step (a kill then leaves them there,
 * where the next --resume finds them) and answers the redo record (position, 1, ...). Hash commands
 * only: the project's Redis ACL user has them (docs/redis.md). */
static const char redo_script[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #h, 2 do\n"
    "  if h[i + 1] == 'budget' then\n"
    "    redis.call('HDEL', KEYS[1], h[i]); redis.call('HDEL', KEYS[2], h[i]); redis.call('HSET', KEYS[3], h[i], 1)\n"
    "  end\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[3], 604800)\n"
    "return redis.call('HGETALL', KEYS[3])\n";

/* The script that empties the redo record once every item in it is published again. */
static const char redo_done_script[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #h, 2 do redis.call('HDEL', KEYS[1], h[i]) end\n"
    "return 0\n";

/* load_redo takes back the items the budget stopped into u->redo (sorted); 0 or an fc_redis error. */
static int load_redo(pub *u) {
    producer *p = u->p;
    fc_reply r;
    const char *argv[] = {"EVAL", redo_script, "3", p->key[FC_JOB_OUTCOME], p->key[FC_JOB_FAILED],
                          p->key[FC_JOB_REDO]};
    int rc = fc_redis_command(p->redis, &r, 6, argv, NULL);
    if (rc != FC_OK) return rc;
    if (r.type == FC_REPLY_ARRAY && r.nelem > 0 && (u->redo = malloc(r.nelem * sizeof(*u->redo)))) {
        for (size_t i = 0; i + 1 < r.nelem; i += 2)
            if (r.elem[i].type == FC_REPLY_STR) u->redo[u->nredo++] = atoll(r.elem[i].str);
        qsort(u->redo, u->nredo, sizeof(*u->redo), cmp_pos);
    }
    rc = r.type == FC_REPLY_ARRAY && r.nelem > 0 && !u->redo ? FC_ENOMEM : FC_OK;
    fc_reply_free(&r);
    if (u->nredo) fc_info("job %s: %zu items the budget stopped are published again", p->st.job_id, u->nredo);
    return rc;
}

/* load_job reads or creates the job record; on --resume it loads the confirmed bitmap. */
static int load_job(pub *u) {
    producer *p = u->p;
    fc_reply r;
    /* A resumed run must cut the same batches: it takes the size limits from the record. */
    int rc = fc_redis_cmd(p->redis, &r, "HMGET %s batch_size batch_max_bytes", p->key[FC_JOB_META]);
    if (rc != FC_OK) return rc;
    int exists = r.type == FC_REPLY_ARRAY && r.nelem == 2 && r.elem[0].type == FC_REPLY_STR;
    if (exists && p->cfg->resume) {
        u->b.max_items = atol(r.elem[0].str);
        if (r.elem[1].type == FC_REPLY_STR) u->b.max_bytes = atol(r.elem[1].str);
    } else if (exists && !p->cfg->resume) {
        fc_reply_free(&r);
        fprintf(stderr, "flashcard-producer: job '%s' exists already: use --resume to continue it, or another --job-id\n",
                p->st.job_id);
        return FC_EINVAL;
    }
    fc_reply_free(&r);
    if (p->cfg->resume && fc_redis_cmd(p->redis, &r, "GET %s", p->key[FC_JOB_CONFIRMED]) == FC_OK &&
        r.type == FC_REPLY_STR) {
        u->confirmed = (unsigned char *)r.str;
        u->confirmed_len = r.len;
        r.str = NULL;
    }
    fc_reply_free(&r);
    if (p->cfg->resume && (rc = load_redo(u)) != FC_OK) return rc;
    rc = fc_redis_cmd(p->redis, NULL, "HSET %s batch_size %ld batch_max_bytes %ld priority %d", p->key[FC_JOB_META],
                      u->b.max_items, u->b.max_bytes, p->cfg->priority);
    /* The budget: a resumed run given one replaces the earlier (a higher one lets the job go on). */
    long long uusd = (long long)(p->cfg->budget_usd * 1e6 + 0.5);
    if (rc == FC_OK && (!p->cfg->resume || p->cfg->budget_tokens > 0))
        rc = fc_redis_cmd(p->redis, NULL, "HSET %s budget_tokens %ld", p->key[FC_JOB_META], p->cfg->budget_tokens);
    if (rc == FC_OK && (!p->cfg->resume || uusd > 0))
        rc = fc_redis_cmd(p->redis, NULL, "HSET %s budget_uusd %lld", p->key[FC_JOB_META], uusd);
    return rc == FC_OK ? list_job(p) : rc;
}

/* finish_job marks the job published in its record. items_total counts the whole job: this run's publishes
 * plus the batches earlier runs got confirmed (each run reads the whole dataset, so their items are known).
 * A killed run never gets here, so the record cannot be built up by increments. */
static int finish_job(pub *u) {
    producer *p = u->p;
    p->st.items_total = p->st.items_published + p->st.items_skipped;
    if (u->redis_failed) return FC_EREDIS;
    int rc = fc_redis_cmd(p->redis, NULL, "HSET %s items %ld batches %ld published 1", p->key[FC_JOB_META],
                          p->st.items_total, p->st.batches_total);
    if (rc == FC_OK) rc = fc_redis_cmd(p->redis, NULL, "EXPIRE %s 604800", p->key[FC_JOB_META]);
    if (rc == FC_OK) rc = fc_redis_cmd(p->redis, NULL, "EXPIRE %s 604800", p->key[FC_JOB_CONFIRMED]);
    /* Every item taken back is in a confirmed batch again: the set has done its work. */
    if (rc == FC_OK && u->nredo && u->redo_found >= u->nredo) {
        const char *argv[] = {"EVAL", redo_done_script, "1", p->key[FC_JOB_REDO]};
        rc = fc_redis_command(p->redis, NULL, 4, argv, NULL);
    }
    else if (rc == FC_OK && u->nredo)
        fc_warn("job %s: %zu of the %zu items the budget stopped are not in this dataset any more", p->st.job_id,
                u->nredo - u->redo_found, u->nredo);
    if (rc == FC_OK) p->st.published = 1;
    return rc == FC_OK ? FC_OK : FC_EREDIS;
}

/* say_stopped says why the run stopped, how much was confirmed (nothing confirmed is lost) and how to resume. */
static void say_stopped(const producer *p, const char *what) {
    fprintf(stderr,
            "flashcard-producer: %s. %ld batches (%ld items) were confirmed; nothing confirmed is lost.\n"
            "  Resume with: flashcard-producer --job-id %s --resume ... (same dataset and options)\n",
            what, p->st.batches_published, p->st.items_published, p->st.job_id);
}

static int infra_exit(producer *p, const char *what) {
    say_stopped(p, what);
    return EXIT_INFRA;
}

static int publish(producer *p, FILE *in, int format) {
    pub u;
    char err[512];
    memset(&u, 0, sizeof(u));
    u.p = p;
    u.b.max_items = p->cfg->batch_size ? p->cfg->batch_size : auto_batch_size(p->cfg);
    u.b.max_bytes = p->cfg->batch_max_bytes;
    snprintf(u.b.hdr.job_id, sizeof(u.b.hdr.job_id), "%s", p->st.job_id);
    u.b.hdr.attempt = 1;
    u.b.hdr.priority = p->cfg->priority != FC_PRIORITY_DEFAULT ? p->cfg->priority : 0;
    fc_columns cols;
    fc_columns_default(&cols);
    if (p->cfg->columns && fc_columns_parse(p->cfg->columns, &cols, err, sizeof(err)) != FC_OK) {
        fprintf(stderr, "flashcard-producer: --columns: %s\n", err);
        return EXIT_USAGE;
    }
    if (p->cfg->strict) {
        u.ds = fc_dataset_open(in, format, &cols, err, sizeof(err));
        if (!u.ds) {
            fprintf(stderr, "flashcard-producer: DATASET: %s\n", err);
            return EXIT_USAGE;
        }
        int rc = read_all(&u, 1);
        fc_dataset_close(u.ds);
        fc_batcher_free(&u.b); /* its scratch buffer; the dry pass built no batch */
        if (rc == FC_ENOMEM) fprintf(stderr, "flashcard-producer: --strict: out of memory; nothing was published\n");
        if (rc != FC_OK) return EXIT_INCOMPLETE;
        /* the reader reads the descriptor: fseek moves it back too (a file: producer_publish copies a pipe) */
        if (fseek(in, 0, SEEK_SET) != 0) {
            fprintf(stderr, "flashcard-producer: DATASET: cannot read it twice for --strict: %m\n");
            return EXIT_USAGE;
        }
    }
    u.ds = fc_dataset_open(in, format, &cols, err, sizeof(err));
    if (!u.ds) {
        fprintf(stderr, "flashcard-producer: DATASET: %s\n", err);
        return EXIT_USAGE;
    }
    int rc = load_job(&u);
    if (rc == FC_EINVAL) {
        fc_dataset_close(u.ds);
        return EXIT_USAGE;
    }
    if (rc != FC_OK) {
        fc_dataset_close(u.ds);
        fprintf(stderr, "flashcard-producer: Redis: %s\n", fc_redis_errstr(p->redis));
        return infra_exit(p, "Redis is unreachable or refused the credentials");
    }
    if (producer_connect(p) != FC_OK) {
        fc_dataset_close(u.ds);
        free(u.confirmed);
        free(u.redo);
        char what[400];
        snprintf(what, sizeof(what), "cannot reach the broker (%s)", fc_amqp_errstr(p->amqp));
        return infra_exit(p, what);
    }
    u.rb.max_items = u.b.max_items;
    u.rb.max_bytes = u.b.max_bytes;
    u.rb.hdr = u.b.hdr;
    if (p->own_queue && fc_jobs_list(p->redis, p->cfg->queue_prefix, p->st.job_id, (long long)(wall_s() * 1000)) != FC_OK) {
        fc_dataset_close(u.ds);
        free(u.confirmed);
        free(u.redo);
        fprintf(stderr, "flashcard-producer: Redis: %s\n", fc_redis_errstr(p->redis));
        return infra_exit(p, "Redis is unreachable or refused the credentials");
    }
    fc_info("job %s: publishing %s in batches of %ld (priority %d)", p->st.job_id, p->cfg->args[0], u.b.max_items,
            p->cfg->priority);
    fc_dataset_set_wait(u.ds, wait_input, &u);
    rc = read_all(&u, 0);
    fc_closed_batch last;
    int closed = rc == FC_OK ? fc_batcher_finish(&u.b, &last) : 0;
    if (closed < 0) rc = closed;
    else if (closed) rc = publish_batch(&u, &last, 0);
    closed = rc == FC_OK ? fc_batcher_finish(&u.rb, &last) : 0;
    if (closed < 0) rc = closed;
    else if (closed) rc = publish_batch(&u, &last, 1);
    if (rc == FC_OK) rc = drain(&u, 0, 0);
    if (rc == FC_OK) rc = finish_job(&u);
    fc_dataset_close(u.ds);
    free(u.confirmed);
    free(u.redo);
    for (int i = 0; i < u.nwin; i++) free(u.win[i].body);
    fc_batcher_free(&u.b);
    fc_batcher_free(&u.rb);
    if (rc == FC_ENACK) return infra_exit(p, "the broker refused some batches");
    if (rc == FC_ETIMEOUT || rc == FC_ECONN) return infra_exit(p, "lost the broker while publishing");
    if (rc == FC_EREDIS) return infra_exit(p, "lost Redis while publishing");
    if (rc == FC_ENOMEM) say_stopped(p, "out of memory"); /* this process's failure, not the broker's: exit 1 */
    if (rc != FC_OK) return EXIT_INCOMPLETE; /* a dataset error, or --strict found a bad row: said already */
    fc_info("job %s: %ld items in %ld batches published and confirmed (%ld rows rejected)", p->st.job_id,
            p->st.items_published, p->st.batches_published, p->st.rows_rejected);
    return p->st.rows_rejected ? EXIT_INCOMPLETE : EXIT_DONE;
}

/* producer_publish publishes the dataset in; for --strict, which reads it twice, a pipe (stdin)
 * is first copied to a temporary file. */
int producer_publish(producer *p, FILE *in, int format) {
    if (!p->cfg->strict || fseek(in, 0, SEEK_CUR) == 0) return publish(p, in, format);
    FILE *copy = tmpfile();
    char buf[65536];
    size_t n;
    int ok = copy != NULL;
    while (ok && (n = fread(buf, 1, sizeof(buf), in)) > 0) ok = fwrite(buf, 1, n, copy) == n;
    if (!ok || ferror(in) || fflush(copy) != 0 || fseek(copy, 0, SEEK_SET) != 0) {
        fprintf(stderr, "flashcard-producer: --strict: cannot keep a copy of the input to read it twice: %m; "
                        "nothing was published\n");
        if (copy) fclose(copy);
        return EXIT_INCOMPLETE;
    }
    int rc = publish(p, copy, format);
    fclose(copy);
    return rc;
}
