/* `status`: the queues of the prefix, the live workers (their registrations), each API's rate limit
 * (configured and adapted), usage and breaker, and every job not finished with its priority, its share
 * of the fleet's calls and its budget. Reads only: it writes nothing to Redis or the broker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_topology.h"

#define JOBS_MAX 1000     /* newest jobs looked at */
#define WORKERS_MAX 1000  /* live registrations read */
#define APIS_MAX 16

typedef struct status {
    admin *ad;
    admin_queue_row *queues;
    size_t nqueues;
    int queues_from_mgmt;
    json_object *workers;  /* array of registrations */
    json_object *apis;     /* array */
    admin_job_view *jobs;  /* the unfinished jobs, newest first */
    size_t njobs, jobs_cap;
} status;

/* ---- queues ---- */

/* passive_row asks the broker for one queue's ready messages and consumers (a passive declare). */
static int passive_row(status *s, const char *name) {
    long ready = 0, consumers = 0;
    int rc = fc_amqp_queue_depth(s->ad->amqp, name, &ready, &consumers);
    if (rc == FC_ENOTFOUND) return FC_OK;
    if (rc != FC_OK) return rc;
    admin_queue_row *r = &s->queues[s->nqueues++];
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->ready = ready;
    r->unacked = -1;
    r->consumers = consumers;
    return FC_OK;
}

/* passive_queues reads the fixed queues of the topology, and the results queues of the unfinished jobs. */
static int passive_queues(status *s) {
    size_t njobs = s->njobs;
    const fc_config *c = s->ad->cfg;
    static const char *const fixed[] = {"batches", "crashed", "dead", "results.unrouted"};
    char name[FC_NAME_MAX + 40];
    s->queues = calloc(4 + (size_t)c->nretry_delays + njobs, sizeof(*s->queues));
    if (!s->queues) return FC_ENOMEM;
    int rc = FC_OK;
    for (int i = 0; rc == FC_OK && i < 4; i++) {
        fc_topology_name(name, c->queue_prefix, fixed[i]);
        rc = passive_row(s, name);
    }
    for (int i = 0; rc == FC_OK && i < c->nretry_delays; i++) {
        char key[32];
        fc_topology_delay_key(key, sizeof(key), c->retry_delays[i]);
        snprintf(name, sizeof(name), "%s.retry.%s", c->queue_prefix, key);
        rc = passive_row(s, name);
    }
    for (size_t i = 0; rc == FC_OK && i < njobs; i++) {
        fc_topology_results_queue(name, c->queue_prefix, s->jobs[i].id);
        rc = passive_row(s, name);
    }
    return rc;
}

/* fill_new_queues asks the broker for the figures the management API has not collected yet (a queue
 * younger than its statistics interval): ready messages and consumers; unacked stays unknown. */
static int fill_new_queues(status *s) {
    for (size_t i = 0; i < s->nqueues; i++) {
        admin_queue_row *r = &s->queues[i];
        if (r->ready >= 0 && r->consumers >= 0) continue;
        int rc = fc_amqp_queue_depth(s->ad->amqp, r->name, &r->ready, &r->consumers);
        if (rc != FC_OK && rc != FC_ENOTFOUND) return rc;
    }
    return FC_OK;
}

/* read_queues asks the management API, and falls back to passive declares, saying so in one line. */
static int read_queues(status *s) {
    char why[400];
    if (admin_mgmt_queues(s->ad->cfg, &s->queues, &s->nqueues, why, sizeof(why)) == FC_OK) {
        s->queues_from_mgmt = 1;
        return fill_new_queues(s);
    }
    free(s->queues);
    s->queues = NULL;
    s->nqueues = 0;
    admin_say("management API not usable (%s); queue figures from the broker itself: fixed queues only, "
              "unacked unknown", why);
    return passive_queues(s);
}

static json_object *opt_num(long v) { return v < 0 ? NULL : json_object_new_int64(v); }

