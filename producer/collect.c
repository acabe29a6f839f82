/* Waiting and collecting (--wait): progress comes from the job's Redis record (the worker
 * writes each item's final outcome there after its outcome messages are confirmed); the
 * results come from the job's results queue, deduplicated by position and appended to a spool,
 * then written out ordered by position.
 *
 * With --output the spool is OUTPUT.<job>.part: results are acked once the spool is on disk, so the
 * broker never holds them unacked for long (RabbitMQ closes a channel that keeps a delivery
 * unacked past consumer_timeout, 30 minutes by default), and a run cut short (--timeout, lost
 * broker, crash) leaves them there for the next --resume --wait. The spool is removed once the
 * output is written. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc_error.h"
#include "fc_log.h"
#include "fc_output.h"
#include "fc_pipeline.h"
#include "fc_topology.h"
#include "producer.h"

#define PROGRESS_TTY_S 0.5
#define WAIT_RECONNECTS 10  /* broker connections lost while waiting before giving up */
#define BROKER_OUTAGE_S 300.0 /* longest broker outage --wait sits out (a node's restart, a failover) */
#define REDIS_OUTAGE_S 60.0 /* longest Redis outage --wait sits out */
#define PROGRESS_LOG_S 5.0
#define RECONNECT_RESET_S 300.0 /* connected this long, lost connections are forgiven */
#define DRAINED_CHECKS 5       /* checks that find the results queue empty before results are called lost, */
#define DRAINED_QUIET_S 3.0    /* with no delivery for this long */
#define POSSET_FIRST 1024      /* slots of a position set's first table */

typedef struct spooled {
    long long position;
    long offset;   /* of the item's JSON line in the spool */
} spooled;

/* A set of positions: open addressing with linear probing, at most half full, 0 marking a free
 * slot (positions are >= 1). Its size follows the number of results, whatever their positions. */
typedef struct posset {
    unsigned long long *slot;
    size_t cap;    /* slots: 0 or a power of two */
    size_t n;      /* positions held */
} posset;

typedef struct collector {
    producer *p;
    FILE *spool;
    char *spool_path;      /* OUTPUT.<job>.part, or NULL for an anonymous temp file */
    int unsynced;          /* results spooled since the last ack */
    double last_delivery;  /* mono_s() of the last results message */
    spooled *v;
    size_t n, cap;
    posset seen;           /* positions in v */
    uint64_t last_tag;     /* the last delivery whose results are all spooled: acked at the next sync */
    int error;             /* 0, or why a delivery could not be spooled: it and all after it stay unacked */
    int write_errno;       /* errno of the first failed write to the spool, for the message */
    int bad_message;
} collector;

/* posset_slot returns the slot holding pos, or the free slot where it would go (s->cap > 0). */
static size_t posset_slot(const posset *s, unsigned long long pos) {
    unsigned long long h = pos * 0x9e3779b97f4a7c15ull; /* Fibonacci hashing: the high bits are mixed best */
    size_t i = (size_t)(h ^ h >> 32) & (s->cap - 1);
    while (s->slot[i] && s->slot[i] != pos) i = (i + 1) & (s->cap - 1);
    return i;
}

static int posset_has(const posset *s, unsigned long long pos) { return s->cap && s->slot[posset_slot(s, pos)] == pos; }

/* posset_reserve makes room for one more position: 0, or FC_ENOMEM with the set unchanged. */
static int posset_reserve(posset *s) {
    if ((s->n + 1) * 2 <= s->cap) return FC_OK;
    posset g = {NULL, s->cap ? s->cap * 2 : POSSET_FIRST, 0};
    if (g.cap < s->cap || !(g.slot = calloc(g.cap, sizeof(*g.slot)))) return FC_ENOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slot[i]) g.slot[posset_slot(&g, s->slot[i])] = s->slot[i];
    g.n = s->n;
    free(s->slot);
    *s = g;
    return FC_OK;
}

/* posset_add adds pos, which the set does not hold, after a successful posset_reserve. */
static void posset_add(posset *s, unsigned long long pos) {
    s->slot[posset_slot(s, pos)] = pos;
    s->n++;
}

