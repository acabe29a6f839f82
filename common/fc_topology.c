/* The broker topology: names, arguments and declarations. Every queue is a quorum queue, so each
 * survives the loss of a cluster node (a classic queue lives on one node: while that node is down,
 * declaring it elsewhere fails with 404 and messages routed only to it are dropped). */
#include "fc_topology.h"

#include <stdio.h>
#include <string.h>

#include "fc_error.h"
#include "fc_log.h"

#define RESULTS_QUEUE_EXPIRES_MS (7LL * 86400 * 1000)
#define JOB_QUEUE_EXPIRES_MS (7LL * 86400 * 1000)
/* Redeliveries of a batch in P.crashed (settling one makes no API call): a constant, so that
 * changing DELIVERY_LIMIT leaves that queue's arguments alone. */
#define CRASHED_DELIVERY_LIMIT 5

void fc_topology_name(char *out, const char *prefix, const char *suffix) {
    snprintf(out, FC_NAME_MAX, "%s.%s", prefix, suffix);
}

void fc_topology_delay_key(char *out, size_t outlen, long ms) {
    if (ms % 60000 == 0) snprintf(out, outlen, "%ldm", ms / 60000);
    else if (ms % 1000 == 0) snprintf(out, outlen, "%lds", ms / 1000);
    else snprintf(out, outlen, "%ldms", ms);
}

void fc_topology_job_queue(char *out, const char *prefix, const char *job_id) {
    snprintf(out, FC_NAME_MAX, "%s.job.%s", prefix, job_id);
}

void fc_topology_results_queue(char *out, const char *prefix, const char *job_id) {
    snprintf(out, FC_NAME_MAX, "%s.results.%s", prefix, job_id);
}

/* Declarations a user may not make (least privilege: the operator loaded the topology as broker
 * definitions) are checked instead: the object must exist; its bindings are the operator's. */
typedef struct declarer {
    fc_amqp *a;
    int checked; /* objects checked, not declared */
} declarer;

static int exchange(declarer *d, const char *name, const char *type, const fc_amqp_field *args, size_t n) {
    int rc = fc_amqp_declare_exchange(d->a, name, type, args, n);
    if (rc != FC_EACCESS) return rc;
    rc = fc_amqp_exchange_exists(d->a, name);
    if (rc == FC_OK) d->checked++;
    if (rc == FC_ENOTFOUND)
        fc_error("exchange %s does not exist, and this broker user may not declare it (configure permission)", name);
    return rc == FC_ENOTFOUND ? FC_EACCESS : rc;
}

/* queue declares name with args and binds it to exchange with key. */
static int queue(declarer *d, const char *name, const fc_amqp_field *args, size_t n, const char *exchange,
                 const char *key) {
    int rc = fc_amqp_declare_queue(d->a, name, args, n);
    if (rc == FC_EACCESS) {
        rc = fc_amqp_queue_depth(d->a, name, NULL, NULL);
        if (rc == FC_OK) d->checked++;
        if (rc == FC_ENOTFOUND)
            fc_error("queue %s does not exist, and this broker user may not declare it (configure permission)", name);
        return rc == FC_ENOTFOUND ? FC_EACCESS : rc;
    }
    if (rc == FC_OK) rc = fc_amqp_bind(d->a, name, exchange, key);
    return rc == FC_EACCESS ? FC_OK : rc;
}

/* work_queue declares a quorum work queue bound to exchange with key: redelivered more than
 * delivery_limit times, a message is dead-lettered (at least once) to dlx; expires_ms > 0 deletes it
 * after that long without a consumer. */
static int work_queue(declarer *d, const char *name, long delivery_limit, const char *dlx, const char *exchange,
                      const char *key, long long expires_ms) {
    fc_amqp_field args[] = {
        {"x-queue-type", "quorum", 0, 0},
        {"x-delivery-limit", NULL, delivery_limit, 1},
        {"x-dead-letter-exchange", dlx, 0, 0},
        {"x-dead-letter-strategy", "at-least-once", 0, 0},
        {"x-overflow", "reject-publish", 0, 0},
        {"x-expires", NULL, expires_ms, 1},
    };
    return queue(d, name, args, expires_ms > 0 ? 6 : 5, exchange, key);
}

/* declare_work_queue declares a work queue with a fanout exchange of its own name. */
static int declare_work_queue(declarer *d, const char *name, long delivery_limit, const char *dlx) {
    int rc = exchange(d, name, "fanout", NULL, 0);
    if (rc == FC_OK) rc = work_queue(d, name, delivery_limit, dlx, name, "", 0);
    return rc;
}

/* declare_work declares the work queue and, behind it, the queue of batches it dead-letters
 * after DELIVERY_LIMIT redeliveries: workers consume both and record those batches' items as
 * failed before they rest in P.dead (a batch only lands in P.dead unrecorded if it also crashes
 * the workers DELIVERY_LIMIT times there). */
