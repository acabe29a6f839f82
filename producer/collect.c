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
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_error.h"
#include "fc_log.h"
#include "fc_topology.h"
#include "producer.h"

#define PROGRESS_TTY_S 0.5
#define WAIT_RECONNECTS 10  /* broker connections lost while waiting before giving up */
#define REDIS_OUTAGE_S 60.0 /* longest Redis outage --wait sits out */
#define PROGRESS_LOG_S 5.0
#define RECONNECT_RESET_S 300.0 /* connected this long, lost connections are forgiven */
#define DRAINED_CHECKS 5       /* checks that find the results queue empty before results are called lost, */
#define DRAINED_QUIET_S 3.0    /* with no delivery for this long */

typedef struct spooled {
    long long position;
    long offset;   /* of the item's JSON line in the spool */
} spooled;

typedef struct collector {
    producer *p;
    FILE *spool;
    char *spool_path;      /* OUTPUT.<job>.part, or NULL for an anonymous temp file */
    int unsynced;          /* results spooled since the last ack */
    double last_delivery;  /* mono_s() of the last results message */
    spooled *v;
    size_t n, cap;
    unsigned char *seen;   /* bitmap by position */
    size_t seen_len;
    uint64_t last_tag;
    int bad_message;
} collector;

static int seen_test_set(collector *c, long long pos) {
    size_t byte = (size_t)(pos / 8);
    if (byte >= c->seen_len) {
        size_t len = byte * 2 + 64;
        unsigned char *s = realloc(c->seen, len);
        if (!s) return -1;
        memset(s + c->seen_len, 0, len - c->seen_len);
        c->seen = s;
        c->seen_len = len;
    }
    int was = (c->seen[byte] >> (pos % 8)) & 1;
    c->seen[byte] |= (unsigned char)(1 << (pos % 8));
    return was;
}

/* note_item records that the item at offset of the spool has position; 0, or -1 when it is a
 * duplicate (or out of memory). */
static int note_item(collector *c, long long position, long offset) {
    if (position < 1 || seen_test_set(c, position) != 0) return -1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        spooled *v = realloc(c->v, cap * sizeof(*v));
        if (!v) return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n].position = position;
    c->v[c->n].offset = offset;
    c->n++;
    return 0;
}

static long long position_of(json_object *item) {
    json_object *pos;
    return json_object_object_get_ex(item, "position", &pos) ? json_object_get_int64(pos) : 0;
}

static void spool_item(collector *c, json_object *item) {
    if (note_item(c, position_of(item), ftell(c->spool)) != 0) return; /* duplicate delivery */
    fputs(json_object_to_json_string_ext(item, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), c->spool);
    fputc('\n', c->spool);
}

/* spool_load reads the results an earlier run spooled; a last line cut short by a crash is
 * dropped (its message was not acked, so it comes again). Returns 0 or FC_EIO. */
static int spool_load(collector *c) {
    char *line = NULL;
    size_t cap = 0;
    long offset = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, c->spool)) > 0 && line[len - 1] == '\n') {
        json_object *item = json_tokener_parse(line);
        note_item(c, position_of(item), offset);
        json_object_put(item);
        offset += (long)len;
    }
    free(line);
    if (fflush(c->spool) != 0 || ftruncate(fileno(c->spool), offset) != 0 || fseek(c->spool, offset, SEEK_SET) != 0)
        return FC_EIO;
    if (c->n) fc_info("job %s: %zu results already collected in %s", c->p->st.job_id, c->n, c->spool_path);
    return FC_OK;
}

/* spool_open opens OUTPUT.<job>.part (continuing it on --resume; the job id keeps another job's
 * spool out) or, without --output, a temp file. */
static int spool_open(collector *c, const producer *p) {
    if (!p->cfg->output) {
        c->spool = tmpfile();
        return c->spool ? FC_OK : FC_EIO;
    }
    size_t n = strlen(p->cfg->output) + strlen(p->st.job_id) + 7;
    if (!(c->spool_path = malloc(n))) return FC_ENOMEM;
    snprintf(c->spool_path, n, "%s.%s.part", p->cfg->output, p->st.job_id);
    c->spool = p->cfg->resume ? fopen(c->spool_path, "r+") : NULL;
    if (c->spool) return spool_load(c);
    c->spool = fopen(c->spool_path, "w+");
    return c->spool ? FC_OK : FC_EIO;
}