/* note_reserve makes room to note one more item (in v and in seen): 0 or FC_ENOMEM. */
static int note_reserve(collector *c) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        spooled *v = cap > c->cap ? realloc(c->v, cap * sizeof(*v)) : NULL;
        if (!v) return FC_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    return posset_reserve(&c->seen);
}

/* note_item records that the item at offset of the spool has position (>= 1, not seen yet), after a
 * successful note_reserve. */
static void note_item(collector *c, long long position, long offset) {
    posset_add(&c->seen, (unsigned long long)position);
    c->v[c->n].position = position;
    c->v[c->n].offset = offset;
    c->n++;
}

static long long position_of(json_object *item) {
    json_object *pos;
    return json_object_object_get_ex(item, "position", &pos) ? json_object_get_int64(pos) : 0;
}

/* spool_failed keeps the errno of the first failed write to the spool (EIO if none was set); returns FC_EIO. */
static int spool_failed(collector *c) {
    if (!c->write_errno) c->write_errno = errno ? errno : EIO;
    return FC_EIO;
}

/* spool_item appends item to the spool, unless its position is there already (a delivery that came
 * twice). Returns 0, or FC_ENOMEM / FC_EIO: the item is not spooled, so its message must not be acked.
 * An item without a valid position is skipped with a warning: no delivery can make it whole. */
static int spool_item(collector *c, json_object *item) {
    long long pos = position_of(item);
    if (pos < 1) {
        fc_warn("ignoring a result without a valid position");
        return FC_OK;
    }
    if (posset_has(&c->seen, (unsigned long long)pos)) return FC_OK;
    const char *json = json_object_to_json_string_ext(item, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!json || note_reserve(c) != FC_OK) return FC_ENOMEM;
    errno = 0;
    long offset = ftell(c->spool);
    if (offset < 0 || fputs(json, c->spool) == EOF || fputc('\n', c->spool) == EOF) return spool_failed(c);
    note_item(c, pos, offset);
    return FC_OK;
}

/* spool_load reads the results an earlier run spooled; a last line cut short by a crash is
 * dropped (its message was not acked, so it comes again). Returns 0, FC_ENOMEM, or FC_EIO (a read
 * error: nothing is cut then, since what could not be read may hold results already acked). */
static int spool_load(collector *c) {
    char *line = NULL;
    size_t cap = 0;
    long offset = 0;
    ssize_t len;
    int rc = FC_OK;
    while (rc == FC_OK && (len = getline(&line, &cap, c->spool)) > 0 && line[len - 1] == '\n') {
        json_object *item = json_tokener_parse(line);
        long long pos = position_of(item);
        json_object_put(item);
        if (pos < 1) fc_warn("spool %s: skipping an unreadable line at byte %ld", c->spool_path, offset);
        else if (!posset_has(&c->seen, (unsigned long long)pos) && (rc = note_reserve(c)) == FC_OK)
            note_item(c, pos, offset);
        offset += (long)len;
    }
    free(line);
    if (rc != FC_OK) return rc;
    if (ferror(c->spool) || !feof(c->spool)) return errno == ENOMEM ? FC_ENOMEM : FC_EIO; /* getline failed */
    if (fflush(c->spool) != 0 || ftruncate(fileno(c->spool), offset) != 0 || fseek(c->spool, offset, SEEK_SET) != 0)
        return FC_EIO;
    if (c->n) fc_info("job %s: %zu results already collected in %s", c->p->st.job_id, c->n, c->spool_path);
    return FC_OK;
}

/* spool_open opens OUTPUT.<job>.part (continuing it on --resume; the job id keeps another job's
 * spool out) or, without --output, a temp file. The spool holds the job's results: it is created
 * readable by its owner only (0600, whatever the umask), and one left by an older version is made so. */
