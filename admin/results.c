/* `results JOB_ID --output FILE`: the late results of a job whose producer no longer waits (items
 * replayed after it finished). They wait in P.results.<job> (replay declares it again) or, when that
 * queue was gone, in P.results.unrouted. Both are read (at most what they held when the command began),
 * the job's results deduplicated by position (the first to arrive kept) and written to FILE, a new file,
 * in the producer's output format; only once FILE and its directory are synced are their messages
 * acked. Everything else returns to its queue. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_output.h"
#include "fc_topology.h"

typedef struct result {
    long long position;
    size_t arrival; /* its order of arrival: of two results for one position, the first is kept */
    char *json;     /* the item, compact JSON */
} result;

struct collect;

/* One queue read on a connection of its own, so that its deliveries' tags are its own: the job's queue
 * holds only the job's results and is acked with one multiple ack. */
typedef struct source {
    struct collect *c;
    fc_amqp *a;
    const char *queue;
    int shared;           /* other jobs' results pass by (P.results.unrouted): ack the job's one by one */
    admin_reader rd;      /* what it held when the command began */
    uint64_t *tags;       /* the job's deliveries: acked once FILE is synced */
    size_t ntags, captags;
} source;

typedef struct collect {
    admin *ad;
    const char *job;
    char queue[FC_NAME_MAX], unrouted[FC_NAME_MAX];
    source src[2];        /* the job's results queue, P.results.unrouted */
    result *v;
    size_t n, cap;
    long unreadable;
    int nomem;
} collect;

/* keep_items adds the items of a results message. */
static void keep_items(collect *c, json_object *items) {
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        json_object *it = json_object_array_get_idx(items, i), *pos;
        if (!json_object_object_get_ex(it, "position", &pos) || json_object_get_int64(pos) < 1) continue;
        const char *s = json_object_to_json_string_ext(it, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        char *copy = s ? strdup(s) : NULL;
        if (!copy || admin_grow((void **)&c->v, c->n, &c->cap, sizeof(*c->v)) != FC_OK) {
            free(copy);
            c->nomem = 1;
            return;
        }
        c->v[c->n] = (result){json_object_get_int64(pos), c->n, copy};
        c->n++;
    }
}

/* job_of_body returns the job id member of a results message, or "". */
static const char *job_of_body(json_object *root) {
    json_object *v;
    if (!json_object_object_get_ex(root, "job_id", &v) || !json_object_is_type(v, json_type_string)) return "";
    return json_object_get_string(v);
}

static void on_result(void *ud, const fc_delivery *d) {
    source *src = ud;
    collect *c = src->c;
    if (c->nomem || !admin_reader_take(&src->rd)) return;
    json_tokener *tok = json_tokener_new();
    json_object *root = tok && d->len < INT32_MAX ? json_tokener_parse_ex(tok, d->body, (int)d->len) : NULL, *items;
    int ours = !src->shared || strcmp(d->routing_key, c->job) == 0 || (root && strcmp(job_of_body(root), c->job) == 0);
    if (ours) {
        if (root && json_object_object_get_ex(root, "items", &items) && json_object_is_type(items, json_type_array))
            keep_items(c, items);
        else
            c->unreadable++;
        if (!c->nomem && admin_grow((void **)&src->tags, src->ntags, &src->captags, sizeof(*src->tags)) == FC_OK)
            src->tags[src->ntags++] = d->tag;
        else
            c->nomem = 1;
    }
    json_object_put(root);
    if (tok) json_tokener_free(tok);
}

/* by_arrival_in_position orders results by position, and by arrival within one. */
static int by_arrival_in_position(const void *a, const void *b) {
    const result *x = a, *y = b;
    int c = admin_cmp_ll(x->position, y->position);
    return c ? c : admin_cmp_ll((long long)x->arrival, (long long)y->arrival);
}

/* sync_dir syncs the directory holding path, so the new file's entry survives a crash: 0 or an errno. */
static int sync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = fd < 0 ? errno : 0;
    if (fd >= 0 && fsync(fd) != 0) err = errno;
    if (fd >= 0) close(fd);
    free(copy);
    return err;
}