/* spool_sync makes the spooled results durable, then acks their messages. */
static int spool_sync(collector *c) {
    if (!c->unsynced) return FC_OK;
    /* ferror too: a failed implicit flush drops the buffer, and the next fflush may then succeed */
    if (fflush(c->spool) != 0 || ferror(c->spool) || (c->spool_path && fsync(fileno(c->spool)) != 0)) return FC_EIO;
    c->unsynced = 0;
    return fc_amqp_ack_upto(c->p->amqp, c->last_tag);
}

static void on_result(void *ud, const fc_delivery *d) {
    collector *c = ud;
    c->last_tag = d->tag;
    c->unsynced = 1; /* acked after the next sync, duplicates and unreadable messages too */
    c->last_delivery = mono_s();
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, d->body, (int)d->len);
    json_object *items;
    if (root && json_object_object_get_ex(root, "items", &items) && json_object_is_type(items, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(items); i++) spool_item(c, json_object_array_get_idx(items, i));
    } else {
        c->bad_message++;
        fc_warn("ignoring an unreadable results message '%s'", d->message_id);
    }
    json_object_put(root);
    json_tokener_free(tok);
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
    if (fc_redis_cmd(p->redis, &r, "HGETALL %s", p->key_stats) == FC_OK && r.type == FC_REPLY_ARRAY) {
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

/* tsv_field writes s with tabs and newlines escaped as \t and \n. */
static void tsv_field(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '\t') fputs("\\t", out);
        else if (*s == '\n') fputs("\\n", out);
        else if (*s != '\r') fputc(*s, out);
    }
}

static const char *str_of(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) return "";
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : json_object_to_json_string(v);
}

static void write_tsv_item(FILE *out, json_object *item) {
    static const char *f[] = {"term_number", "tab_name", "primer", "front", "back", "tags", "honorific_level"};
    json_object *cards;
    if (!json_object_object_get_ex(item, "cards", &cards)) return;
    for (size_t i = 0; i < json_object_array_length(cards); i++) {
        json_object *card = json_object_array_get_idx(cards, i);
        tsv_field(out, str_of(item, "position"));
        fputc('\t', out);
        tsv_field(out, str_of(item, "term"));
        for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
            fputc('\t', out);
            tsv_field(out, str_of(card, f[k]));
        }
        fputc('\n', out);
    }
}

static int write_output(collector *c, const char *path) {
    size_t plen = strlen(path);
    int jsonl = plen > 6 && strcmp(path + plen - 6, ".jsonl") == 0;
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "flashcard-producer: --output: cannot write '%s': %m\n", path);
        return FC_EIO;
    }
    if (!jsonl) fputs("position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level\n", out);
    qsort(c->v, c->n, sizeof(*c->v), cmp_pos);
    char *line = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < c->n; i++) {
        fseek(c->spool, c->v[i].offset, SEEK_SET);
        if (getline(&line, &cap, c->spool) < 0) break;
        if (jsonl) {
            fputs(line, out);
            continue;
        }
        json_object *item = json_tokener_parse(line);
        if (item) write_tsv_item(out, item);
        json_object_put(item);
    }
    free(line);
    /* on disk before the spool and the results queue go */
    int rc = fflush(out) == 0 && !ferror(out) && fsync(fileno(out)) == 0 ? FC_OK : FC_EIO;
    if (fclose(out) != 0) rc = FC_EIO;
    if (rc == FC_OK) fprintf(stderr, "flashcard-producer: wrote %zu items to %s\n", c->n, path);
    return rc;
}