static int spool_open(collector *c, const producer *p) {
    if (!p->cfg->output) {
        c->spool = tmpfile();
        return c->spool ? FC_OK : FC_EIO;
    }
    size_t n = strlen(p->cfg->output) + strlen(p->st.job_id) + 7;
    if (!(c->spool_path = malloc(n))) return FC_ENOMEM;
    snprintf(c->spool_path, n, "%s.%s.part", p->cfg->output, p->st.job_id);
    int fd = open(c->spool_path, O_RDWR | O_CREAT | O_CLOEXEC | (p->cfg->resume ? 0 : O_TRUNC), S_IRUSR | S_IWUSR);
    struct stat st;
    if (fd < 0) return FC_EIO;
    if (fstat(fd, &st) != 0 || ((st.st_mode & (S_IRWXG | S_IRWXO)) && fchmod(fd, S_IRUSR | S_IWUSR) != 0) ||
        !(c->spool = fdopen(fd, "w+"))) {
        close(fd);
        return FC_EIO;
    }
    return p->cfg->resume ? spool_load(c) : FC_OK;
}

/* spool_sync makes the spooled results durable, then acks their messages. */
static int spool_sync(collector *c) {
    if (!c->unsynced) return FC_OK;
    /* ferror too: a failed implicit flush drops the buffer, and the next fflush may then succeed */
    errno = 0;
    if (fflush(c->spool) != 0 || ferror(c->spool) || (c->spool_path && fsync(fileno(c->spool)) != 0))
        return spool_failed(c);
    c->unsynced = 0;
    return fc_amqp_ack_upto(c->p->amqp, c->last_tag);
}

/* on_result spools a results message's items. Once one cannot be spooled (c->error), that delivery
 * and every later one stay unacked (acks go up to c->last_tag) and come again to the next run. */
static void on_result(void *ud, const fc_delivery *d) {
    collector *c = ud;
    if (c->error) return;
    c->last_delivery = mono_s();
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        c->error = FC_ENOMEM;
        return;
    }
    json_object *root = d->len <= INT32_MAX ? json_tokener_parse_ex(tok, d->body, (int)d->len) : NULL;
    json_object *items;
    if (root && json_object_object_get_ex(root, "items", &items) && json_object_is_type(items, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(items) && !c->error; i++)
            c->error = spool_item(c, json_object_array_get_idx(items, i));
    } else {
        c->bad_message++;
        fc_warn("ignoring an unreadable results message '%s'", d->message_id);
    }
    json_object_put(root);
    json_tokener_free(tok);
    if (c->error) return;
    c->last_tag = d->tag;
    c->unsynced = 1; /* acked after the next sync, duplicates and unreadable messages too */
}

static long hash_len(producer *p, const char *key) {
    fc_reply r;
    long n = -1;
    if (fc_redis_cmd(p->redis, &r, "HLEN %s", key) == FC_OK && r.type == FC_REPLY_INT) n = (long)r.integer;
    fc_reply_free(&r);
    return n;
}

static void load_stats(producer *p) {
    fc_reply r;
    if (fc_redis_cmd(p->redis, &r, "HGETALL %s", p->key[FC_JOB_STATS]) == FC_OK && r.type == FC_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < r.nelem; i += 2) {
            long v = atol(r.elem[i + 1].str ? r.elem[i + 1].str : "0");
            const char *k = r.elem[i].str ? r.elem[i].str : "";
            if (!strcmp(k, "api_calls")) p->st.api_calls = v;
            else if (!strcmp(k, "prompt_tokens")) p->st.prompt_tokens = v;
            else if (!strcmp(k, "completion_tokens")) p->st.completion_tokens = v;
            else if (!strcmp(k, "cache_hits")) p->st.cache_hits = v;
        }
    }
    fc_reply_free(&r);
}

static void progress(producer *p, collector *c, long done, long failed, int final) {
    static double last;
    double now = mono_s(), el = now - p->t0;
    int tty = isatty(STDERR_FILENO);
    if (!final && now - last < (tty ? PROGRESS_TTY_S : PROGRESS_LOG_S)) return;
    last = now;
    double rate = el > 0 ? (double)done / el : 0;
    long left = p->st.items_total - done;
    char line[256];
    snprintf(line, sizeof(line), "job %s: %ld published, %ld done (%ld ok, %ld failed), %.1f items/s, ETA %s%.0f s",
             p->st.job_id, p->st.items_total, done, (long)c->n, failed, rate, rate > 0 ? "" : "? ",
             rate > 0 ? (double)left / rate : 0.0);
    if (tty) fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    else fprintf(stderr, "%s\n", line);
}