/* write_items writes the results, ordered by position and each position once (the first to arrive),
 * and syncs the file: 0 with the number written in *written, or an fc error with *sys the errno of the
 * write or sync that failed (0 for an item that is not JSON). */
static int write_items(collect *c, FILE *out, int jsonl, long *written, int *sys) {
    int rc = fc_output_begin(out, jsonl);
    if (rc != FC_OK) *sys = errno;
    qsort(c->v, c->n, sizeof(*c->v), by_arrival_in_position);
    for (size_t i = 0; rc == FC_OK && i < c->n; i++) {
        if (i && c->v[i].position == c->v[i - 1].position) continue;
        rc = fc_output_item(out, jsonl, c->v[i].json);
        if (rc == FC_EIO) *sys = errno;
        (*written)++;
    }
    if (rc == FC_OK && (fflush(out) != 0 || ferror(out))) *sys = errno, rc = FC_EIO;
    if (rc == FC_OK && fsync(fileno(out)) != 0) *sys = errno, rc = FC_EIO;
    return rc;
}

/* write_file writes the results to a new file, syncs it and its directory. Returns the number written,
 * or -1 (said; the file is removed). */
static long write_file(collect *c, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666), sys = fd < 0 ? errno : 0;
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        if (!sys) sys = errno;
        admin_say("--output: cannot create '%s': %s", path, strerror(sys));
        if (fd >= 0) close(fd);
        return -1;
    }
    long written = 0;
    int rc = write_items(c, out, fc_output_is_jsonl(path), &written, &sys);
    if (fclose(out) != 0 && rc == FC_OK) sys = errno, rc = FC_EIO;
    if (rc == FC_OK && (sys = sync_dir(path)) != 0) rc = FC_EIO;
    if (rc != FC_OK) {
        admin_say("--output: cannot write '%s': %s; it is removed and the results stay queued", path,
                  sys ? strerror(sys) : fc_strerror(rc));
        unlink(path);
        return -1;
    }
    return written;
}