static int consume_results(producer *p, collector *c) {
    char queue[FC_NAME_MAX];
    fc_topology_results_queue(queue, p->cfg->queue_prefix, p->st.job_id);
    c->last_tag = 0;
    c->unsynced = 0; /* anything spooled but not acked comes again and is deduplicated */
    return fc_amqp_consume(p->amqp, queue, 0);
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

int producer_wait(producer *p) {
    collector c = {.p = p};
    if (spool_open(&c, p) != FC_OK) {
        fprintf(stderr, "flashcard-producer: --output: cannot use the spool '%s': %s\n",
                c.spool_path ? c.spool_path : "(temp file)", strerror(errno));
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
    double redis_lost = 0, connected_at = mono_s();
    for (;;) {
        int prc = fc_amqp_poll(p->amqp, 200, &h);
        if (prc == FC_OK && spool_sync(&c) != FC_OK) {
            if (fc_amqp_ok(p->amqp)) {
                fprintf(stderr, "flashcard-producer: --output: cannot write the spool '%s': %s\n",
                        c.spool_path ? c.spool_path : "(temp file)", strerror(errno));
                rc = EXIT_INCOMPLETE;
                break;
            }
            prc = FC_ECONN;
        }
        if (prc != FC_OK) {
            /* Unacked results go back to the queue and come again; positions deduplicate them. */
            fc_warn("lost the broker while waiting (%s); reconnecting", fc_amqp_errstr(p->amqp));
            if (mono_s() - connected_at > RECONNECT_RESET_S) reconnects = 0;
            if (++reconnects > WAIT_RECONNECTS || producer_connect(p) != FC_OK || consume_results(p, &c) != FC_OK) {
                fprintf(stderr, "flashcard-producer: lost the broker while waiting: %s\n", fc_amqp_errstr(p->amqp));
                rc = EXIT_INFRA;
                break;
            }
            connected_at = mono_s();
            continue;
        }
        long d = hash_len(p, p->key_outcome), f = hash_len(p, p->key_failed);
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
    int complete = rc == EXIT_DONE; /* every outcome known and every result spooled */
    int written = !p->cfg->output || write_output(&c, p->cfg->output) == FC_OK;
    if (!written) rc = EXIT_INCOMPLETE;
    if (rc == EXIT_DONE && failed > 0) rc = EXIT_INCOMPLETE;
    if (complete && written && fc_amqp_ok(p->amqp)) {
        char queue[FC_NAME_MAX];
        fc_topology_results_queue(queue, p->cfg->queue_prefix, p->st.job_id);
        fc_amqp_delete_queue(p->amqp, queue);
    }
    fclose(c.spool);
    if (c.spool_path && complete && written) unlink(c.spool_path);
    if ((!complete || !written) && !lost_results) {
        fprintf(stderr, "flashcard-producer: to go on waiting, run again with --job-id %s --resume --wait", p->st.job_id);
        if (c.spool_path) fprintf(stderr, " --output %s (%zu results collected so far are in %s)", p->cfg->output, c.n,
                                  c.spool_path);
        fputc('\n', stderr);
    }
    free(c.spool_path);
    free(c.v);
    free(c.seen);
    return rc;
}

static void report_failed(producer *p, FILE *f) {
    fc_reply r;
    fputs("[", f);
    if (fc_redis_cmd(p->redis, &r, "HVALS %s", p->key_failed) == FC_OK && r.type == FC_REPLY_ARRAY)
        for (size_t i = 0; i < r.nelem; i++) fprintf(f, "%s\n    %s", i ? "," : "", r.elem[i].str ? r.elem[i].str : "null");
    fputs("]", f);
    fc_reply_free(&r);
}

int producer_write_report(producer *p, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "flashcard-producer: --report: cannot write '%s': %m\n", path);
        return FC_EIO;
    }
    const job_stats *s = &p->st;
    json_object *rej = json_object_new_array();
    for (size_t i = 0; i < s->nbad; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "line", json_object_new_int64(s->bad[i].line));
        json_object_object_add(o, "reason", json_object_new_string(s->bad[i].reason));
        json_object_array_add(rej, o);
    }
    fprintf(f, "{\n  \"job_id\": \"%s\",\n  \"rows_read\": %ld,\n  \"rows_rejected\": %ld,\n  \"rejected\": %s,\n",
            s->job_id, s->rows_read, s->rows_rejected,
            json_object_to_json_string_ext(rej, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(rej);
    fprintf(f, "  \"items_published\": %ld,\n  \"batches_published\": %ld,\n  \"batches_skipped\": %ld,\n"
               "  \"items_total\": %ld,\n",
            s->items_published, s->batches_published, s->batches_skipped, s->items_total);
    if (p->cfg->wait) {
        fprintf(f, "  \"items_succeeded\": %ld,\n  \"items_failed\": %ld,\n  \"failed\": ", s->succeeded, s->failed);
        report_failed(p, f);
        fprintf(f, ",\n  \"api_calls\": %ld,\n  \"cache_hits\": %ld,\n  \"prompt_tokens\": %ld,\n"
                   "  \"completion_tokens\": %ld,\n  \"cost_estimate\": %.6f,\n  \"timed_out\": %s,\n",
                s->api_calls, s->cache_hits, s->prompt_tokens, s->completion_tokens,
                (s->prompt_tokens * p->cfg->price_input + s->completion_tokens * p->cfg->price_output) / 1e6,
                s->timed_out ? "true" : "false");
    }
    fprintf(f, "  \"elapsed_seconds\": %.3f\n}\n", s->elapsed_s);
    return fclose(f) == 0 ? FC_OK : FC_EIO;
}