static json_object *queues_json(const status *s) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < s->nqueues; i++) {
        json_object *o = json_object_new_object();
        admin_json_add(o, "name", json_object_new_string(s->queues[i].name));
        admin_json_add(o, "ready", opt_num(s->queues[i].ready));
        admin_json_add(o, "unacked", opt_num(s->queues[i].unacked));
        admin_json_add(o, "consumers", opt_num(s->queues[i].consumers));
        json_object_array_add(arr, o);
    }
    return arr;
}

/* ---- workers ---- */

/* read_workers reads the live registrations: members of P:workers whose score (expiry) is in the future
 * and whose key still exists. */
static int read_workers(status *s) {
    char key[FC_KEY_MAX], min[32];
    const char *prefix = s->ad->cfg->queue_prefix;
    fc_key_workers(key, sizeof(key), prefix);
    snprintf(min, sizeof(min), "(%lld", (long long)admin_now_ms());
    fc_reply ids = {0};
    s->workers = json_object_new_array();
    int rc = fc_redis_cmd(s->ad->redis, &ids, "ZRANGEBYSCORE %s %s +inf LIMIT 0 %d", key, min, WORKERS_MAX);
    for (size_t i = 0; rc == FC_OK && ids.type == FC_REPLY_ARRAY && i < ids.nelem; i++) {
        char wkey[FC_KEY_MAX];
        fc_reply r = {0};
        if (!admin_reply_str(&ids.elem[i]) || fc_key_worker(wkey, sizeof(wkey), prefix, ids.elem[i].str) != FC_OK) continue;
        rc = fc_redis_cmd(s->ad->redis, &r, "GET %s", wkey);
        json_object *o = rc == FC_OK && admin_reply_str(&r) ? json_tokener_parse(r.str) : NULL;
        if (json_object_is_type(o, json_type_object)) json_object_array_add(s->workers, o);
        else json_object_put(o);
        fc_reply_free(&r);
    }
    fc_reply_free(&ids);
    return rc;
}

static double wnum(json_object *o, const char *key, double dflt) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) return dflt;
    if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
        return json_object_get_double(v);
    return dflt;
}

/* ---- APIs: rate limit, usage, breaker ---- */

/* api_entry returns the entry of api in s->apis, adding it if new (NULL beyond APIS_MAX). */
static json_object *api_entry(status *s, const char *api) {
    for (size_t i = 0; i < json_object_array_length(s->apis); i++) {
        json_object *a = json_object_array_get_idx(s->apis, i);
        if (strcmp(admin_json_str(a, "api"), api) == 0) return a;
    }
    if (json_object_array_length(s->apis) >= APIS_MAX) return NULL;
    json_object *a = json_object_new_object();
    admin_json_add(a, "api", json_object_new_string(api));
    admin_json_add(a, "rate_limit_per_s", NULL);
    admin_json_add(a, "rate_adapted_per_s", NULL); /* null when no worker adapts it */
    admin_json_add(a, "rate_usage", NULL);
    admin_json_add(a, "workers", json_object_new_int(0));
    admin_json_add(a, "breaker", json_object_new_string("closed"));
    admin_json_add(a, "breaker_open_ms_left", NULL);
    json_object_array_add(s->apis, a);
    return a;
}

/* take_max sets a's key to v if a's value is null or smaller. */
static void take_max(json_object *a, const char *key, double v) {
    if (v < 0 || wnum(a, key, -1) >= v) return;
    admin_json_add(a, key, json_object_new_double(v));
}

/* fold_worker adds one registration to its API's figures: the limit, the adapted rate and the usage are
 * the fleet's (every worker reads the same bucket), so the largest reported is shown. */