static int declare_work(declarer *d, const fc_topology *t) {
    char batches[FC_NAME_MAX], crashed[FC_NAME_MAX], dead[FC_NAME_MAX];
    fc_topology_name(batches, t->prefix, "batches");
    fc_topology_name(crashed, t->prefix, "crashed");
    fc_topology_name(dead, t->prefix, "dead");
    int rc = exchange(d, dead, "fanout", NULL, 0);
    if (rc == FC_OK) rc = declare_work_queue(d, crashed, CRASHED_DELIVERY_LIMIT, dead);
    if (rc == FC_OK) rc = declare_work_queue(d, batches, t->delivery_limit, crashed);
    char jobs[FC_NAME_MAX];
    fc_topology_name(jobs, t->prefix, "jobs");
    if (rc == FC_OK) rc = exchange(d, jobs, "direct", NULL, 0);
    return rc;
}

/* declare_retry declares one delay queue per RETRY_DELAYS entry: a message waits there for its
 * delay, then is dead-lettered (at least once) back to the work queue. */
static int declare_retry(declarer *d, const fc_topology *t) {
    char retry[FC_NAME_MAX], batches[FC_NAME_MAX];
    fc_topology_name(retry, t->prefix, "retry");
    fc_topology_name(batches, t->prefix, "batches");
    int rc = exchange(d, retry, "direct", NULL, 0);
    for (int i = 0; rc == FC_OK && i < t->ndelays; i++) {
        char key[32], name[FC_NAME_MAX + 40];
        fc_topology_delay_key(key, sizeof(key), t->delays_ms[i]);
        snprintf(name, sizeof(name), "%s.%s", retry, key);
        fc_amqp_field args[] = {
            {"x-queue-type", "quorum", 0, 0},
            {"x-message-ttl", NULL, t->delays_ms[i], 1},
            {"x-dead-letter-exchange", batches, 0, 0},
            {"x-dead-letter-strategy", "at-least-once", 0, 0},
            {"x-overflow", "reject-publish", 0, 0},
        };
        rc = queue(d, name, args, 5, retry, key);
    }
    return rc;
}

static int declare_outputs(declarer *d, const fc_topology *t) {
    char dead[FC_NAME_MAX], results[FC_NAME_MAX], unrouted[FC_NAME_MAX];
    fc_topology_name(dead, t->prefix, "dead");
    fc_topology_name(results, t->prefix, "results");
    fc_topology_name(unrouted, t->prefix, "results.unrouted");
    fc_amqp_field quorum[] = {{"x-queue-type", "quorum", 0, 0}};
    fc_amqp_field results_args[] = {{"alternate-exchange", unrouted, 0, 0}};
    int rc = exchange(d, dead, "fanout", NULL, 0);
    if (rc == FC_OK) rc = queue(d, dead, quorum, 1, dead, "");
    if (rc == FC_OK) rc = exchange(d, unrouted, "fanout", NULL, 0);
    if (rc == FC_OK) rc = queue(d, unrouted, quorum, 1, unrouted, "");
    if (rc == FC_OK) rc = exchange(d, results, "direct", results_args, 1);
    return rc;
}

/* explain adds what a refused declaration usually means to the connection's error. */
static int explain(declarer *d, int rc) {
    if (rc == FC_EBROKER && strstr(fc_amqp_errstr(d->a), "PRECONDITION_FAILED"))
        fc_error("%s: a queue of this QUEUE_PREFIX exists with other arguments (an older version's classic queue, "
                 "or another DELIVERY_LIMIT / RETRY_DELAYS); see the README's upgrade notes",
                 fc_amqp_errstr(d->a));
    return rc;
}

int fc_topology_declare(fc_amqp *a, const fc_topology *t) {
    declarer d = {a, 0};
    int rc = declare_work(&d, t);
    if (rc == FC_OK) rc = declare_retry(&d, t);
    if (rc == FC_OK) rc = declare_outputs(&d, t);
    if (rc == FC_OK && d.checked)
        fc_info("topology: this broker user may not declare; %d exchanges and queues checked to exist (broker "
                "definitions manage them, and their arguments, such as DELIVERY_LIMIT, are the definitions')",
                d.checked);
    return explain(&d, rc);
}

int fc_topology_declare_job(fc_amqp *a, const fc_topology *t, const char *job_id) {
    char name[FC_NAME_MAX], jobs[FC_NAME_MAX], crashed[FC_NAME_MAX];
    fc_topology_job_queue(name, t->prefix, job_id);
    fc_topology_name(jobs, t->prefix, "jobs");
    fc_topology_name(crashed, t->prefix, "crashed");
    declarer d = {a, 0};
    int rc = work_queue(&d, name, t->delivery_limit, crashed, jobs, job_id, JOB_QUEUE_EXPIRES_MS);
    return explain(&d, rc);
}

int fc_topology_declare_results(fc_amqp *a, const char *prefix, const char *job_id) {
    char name[FC_NAME_MAX], results[FC_NAME_MAX];
    fc_topology_results_queue(name, prefix, job_id);
    fc_topology_name(results, prefix, "results");
    fc_amqp_field args[] = {{"x-queue-type", "quorum", 0, 0}, {"x-expires", NULL, RESULTS_QUEUE_EXPIRES_MS, 1}};
    declarer d = {a, 0};
    return explain(&d, queue(&d, name, args, 2, results, job_id));
}
