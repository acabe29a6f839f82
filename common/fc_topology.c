/* The broker topology: names, arguments and declarations. */
#include "fc_topology.h"

#include <stdio.h>
#include <string.h>

#include "fc_error.h"

#define RESULTS_QUEUE_EXPIRES_MS (7LL * 86400 * 1000)
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

void fc_topology_results_queue(char *out, const char *prefix, const char *job_id) {
    snprintf(out, FC_NAME_MAX, "%s.results.%s", prefix, job_id);
}

/* declare_work_queue declares a quorum work queue with its own exchange: redelivered more than
 * delivery_limit times, a message is dead-lettered (at least once) to dlx. */
static int declare_work_queue(fc_amqp *a, const char *name, long delivery_limit, const char *dlx) {
    fc_amqp_field args[] = {
        {"x-queue-type", "quorum", 0, 0},
        {"x-delivery-limit", NULL, delivery_limit, 1},
        {"x-dead-letter-exchange", dlx, 0, 0},
        {"x-dead-letter-strategy", "at-least-once", 0, 0},
        {"x-overflow", "reject-publish", 0, 0},
    };
    int rc = fc_amqp_declare_exchange(a, name, "fanout", NULL, 0);
    if (rc == FC_OK) rc = fc_amqp_declare_queue(a, name, args, 5);
    if (rc == FC_OK) rc = fc_amqp_bind(a, name, name, "");
    return rc;
}

/* declare_work declares the work queue and, behind it, the queue of batches it dead-letters
 * after DELIVERY_LIMIT redeliveries: workers consume both and record those batches' items as
 * failed before they rest in P.dead (a batch only lands in P.dead unrecorded if it also crashes
 * the workers DELIVERY_LIMIT times there). */
static int declare_work(fc_amqp *a, const fc_topology *t) {
    char batches[FC_NAME_MAX], crashed[FC_NAME_MAX], dead[FC_NAME_MAX];
    fc_topology_name(batches, t->prefix, "batches");
    fc_topology_name(crashed, t->prefix, "crashed");
    fc_topology_name(dead, t->prefix, "dead");
    int rc = fc_amqp_declare_exchange(a, dead, "fanout", NULL, 0);
    if (rc == FC_OK) rc = declare_work_queue(a, crashed, CRASHED_DELIVERY_LIMIT, dead);
    if (rc == FC_OK) rc = declare_work_queue(a, batches, t->delivery_limit, crashed);
    return rc;
}

static int declare_retry(fc_amqp *a, const fc_topology *t) {
    char retry[FC_NAME_MAX], batches[FC_NAME_MAX];
    fc_topology_name(retry, t->prefix, "retry");
    fc_topology_name(batches, t->prefix, "batches");
    int rc = fc_amqp_declare_exchange(a, retry, "direct", NULL, 0);
    for (int i = 0; rc == FC_OK && i < t->ndelays; i++) {
        char key[32], queue[FC_NAME_MAX + 40];
        fc_topology_delay_key(key, sizeof(key), t->delays_ms[i]);
        snprintf(queue, sizeof(queue), "%s.%s", retry, key);
        fc_amqp_field args[] = {
            {"x-queue-type", "classic", 0, 0},
            {"x-message-ttl", NULL, t->delays_ms[i], 1},
            {"x-dead-letter-exchange", batches, 0, 0},
        };
        rc = fc_amqp_declare_queue(a, queue, args, 3);
        if (rc == FC_OK) rc = fc_amqp_bind(a, queue, retry, key);
    }
    return rc;
}

static int declare_outputs(fc_amqp *a, const fc_topology *t) {
    char dead[FC_NAME_MAX], results[FC_NAME_MAX], unrouted[FC_NAME_MAX];
    fc_topology_name(dead, t->prefix, "dead");
    fc_topology_name(results, t->prefix, "results");
    fc_topology_name(unrouted, t->prefix, "results.unrouted");
    fc_amqp_field dead_args[] = {{"x-queue-type", "classic", 0, 0}};
    fc_amqp_field results_args[] = {{"alternate-exchange", unrouted, 0, 0}};
    int rc = fc_amqp_declare_exchange(a, dead, "fanout", NULL, 0);
    if (rc == FC_OK) rc = fc_amqp_declare_queue(a, dead, dead_args, 1);
    if (rc == FC_OK) rc = fc_amqp_bind(a, dead, dead, "");
    if (rc == FC_OK) rc = fc_amqp_declare_exchange(a, unrouted, "fanout", NULL, 0);
    if (rc == FC_OK) rc = fc_amqp_declare_queue(a, unrouted, dead_args, 1);
    if (rc == FC_OK) rc = fc_amqp_bind(a, unrouted, unrouted, "");
    if (rc == FC_OK) rc = fc_amqp_declare_exchange(a, results, "direct", results_args, 1);
    return rc;
}

int fc_topology_declare(fc_amqp *a, const fc_topology *t) {
    int rc = declare_work(a, t);
    if (rc == FC_OK) rc = declare_retry(a, t);
    if (rc == FC_OK) rc = declare_outputs(a, t);
    return rc;
}

int fc_topology_declare_results(fc_amqp *a, const char *prefix, const char *job_id) {
    char queue[FC_NAME_MAX], results[FC_NAME_MAX];
    fc_topology_results_queue(queue, prefix, job_id);
    fc_topology_name(results, prefix, "results");
    fc_amqp_field args[] = {{"x-queue-type", "classic", 0, 0}, {"x-expires", NULL, RESULTS_QUEUE_EXPIRES_MS, 1}};
    int rc = fc_amqp_declare_queue(a, queue, args, 2);
    if (rc == FC_OK) rc = fc_amqp_bind(a, queue, results, job_id);
    return rc;
}