static void fold_worker(status *s, json_object *w) {
    const char *api = admin_json_str(w, "api");
    json_object *a = api_entry(s, api ? api : "?");
    if (!a) return;
    admin_json_add(a, "workers", json_object_new_int((int)wnum(a, "workers", 0) + 1));
    take_max(a, "rate_limit_per_s", wnum(w, "rate_limit_per_s", -1));
    take_max(a, "rate_adapted_per_s", wnum(w, "rate_adapted_per_s", -1));
    take_max(a, "rate_usage", wnum(w, "rate_usage", -1));
    const char *b = admin_json_str(w, "breaker");
    if (b && strcmp(b, "closed") && strcmp(admin_json_str(a, "breaker"), "open"))
        admin_json_add(a, "breaker", json_object_new_string(b));
}

/* read_apis gathers the APIs the workers name and asks Redis whether each fleet breaker is open. */
static int read_apis(status *s) {
    s->apis = json_object_new_array();
    for (size_t i = 0; i < json_object_array_length(s->workers); i++)
        fold_worker(s, json_object_array_get_idx(s->workers, i));
    int rc = FC_OK;
    for (size_t i = 0; rc == FC_OK && i < json_object_array_length(s->apis); i++) {
        json_object *a = json_object_array_get_idx(s->apis, i);
        char key[FC_KEY_MAX];
        fc_reply r = {0};
        if (fc_key_breaker(key, sizeof(key), s->ad->cfg->queue_prefix, admin_json_str(a, "api")) != FC_OK) continue;
        rc = fc_redis_cmd(s->ad->redis, &r, "PTTL %s", key);
        if (rc == FC_OK && r.type == FC_REPLY_INT && r.integer != -2) {
            admin_json_add(a, "breaker", json_object_new_string("open"));
            admin_json_add(a, "breaker_open_ms_left", r.integer >= 0 ? json_object_new_int64(r.integer) : NULL);
        }
        fc_reply_free(&r);
    }
    return rc;
}

/* ---- jobs ---- */

/* read_jobs reads every job of P:jobs whose record still exists and keeps those not finished; what the
 * fleet does is read once for all of them. */
static int read_jobs(status *s, char **ids, size_t n) {
    admin_fleet fleet;
    int rc = admin_fleet_read(s->ad, &fleet);
    for (size_t i = 0; rc == FC_OK && i < n; i++) {
        admin_job_view j;
        rc = admin_job_read(s->ad, ids[i], &fleet, &j);
        if (rc != FC_OK || !j.exists || admin_job_finished(&j)) continue;
        rc = admin_grow((void **)&s->jobs, s->njobs, &s->jobs_cap, sizeof(*s->jobs));
        if (rc == FC_OK) s->jobs[s->njobs++] = j;
    }
    return rc;
}

static json_object *jobs_json(const status *s) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < s->njobs; i++) json_object_array_add(arr, admin_job_json(&s->jobs[i]));
    return arr;
}

/* ---- output ---- */

static void cell_long(char *out, size_t n, long v) {
    if (v < 0) snprintf(out, n, "?");
    else snprintf(out, n, "%ld", v);
}

static void print_queues(const status *s) {
    static const char *const head[] = {"QUEUE", "READY", "UNACKED", "CONSUMERS"};
    admin_table *t = admin_table_new(4, head);
    for (int c = 1; c < 4; c++) admin_table_right(t, c);
    for (size_t i = 0; i < s->nqueues; i++) {
        char r[24], u[24], c[24];
        cell_long(r, sizeof(r), s->queues[i].ready);
        cell_long(u, sizeof(u), s->queues[i].unacked);
        cell_long(c, sizeof(c), s->queues[i].consumers);
        const char *row[] = {s->queues[i].name, r, u, c};
        admin_table_row(t, row);
    }
    printf("Queues (%s)\n", s->queues_from_mgmt ? "management API" : "broker: passive declares, unacked unknown");
    admin_table_print(t);
    admin_table_free(t);
}