static int cmp_pos(const void *a, const void *b) {
    long long x = ((const spooled *)a)->position, y = ((const spooled *)b)->position;
    return x < y ? -1 : x > y;
}

/* write_item writes the spooled item at offset to out, as it is (JSON Lines) or as TSV rows.
 * Returns 0, FC_EIO (the spool cannot be read back) or FC_ENOMEM. */
static int write_item(collector *c, FILE *out, int jsonl, long offset, char **line, size_t *cap) {
    if (fseek(c->spool, offset, SEEK_SET) != 0 || getline(line, cap, c->spool) < 0)
        return errno == ENOMEM ? FC_ENOMEM : FC_EIO;
    int rc = fc_output_item(out, jsonl, *line);
    return rc == FC_EPARSE ? FC_EIO : rc; /* spooled whole, so unreadable is a damaged spool */
}

/* write_output writes every spooled result to path, ordered by position, and syncs it. Returns 0, or
 * FC_EIO / FC_ENOMEM (said on stderr): then the spool and the results queue must stay. */
static int write_output(collector *c, const char *path) {
    int jsonl = fc_output_is_jsonl(path);
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "flashcard-producer: --output: cannot write '%s': %m\n", path);
        return FC_EIO;
    }
    fc_output_begin(out, jsonl);
    if (c->n) qsort(c->v, c->n, sizeof(*c->v), cmp_pos); /* c->v is NULL when no result came */
    char *line = NULL;
    size_t cap = 0, i;
    int rc = FC_OK;
    for (i = 0; i < c->n && rc == FC_OK; i++) rc = write_item(c, out, jsonl, c->v[i].offset, &line, &cap);
    free(line);
    if (rc != FC_OK) /* i counts from 1 here */
        fprintf(stderr, "flashcard-producer: --output: cannot read result %zu of %zu back from the spool: %s\n", i,
                c->n, fc_strerror(rc));
    /* on disk before the spool and the results queue go */
    if (rc == FC_OK) rc = fflush(out) == 0 && !ferror(out) && fsync(fileno(out)) == 0 ? FC_OK : FC_EIO;
    if (fclose(out) != 0) rc = FC_EIO;
    if (rc == FC_OK) fprintf(stderr, "flashcard-producer: wrote %zu items to %s\n", c->n, path);
    else fprintf(stderr, "flashcard-producer: --output: '%s' is incomplete\n", path);
    return rc;
}

static int consume_results(producer *p, collector *c) {
    char queue[FC_NAME_MAX];
    fc_topology_results_queue(queue, p->cfg->queue_prefix, p->st.job_id);
    c->last_tag = 0;
    c->unsynced = 0; /* anything spooled but not acked comes again and is deduplicated */
    return fc_amqp_consume(p->amqp, queue, 0);
}

/* reconnect sits out a broker outage while waiting: it connects again (to the next broker of a
 * list first) until it consumes the results queue again, for at most BROKER_OUTAGE_S or until the
 * wait's deadline (0 = none). A node's restart takes about 15 s, a cluster fails over at once. */
static int reconnect(producer *p, collector *c, double deadline) {
    double give_up = mono_s() + BROKER_OUTAGE_S;
    if (deadline && deadline < give_up) give_up = deadline;
    for (int round = 1;; round++) {
        if (producer_connect(p) == FC_OK && consume_results(p, c) == FC_OK) {
            fc_info("connected to the broker again; still waiting");
            return FC_OK;
        }
        if (mono_s() >= give_up) return FC_ECONN;
        fc_warn("broker still unreachable (%s); trying again (round %d, up to %.0f s more)",
                fc_amqp_errstr(p->amqp), round, give_up - mono_s());
        usleep(1000000);
    }
}

/* results_drained says whether results are still missing although the results queue has been
 * found empty DRAINED_CHECKS times in a row and nothing came for DRAINED_QUIET_S: an earlier run
 * acked them and its spool is gone. (Ready messages exclude those already pushed to this
 * consumer, hence the quiet time.) */
