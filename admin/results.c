/* `results JOB_ID --output FILE`: the late results of a job whose producer no longer waits (items
 * replayed after it finished). They wait in P.results.<job> (replay declares it again) or, when that
 * queue was gone, in P.results.unrouted. Both are read (at most what they held when the command began),
 * the job's results deduplicated by position and written to FILE, a new file, in the producer's output
 * format; only once FILE is synced are their messages acked. Everything else returns to its queue. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_output.h"
#include "fc_topology.h"

#define IDLE_S 3.0
#define PREFETCH_MAX 65535

typedef struct result {
    long long position;
    char *json;   /* the item, compact JSON */
} result;

struct collect;

/* One queue read on a connection of its own, so that its deliveries' tags are its own: the job's queue
 * holds only the job's results and is acked with one multiple ack. */
typedef struct source {
    struct collect *c;
    fc_amqp *a;
    const char *queue;
    int shared;           /* other jobs' results pass by (P.results.unrouted): ack the job's one by one */
    long expected, seen;
    uint64_t *tags;       /* the job's deliveries: acked once FILE is synced */
    size_t ntags, captags;
} source;

typedef struct collect {
    admin *ad;
    const char *job;
    char queue[FC_NAME_MAX], unrouted[FC_NAME_MAX];
    source src[2];        /* the job's results queue, P.results.unrouted */
    double last;
    result *v;
    size_t n, cap;
    long unreadable;
    int nomem;
} collect;

static int grow(void **v, size_t n, size_t *cap, size_t sz) {
    if (n < *cap) return FC_OK;
    size_t c = *cap ? *cap * 2 : 64;
    void *p = realloc(*v, c * sz);
    if (!p) return FC_ENOMEM;
    *v = p;
    *cap = c;
    return FC_OK;
}

/* keep_items adds the items of a results message. */
static void keep_items(collect *c, json_object *items) {
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        json_object *it = json_object_array_get_idx(items, i), *pos;
        if (!json_object_object_get_ex(it, "position", &pos) || json_object_get_int64(pos) < 1) continue;
        const char *s = json_object_to_json_string_ext(it, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        char *copy = s ? strdup(s) : NULL;
        if (!copy || grow((void **)&c->v, c->n, &c->cap, sizeof(*c->v)) != FC_OK) {
            free(copy);
            c->nomem = 1;
            return;
        }
        c->v[c->n].position = json_object_get_int64(pos);
        c->v[c->n++].json = copy;
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
    if (c->nomem || src->seen >= src->expected) return;
    src->seen++;
    c->last = mono_s();
    json_tokener *tok = json_tokener_new();
    json_object *root = tok && d->len < INT32_MAX ? json_tokener_parse_ex(tok, d->body, (int)d->len) : NULL, *items;
    int ours = !src->shared || strcmp(d->routing_key, c->job) == 0 || (root && strcmp(job_of_body(root), c->job) == 0);
    if (ours) {
        if (root && json_object_object_get_ex(root, "items", &items) && json_object_is_type(items, json_type_array))
            keep_items(c, items);
        else
            c->unreadable++;
        if (!c->nomem && grow((void **)&src->tags, src->ntags, &src->captags, sizeof(*src->tags)) == FC_OK)
            src->tags[src->ntags++] = d->tag;
        else
            c->nomem = 1;
    }
    json_object_put(root);
    if (tok) json_tokener_free(tok);
}

static int by_position(const void *a, const void *b) {
    long long x = ((const result *)a)->position, y = ((const result *)b)->position;
    return x < y ? -1 : x > y;
}

/* write_file writes the results, ordered by position and each position once, to a new file, and syncs
 * it. Returns the number written, or -1 (said). */
static long write_file(collect *c, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        admin_say("--output: cannot create '%s': %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    int jsonl = fc_output_is_jsonl(path), rc = fc_output_begin(out, jsonl);
    long written = 0;
    qsort(c->v, c->n, sizeof(*c->v), by_position);
    for (size_t i = 0; rc == FC_OK && i < c->n; i++) {
        if (i && c->v[i].position == c->v[i - 1].position) continue;
        rc = fc_output_item(out, jsonl, c->v[i].json);
        written++;
    }
    if (rc == FC_OK) rc = fflush(out) == 0 && !ferror(out) && fsync(fileno(out)) == 0 ? FC_OK : FC_EIO;
    if (fclose(out) != 0) rc = FC_EIO;
    if (rc != FC_OK) {
        admin_say("--output: cannot write '%s': %s; it is removed and the results stay queued", path,
                  rc == FC_EIO ? strerror(errno) : fc_strerror(rc));
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
    rc = fc_amqp_queue_depth(src->a, src->queue, &src->expected, consumers);
    if (rc == FC_ENOTFOUND) src->expected = 0;
    else if (rc != FC_OK) {
        admin_say("the broker failed: %s", fc_amqp_errstr(src->a));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

/* read_source consumes src's queue until what it held is read, or nothing came for IDLE_S. */
static int read_source(collect *c, source *src) {
    if (src->expected == 0) return ADMIN_OK;
    int rc = fc_amqp_consume(src->a, src->queue, src->expected <= PREFETCH_MAX ? (int)src->expected : 0);
    fc_amqp_handler h = {on_result, NULL, NULL, src};
    c->last = mono_s();
    while (rc == FC_OK && src->seen < src->expected && !c->nomem && mono_s() - c->last < IDLE_S)
        rc = fc_amqp_poll(src->a, 200, &h);
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
        json_add(o, "job_id", json_object_new_string(c->job));
        json_add(o, "output", json_object_new_string(path));
        json_add(o, "items", json_object_new_int64(written));
        json_add(o, "messages", json_object_new_int64((long)(c->src[0].ntags + c->src[1].ntags)));
        json_add(o, "unreadable_messages", json_object_new_int64(c->unreadable));
        return print_json(o) == FC_OK ? ADMIN_OK : ADMIN_NOTHING;
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
    c.src[0] = (source){&c, NULL, c.queue, 0, 0, 0, NULL, 0, 0};
    c.src[1] = (source){&c, NULL, c.unrouted, 1, 0, 0, NULL, 0, 0};
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