static void print_worker(admin_table *t, json_object *w) {
    char inflight[48], done[48], pid[24];
    const char *err = admin_json_str(w, "last_error"), *nr = admin_json_str(w, "not_ready");
    json_object *ready;
    int is_ready = json_object_object_get_ex(w, "ready", &ready) && json_object_get_boolean(ready);
    snprintf(pid, sizeof(pid), "%.0f", wnum(w, "pid", 0));
    snprintf(inflight, sizeof(inflight), "%.0f/%.0f", wnum(w, "inflight", 0), wnum(w, "capacity", 0));
    snprintf(done, sizeof(done), "%.0f ok, %.0f dead", wnum(w, "items_ok", 0), wnum(w, "items_dead", 0));
    const char *row[] = {admin_json_str(w, "id"), admin_json_str(w, "host"), pid, admin_json_str(w, "version"), admin_json_str(w, "started"), inflight,
                         done, err && *err ? err : "-", is_ready ? "yes" : nr && *nr ? nr : "no"};
    admin_table_row(t, row);
}

static void print_workers(const status *s) {
    static const char *const head[] = {"WORKER", "HOST", "PID", "VERSION", "STARTED", "IN FLIGHT", "ITEMS",
                                       "LAST ERROR", "READY"};
    admin_table *t = admin_table_new(9, head);
    admin_table_max_width(t, 7, 50);
    admin_table_max_width(t, 8, 40);
    admin_table_right(t, 2);
    for (size_t i = 0; i < json_object_array_length(s->workers); i++)
        print_worker(t, json_object_array_get_idx(s->workers, i));
    printf("\nWorkers (%zu live)\n", json_object_array_length(s->workers));
    if (admin_table_rows(t)) admin_table_print(t);
    admin_table_free(t);
}

/* rate_cell writes a rate in calls/s, none for 0 (no limit), unknown (?) or absent (-) when negative. */
static void rate_cell(char *out, size_t n, double v, const char *absent) {
    if (v > 0) snprintf(out, n, "%.2f calls/s", v);
    else snprintf(out, n, "%s", v == 0 ? "none" : absent);
}

static void print_apis(const status *s) {
    static const char *const head[] = {"API", "WORKERS", "RATE LIMIT", "ADAPTED", "USAGE", "BREAKER"};
    admin_table *t = admin_table_new(6, head);
    for (size_t i = 0; i < json_object_array_length(s->apis); i++) {
        json_object *a = json_object_array_get_idx(s->apis, i);
        char workers[16], limit[48], adapted[48], usage[16], breaker[64];
        double use = wnum(a, "rate_usage", -1), left = wnum(a, "breaker_open_ms_left", -1);
        snprintf(workers, sizeof(workers), "%.0f", wnum(a, "workers", 0));
        rate_cell(limit, sizeof(limit), wnum(a, "rate_limit_per_s", -1), "?");
        rate_cell(adapted, sizeof(adapted), wnum(a, "rate_adapted_per_s", -1), "-");
        if (use >= 0) snprintf(usage, sizeof(usage), "%.0f%%", use * 100);
        else snprintf(usage, sizeof(usage), "?");
        if (left >= 0) snprintf(breaker, sizeof(breaker), "open (%.1f s left)", left / 1000);
        else snprintf(breaker, sizeof(breaker), "%s", admin_json_str(a, "breaker"));
        const char *row[] = {admin_json_str(a, "api"), workers, limit, adapted, usage, breaker};
        admin_table_row(t, row);
    }
    printf("\nRate limits and breakers\n");
    if (admin_table_rows(t)) admin_table_print(t);
    else printf("(no live worker reports one)\n");
    admin_table_free(t);
}