static int results_drained(producer *p, const collector *c, int *checks) {
    char queue[FC_NAME_MAX];
    long ready = -1;
    if (mono_s() - c->last_delivery < DRAINED_QUIET_S) {
        *checks = 0;
        return 0;
    }
    fc_topology_results_queue(queue, p->cfg->queue_prefix, p->st.job_id);
    if (fc_amqp_queue_depth(p->amqp, queue, &ready, NULL) != FC_OK || ready != 0) *checks = 0;
    else ++*checks;
    return *checks >= DRAINED_CHECKS;
}

/* cancelled asks the job's record, at most once a second, whether an operator cancelled the job. */
static int cancelled(producer *p, double *checked) {
    if (mono_s() - *checked < 1.0) return 0;
    *checked = mono_s();
    fc_reply r;
    int yes = fc_redis_cmd(p->redis, &r, "HEXISTS %s cancelled_ms", p->key[FC_JOB_META]) == FC_OK &&
              r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    return yes;
}

int producer_wait(producer *p) {
    collector c = {.p = p};
    int orc = spool_open(&c, p);
    if (orc != FC_OK) {
        fprintf(stderr, "flashcard-producer: --output: cannot use the spool '%s': %s\n",
                c.spool_path ? c.spool_path : "(temp file)", orc == FC_EIO ? strerror(errno) : fc_strerror(orc));
        free(c.spool_path);
        if (c.spool) fclose(c.spool);
        return EXIT_INCOMPLETE;
    }
    if (consume_results(p, &c) != FC_OK) {
        fprintf(stderr, "flashcard-producer: cannot consume the results queue: %s\n", fc_amqp_errstr(p->amqp));
        fclose(c.spool);
        free(c.spool_path);
        return EXIT_INFRA;
    }
    fc_amqp_handler h = {on_result, NULL, NULL, &c};
    c.last_delivery = mono_s();
    double deadline = p->cfg->wait_timeout_ms ? mono_s() + p->cfg->wait_timeout_ms / 1000.0 : 0;
    long done = 0, failed = 0;
    int rc = EXIT_DONE, reconnects = 0, drained = 0, lost_results = 0;
    double redis_lost = 0, connected_at = mono_s(), checked_cancel = 0;
    for (;;) {
        int prc = fc_amqp_poll(p->amqp, 200, &h);
        if (prc == FC_OK && spool_sync(&c) != FC_OK) {
            if (fc_amqp_ok(p->amqp)) {
                fprintf(stderr, "flashcard-producer: --output: cannot write the spool '%s': %s\n",
                        c.spool_path ? c.spool_path : "(temp file)", strerror(c.write_errno));
                rc = EXIT_INCOMPLETE;
                break;
            }
            prc = FC_ECONN;
        }
        if (c.error) {
            fprintf(stderr, "flashcard-producer: cannot spool a result: %s; it stays in the results queue\n",
                    c.error == FC_EIO ? strerror(c.write_errno) : fc_strerror(c.error));
            rc = EXIT_INCOMPLETE;
            break;
        }
        if (prc != FC_OK) {
            /* Unacked results go back to the queue and come again; positions deduplicate them. */
            fc_warn("lost the broker while waiting (%s); reconnecting", fc_amqp_errstr(p->amqp));
            if (mono_s() - connected_at > RECONNECT_RESET_S) reconnects = 0;
            if (++reconnects > WAIT_RECONNECTS || reconnect(p, &c, deadline) != FC_OK) {
                fprintf(stderr, "flashcard-producer: lost the broker while waiting: %s\n", fc_amqp_errstr(p->amqp));
                rc = EXIT_INFRA;
                break;
            }
            connected_at = mono_s();
            continue;
        }
        long d = hash_len(p, p->key[FC_JOB_OUTCOME]), f = hash_len(p, p->key[FC_JOB_FAILED]);
        if (d < 0 || f < 0) {
            if (redis_lost == 0) {
                fc_warn("Redis unavailable while waiting (%s); retrying", fc_redis_errstr(p->redis));
                redis_lost = mono_s();
            }
            if (mono_s() - redis_lost < REDIS_OUTAGE_S) continue;
            fprintf(stderr, "flashcard-producer: lost Redis while waiting: %s\n", fc_redis_errstr(p->redis));
            rc = EXIT_INFRA;
            break;
        }
        redis_lost = 0;
        done = d;
        failed = f;
        progress(p, &c, done, failed, 0);
        if (cancelled(p, &checked_cancel)) {
            fprintf(stderr, "flashcard-producer: job %s was cancelled (flashcard-admin cancel): %ld of %ld items have "
                            "an outcome; the workers record the rest as failed (cancelled)\n",
                    p->st.job_id, done, p->st.items_total);
            p->st.cancelled = 1;
            rc = EXIT_INCOMPLETE;
            break;
        }
        if (done >= p->st.items_total && (long)c.n >= done - failed) break;
        if (done >= p->st.items_total && results_drained(p, &c, &drained)) {
            lost_results = (int)(done - failed - (long)c.n);
            rc = EXIT_INCOMPLETE;
            break;
        }
        if (deadline && mono_s() > deadline) {
            fprintf(stderr, "flashcard-producer: --timeout: %ld of %ld items have an outcome\n", done, p->st.items_total);
            p->st.timed_out = 1;
            rc = EXIT_INCOMPLETE;
            break;
        }
    }
    progress(p, &c, done, failed, 1);
    if (lost_results > 0)
        fprintf(stderr, "flashcard-producer: %d succeeded items have no result here: an earlier run collected "
                        "them and its spool '%s' is gone\n", lost_results, c.spool_path ? c.spool_path : "(none)");
    p->st.succeeded = (long)c.n;
    p->st.failed = failed;
    load_stats(p);
    producer_load_spend(p);
    if (p->st.items_budget > 0)
        fprintf(stderr, "flashcard-producer: the job's budget stopped %ld items (spent %lld tokens, $%.4f); to go on, "
                        "run again with --job-id %s --resume and a larger --budget-usd or --budget-tokens\n",
                p->st.items_budget, p->st.spent_tokens, (double)p->st.spent_uusd / 1e6, p->st.job_id);
    /* Every outcome known and every result spooled. A job the budget stopped is not complete: its spool and
     * results queue stay for the --resume with a larger budget, which collects the rest beside them. */
    int stopped = p->st.items_budget > 0;
    int complete = rc == EXIT_DONE && !stopped;
    int written = !p->cfg->output || write_output(&c, p->cfg->output) == FC_OK;
    if (!written) rc = EXIT_INCOMPLETE;
    if (rc == EXIT_DONE && failed > 0) rc = EXIT_INCOMPLETE;
    if (complete && written && fc_amqp_ok(p->amqp)) {
        char queue[FC_NAME_MAX];
        fc_topology_results_queue(queue, p->cfg->queue_prefix, p->st.job_id);
        fc_amqp_delete_queue(p->amqp, queue);
    }
    fclose(c.spool);
    /* A cancelled job's results so far are its output: nothing more will come to wait for. */
    if (c.spool_path && (complete || p->st.cancelled) && written) unlink(c.spool_path);
    if (p->st.cancelled && c.spool_path)
        fprintf(stderr, "flashcard-producer: the %zu results collected are in %s\n", c.n,
                written ? p->cfg->output : c.spool_path);
    if ((!complete || !written) && !lost_results && !p->st.cancelled && !stopped) {
        fprintf(stderr, "flashcard-producer: to go on waiting, run again with --job-id %s --resume --wait", p->st.job_id);
        if (c.spool_path) fprintf(stderr, " --output %s (%zu results collected so far are in %s)", p->cfg->output, c.n,
                                  c.spool_path);
        fputc('\n', stderr);
    }
    free(c.spool_path);
    free(c.v);
    free(c.seen.slot);
    return rc;
}