/* open_source connects src's connection and reads how many messages its queue holds (0 when absent). */
static int open_source(collect *c, source *src, long *consumers) {
    *consumers = 0;
    int rc = admin_connect_amqp(c->ad, &src->a);
    if (rc != ADMIN_OK) return rc;
    rc = fc_amqp_queue_depth(src->a, src->queue, &src->rd.expected, consumers);
    if (rc == FC_ENOTFOUND) src->rd.expected = 0;
    else if (rc != FC_OK) {
        admin_say("the broker failed: %s", fc_amqp_errstr(src->a));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

/* read_source consumes src's queue until what it held is read, or nothing came for ADMIN_IDLE_S. */
static int read_source(collect *c, source *src) {
    if (src->rd.expected == 0) return ADMIN_OK;
    int rc = admin_reader_start(&src->rd, src->a, src->queue);
    fc_amqp_handler h = {on_result, NULL, NULL, src};
    while (rc == FC_OK && !admin_reader_done(&src->rd) && !c->nomem) rc = fc_amqp_poll(src->a, 200, &h);
    if (rc != FC_OK) admin_say("the broker failed: %s", fc_amqp_errstr(src->a));
    return rc == FC_OK ? ADMIN_OK : ADMIN_INFRA;
}

/* gather reads the job's results queue and P.results.unrouted, each on its own connection. */
static int gather(collect *c) {
    long consumers, unused;
    int rc = open_source(c, &c->src[0], &consumers);
    if (rc == ADMIN_OK && consumers > 0) {
        admin_say("a producer is waiting for job %s (%ld consumers of %s): it collects the results itself", c->job,
                  consumers, c->queue);
        return ADMIN_NOTHING;
    }
    if (rc == ADMIN_OK) rc = open_source(c, &c->src[1], &unused);
    for (int i = 0; rc == ADMIN_OK && i < 2; i++) rc = read_source(c, &c->src[i]);
    if (rc == ADMIN_OK && c->nomem) {
        admin_say("out of memory collecting results; nothing was removed");
        rc = ADMIN_NOTHING;
    }
    return rc;
}

/* ack_all acks the job's deliveries: those of its own queue with one multiple ack, those passing by
 * P.results.unrouted one by one; then gives the broker time to apply them before closing. */
static int ack_all(collect *c) {
    int rc = FC_OK;
    for (int i = 0; rc == FC_OK && i < 2; i++) {
        source *src = &c->src[i];
        if (!src->ntags) continue;
        if (!src->shared) rc = fc_amqp_ack_upto(src->a, src->tags[src->ntags - 1]);
        for (size_t k = 0; src->shared && rc == FC_OK && k < src->ntags; k++) rc = fc_amqp_ack(src->a, src->tags[k]);
        if (rc == FC_OK) admin_settle_grace(src->a, src->shared ? (long)src->ntags : 1);
        if (rc != FC_OK || !fc_amqp_ok(src->a)) rc = FC_ECONN;
    }
    return rc;
}

static int report(const collect *c, const char *path, long written) {
    if (c->ad->cfg->json) {
        json_object *o = json_object_new_object();
        admin_json_add(o, "job_id", json_object_new_string(c->job));
        admin_json_add(o, "output", json_object_new_string(path));
        admin_json_add(o, "items", json_object_new_int64(written));
        admin_json_add(o, "messages", json_object_new_int64((long)(c->src[0].ntags + c->src[1].ntags)));
        admin_json_add(o, "unreadable_messages", json_object_new_int64(c->unreadable));
        return admin_print_json(o) == FC_OK ? ADMIN_OK : ADMIN_NOTHING;
    }
    printf("wrote %ld results of job %s to %s (from %zu messages, now removed from the queues)\n", written, c->job,
           path, c->src[0].ntags + c->src[1].ntags);
    if (c->unreadable) printf("%ld unreadable results messages were removed too\n", c->unreadable);
    return ADMIN_OK;
}

int admin_results(admin *ad, const char *job_id) {
    const char *path = ad->cfg->output;
    if (!path) {
        admin_say("results: --output FILE is required (Anki TSV, or JSON Lines if it ends in .jsonl)");
        return ADMIN_USAGE;
    }
    if (access(path, F_OK) == 0) {
        admin_say("--output: '%s' exists; results are written to a new file only", path);
        return ADMIN_USAGE;
    }
    collect c;
    memset(&c, 0, sizeof(c));
    c.ad = ad;
    c.job = job_id;
    fc_topology_results_queue(c.queue, ad->cfg->queue_prefix, job_id);
    fc_topology_name(c.unrouted, ad->cfg->queue_prefix, "results.unrouted");
    c.src[0] = (source){&c, NULL, c.queue, 0, {0, 0, 0}, NULL, 0, 0};
    c.src[1] = (source){&c, NULL, c.unrouted, 1, {0, 0, 0}, NULL, 0, 0};
    int rc = gather(&c);
    if (rc == ADMIN_OK && c.src[0].ntags + c.src[1].ntags == 0) {
        admin_say("no results of job %s are waiting (in %s or %s)", job_id, c.queue, c.unrouted);
        rc = ADMIN_NOTHING;
    }
    long written = rc == ADMIN_OK ? write_file(&c, path) : -1;
    if (rc == ADMIN_OK && written < 0) rc = ADMIN_NOTHING;
    if (rc == ADMIN_OK && ack_all(&c) != FC_OK) {
        admin_say("%s is written, but the broker was lost before it took every ack (%s): those results come "
                  "again to the next run", path, fc_amqp_errstr(c.src[0].a));
        rc = ADMIN_INFRA;
    }
    if (rc == ADMIN_OK) rc = report(&c, path, written);
    for (size_t i = 0; i < c.n; i++) free(c.v[i].json);
    free(c.v);
    for (int i = 0; i < 2; i++) {
        if (c.src[i].a) fc_amqp_close(c.src[i].a); /* the job's deliveries not acked, and the others, return */
        fc_amqp_free(c.src[i].a);
        free(c.src[i].tags);
    }
    return rc;
}
