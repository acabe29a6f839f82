/* The broker topology: every exchange and queue name, its arguments, and its declaration.
 * Both binaries declare it with identical arguments, so either may start first. */
#ifndef FC_TOPOLOGY_H
#define FC_TOPOLOGY_H

#include <stddef.h>

#include "fc_amqp.h"

typedef struct fc_topology {
    const char *prefix;       /* QUEUE_PREFIX */
    const long *delays_ms;    /* RETRY_DELAYS */
    int ndelays;
    int delivery_limit;       /* x-delivery-limit of the work queue */
} fc_topology;

#define FC_NAME_MAX 160

/* fc_topology_name writes "<prefix>.<suffix>" into out (FC_NAME_MAX bytes). */
void fc_topology_name(char *out, const char *prefix, const char *suffix);

/* fc_topology_delay_key writes the routing key of the retry queue for delay_ms ("5s", "2m", "1500ms"). */
void fc_topology_delay_key(char *out, size_t outlen, long delay_ms);

/* fc_topology_results_queue writes "<prefix>.results.<job_id>". */
void fc_topology_results_queue(char *out, const char *prefix, const char *job_id);

/* fc_topology_job_queue writes "<prefix>.job.<job_id>", the job's own work queue. */
void fc_topology_job_queue(char *out, const char *prefix, const char *job_id);

/* fc_topology_declare declares every exchange, queue and binding; 0 or an fc_amqp error. */
int fc_topology_declare(fc_amqp *a, const fc_topology *t);

/* fc_topology_declare_results declares the job's results queue, bound to <prefix>.results with
 * the job id as routing key; it expires after 7 idle days. */
int fc_topology_declare_results(fc_amqp *a, const char *prefix, const char *job_id);

/* fc_topology_declare_job declares the job's own work queue, bound to <prefix>.jobs with the job id as
 * routing key, with the work queue's arguments (quorum, t->delivery_limit, dead-lettered to
 * <prefix>.crashed); it expires after 7 days without a consumer. 0, FC_EACCESS (this broker user may not
 * declare it: the job then goes through the shared work queue) or an fc_amqp error. */
int fc_topology_declare_job(fc_amqp *a, const fc_topology *t, const char *job_id);

#endif