/* report_failed writes the job's failed items as a JSON array; 0, or FC_EREDIS (said on stderr) when
 * they cannot be read: then it writes null, not an empty list. */
static int report_failed(producer *p, FILE *f) {
    fc_reply r;
    int rc = fc_redis_cmd(p->redis, &r, "HVALS %s", p->key[FC_JOB_FAILED]);
    if (rc != FC_OK || r.type != FC_REPLY_ARRAY) {
        fprintf(stderr, "flashcard-producer: --report: cannot read the failed items: %s\n",
                rc != FC_OK ? fc_redis_errstr(p->redis) : "not a hash");
        fputs("null", f);
        fc_reply_free(&r);
        return FC_EREDIS;
    }
    fputs("[", f);
    for (size_t i = 0; i < r.nelem; i++) fprintf(f, "%s\n    %s", i ? "," : "", r.elem[i].str ? r.elem[i].str : "null");
    fputs("]", f);
    fc_reply_free(&r);
    return FC_OK;
}

/* add_member adds v to o under key, taking v even on failure; 0, or -1 when out of memory (o or v NULL included). */
static int add_member(json_object *o, const char *key, json_object *v) {
    if (o && v && json_object_object_add(o, key, v) == 0) return 0;
    json_object_put(v);
    return -1;
}