static void print_job_row(admin_table *t, const admin_job_view *j) {
    char published[48], done[32], ok[24], failed[24], retry[24], rate[24], eta[24], prio[16], share[48], budget[128];
    double r = admin_job_rate(j), e = admin_job_eta(j);
    if (j->items >= 0) snprintf(published, sizeof(published), "%ld", j->items);
    else snprintf(published, sizeof(published), "%ld batches...", j->batches_published);
    snprintf(done, sizeof(done), "%ld", j->done);
    snprintf(ok, sizeof(ok), "%ld", j->done - j->failed);
    snprintf(failed, sizeof(failed), "%ld", j->failed);
    snprintf(retry, sizeof(retry), "%ld", j->in_retry);
    if (r > 0) snprintf(rate, sizeof(rate), "%.1f/s", r);
    else snprintf(rate, sizeof(rate), "-");
    if (e >= 0) snprintf(eta, sizeof(eta), "%.0f s", e);
    else snprintf(eta, sizeof(eta), "-");
    snprintf(prio, sizeof(prio), "%d", j->priority);
    admin_job_share_text(j, share, sizeof(share));
    admin_job_budget_text(j, budget, sizeof(budget));
    const char *row[] = {j->id, admin_job_state(j), published, done, ok, failed, retry, rate, eta, prio, share, budget};
    admin_table_row(t, row);
}

static void print_jobs(const status *s) {
    static const char *const head[] = {"JOB",      "STATE", "PUBLISHED", "DONE", "OK",    "FAILED",
                                       "IN RETRY", "RATE",  "ETA",       "PRIO", "SHARE", "BUDGET"};
    admin_table *t = admin_table_new(12, head);
    for (int c = 2; c < 11; c++) admin_table_right(t, c);
    for (size_t i = 0; i < s->njobs; i++) print_job_row(t, &s->jobs[i]);
    printf("\nJobs not finished (%zu)\n", s->njobs);
    if (admin_table_rows(t)) admin_table_print(t);
    admin_table_free(t);
}

static int print_status(status *s) {
    if (s->ad->cfg->json) {
        json_object *o = json_object_new_object();
        admin_json_add(o, "queue_prefix", json_object_new_string(s->ad->cfg->queue_prefix));
        admin_json_add(o, "queues_source", json_object_new_string(s->queues_from_mgmt ? "management" : "broker"));
        admin_json_add(o, "queues", queues_json(s));
        admin_json_add(o, "workers", json_object_get(s->workers));
        admin_json_add(o, "apis", json_object_get(s->apis));
        admin_json_add(o, "jobs", jobs_json(s));
        return admin_print_json(o) == FC_OK ? ADMIN_OK : ADMIN_NOTHING;
    }
    print_queues(s);
    print_workers(s);
    print_apis(s);
    print_jobs(s);
    return ADMIN_OK;
}

/* gather reads everything; 0 or an exit code (after one line). */
static int gather(status *s) {
    char **ids = NULL;
    size_t nids = 0;
    int rc = admin_job_ids(s->ad, JOBS_MAX, &ids, &nids);
    if (rc == FC_OK) rc = read_workers(s);
    if (rc == FC_OK) rc = read_apis(s);
    if (rc == FC_OK) rc = read_jobs(s, ids, nids);
    int exit_code = rc == FC_OK ? ADMIN_OK : admin_redis_lost(s->ad);
    if (exit_code == ADMIN_OK && read_queues(s) != FC_OK) {
        admin_say("lost the broker: %s", fc_amqp_errstr(s->ad->amqp));
        exit_code = ADMIN_INFRA;
    }
    for (size_t i = 0; i < nids; i++) free(ids[i]);
    free(ids);
    return exit_code;
}

int admin_status(admin *ad) {
    status s = {ad, NULL, 0, 0, NULL, NULL, NULL, 0, 0};
    int rc = admin_connect_broker(ad);
    if (rc == ADMIN_OK) rc = admin_connect_redis(ad);
    if (rc == ADMIN_OK) rc = gather(&s);
    if (rc == ADMIN_OK) rc = print_status(&s);
    free(s.queues);
    json_object_put(s.workers);
    json_object_put(s.apis);
    free(s.jobs);
    return rc;
}