/* rejected_json returns the rejected rows kept as a JSON array (caller puts it), or NULL when out of memory. */
static json_object *rejected_json(const job_stats *s) {
    json_object *rej = json_object_new_array();
    for (size_t i = 0; rej && i < s->nbad; i++) {
        json_object *o = json_object_new_object();
        int ok = add_member(o, "line", json_object_new_int64(s->bad[i].line)) == 0 &&
                 add_member(o, "reason", json_object_new_string(s->bad[i].reason)) == 0 &&
                 json_object_array_add(rej, o) == 0;
        if (!ok) {
            json_object_put(o);
            json_object_put(rej);
            rej = NULL;
        }
    }
    return rej;
}

/* producer_write_report writes the report to path (created like any file: 0666 less the umask).
 * Returns 0, or FC_EIO / FC_ENOMEM / FC_EREDIS, said on stderr. */
int producer_write_report(producer *p, const char *path) {
    const job_stats *s = &p->st;
    json_object *rej = rejected_json(s);
    const char *rejected =
        rej ? json_object_to_json_string_ext(rej, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
    if (!rejected) {
        fprintf(stderr, "flashcard-producer: --report: out of memory\n");
        json_object_put(rej);
        return FC_ENOMEM;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "flashcard-producer: --report: cannot write '%s': %m\n", path);
        json_object_put(rej);
        return FC_EIO;
    }
    fprintf(f, "{\n  \"job_id\": \"%s\",\n  \"rows_read\": %ld,\n  \"rows_rejected\": %ld,\n  \"rejected\": %s,\n",
            s->job_id, s->rows_read, s->rows_rejected, rejected);
    json_object_put(rej);
    fprintf(f, "  \"items_published\": %ld,\n  \"batches_published\": %ld,\n  \"batches_skipped\": %ld,\n"
               "  \"items_total\": %ld,\n",
            s->items_published, s->batches_published, s->batches_skipped, s->items_total);
    int rc = FC_OK;
    if (p->cfg->wait) {
        fprintf(f, "  \"items_succeeded\": %ld,\n  \"items_failed\": %ld,\n  \"failed\": ", s->succeeded, s->failed);
        rc = report_failed(p, f);
        fprintf(f, ",\n  \"api_calls\": %ld,\n  \"cache_hits\": %ld,\n  \"prompt_tokens\": %ld,\n"
                   "  \"completion_tokens\": %ld,\n  \"cost_estimate\": %.6f,\n  \"timed_out\": %s,\n"
                   "  \"cancelled\": %s,\n",
                s->api_calls, s->cache_hits, s->prompt_tokens, s->completion_tokens,
                (s->prompt_tokens * p->cfg->price_input + s->completion_tokens * p->cfg->price_output) / 1e6,
                s->timed_out ? "true" : "false", s->cancelled ? "true" : "false");
        producer_report_spend(p, f);
    }
    fprintf(f, "  \"elapsed_seconds\": %.3f\n}\n", s->elapsed_s);
    /* ferror too: a write that failed in an implicit flush is not reported by fclose */
    int io = fflush(f) != 0 || ferror(f);
    if (fclose(f) != 0 || io) {
        fprintf(stderr, "flashcard-producer: --report: cannot write '%s': %s\n", path, strerror(errno));
        rc = FC_EIO;
    }
    return rc;
}
