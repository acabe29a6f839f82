/* RabbitMQ client: the one module that speaks rabbitmq-c. One connection, one channel in
 * confirm mode, never shared between threads. Non-blocking polling for event loops, plus
 * tracking of publisher confirms (acks, nacks and returns matched to publish sequence numbers). */
#ifndef FC_AMQP_H
#define FC_AMQP_H

#include <stddef.h>
#include <stdint.h>

typedef struct fc_amqp fc_amqp;

/* A header or queue argument. is_num selects num over str. */
typedef struct fc_amqp_field {
    const char *key;
    const char *str;
    long long num;
    int is_num;
} fc_amqp_field;

typedef struct fc_amqp_props {
    const char *message_id;     /* required for publishes: matches returns to their publish */
    const char *content_type;   /* default application/json */
    const fc_amqp_field *headers;
    size_t nheaders;
} fc_amqp_props;

/* A delivery, borrowed: valid only inside the delivery callback. */
typedef struct fc_delivery {
    uint64_t tag;
    const char *body;           /* NOT NUL-terminated */
    size_t len;
    const char *message_id;     /* "" if absent */
    const char *content_type;   /* "" if absent */
    const char *routing_key;
    int redelivered;
    long delivery_count;        /* x-delivery-count (quorum queues), 0 if absent */
    const char *death_reason;   /* reason of the latest x-death entry (dead-lettered), "" if none */
    const char *death_queue;    /* the queue that dead-lettered it, "" if none */
    const fc_amqp_field *headers; /* its string and integer headers (others, e.g. x-death, left out), */
    size_t nheaders;            /* at most FC_AMQP_HEADERS_MAX, values cut to fit FC_AMQP_HEADERS_BYTES */
} fc_delivery;

#define FC_AMQP_HEADERS_MAX 16
#define FC_AMQP_HEADERS_BYTES 4096

/* fc_delivery_header returns the string value of header key of d, or NULL when absent or not a string. */
const char *fc_delivery_header(const fc_delivery *d, const char *key);
/* fc_delivery_header_num returns the integer value of header key of d, or dflt. */
long long fc_delivery_header_num(const fc_delivery *d, const char *key, long long dflt);

/* Consumers one connection can hold at once (fc_amqp_consume on several queues): the work queue, the
 * crashed queue and one per job the worker follows (see fc_jobs.h). */
#define FC_AMQP_CONSUMERS_MAX 72

/* Callbacks of fc_amqp_poll. They may ack, nack and publish, but must not close the connection
 * (fc_amqp_close, fc_amqp_connect, fc_amqp_free): note what happened and close after fc_amqp_poll
 * returns. (If one does close it anyway, fc_amqp_poll stops at once and returns FC_ECONN.) */
typedef struct fc_amqp_handler {
    void (*delivery)(void *ud, const fc_delivery *d);
    /* confirm reports the broker's verdict on publish seq: 0, FC_ENACK or FC_EUNROUTABLE. */
    void (*confirm)(void *ud, uint64_t seq, int status);
    /* cancelled is called when the broker cancels the consumer of queue (the queue was deleted);
     * fc_amqp_consuming_queue(queue) is 0 from then on. */
    void (*cancelled)(void *ud, const char *queue);
    void *ud;
} fc_amqp_handler;

/* Brokers one AMQP_URL may list (the nodes of a cluster). */
#define FC_AMQP_BROKERS_MAX 16

/* fc_amqp_url_check returns 0 if url is a usable amqp:// or amqps:// URL, or a comma-separated list
 * of them (at most FC_AMQP_BROKERS_MAX), else FC_EINVAL with why. */
int fc_amqp_url_check(const char *url, char *why, size_t whylen);

/* fc_amqp_url_redact writes into out (size outlen, truncated to fit) a display form of url (each
 * URL of a list in turn, comma-separated) for
 * messages: parsed by amqp_parse_url exactly as fc_amqp_new parses it, then rebuilt as
 * amqp[s]://user:***@host:port/vhost (user, host and vhost percent-encoded), so the password is
 * never shown whatever characters it holds. Returns 0; FC_EINVAL (or FC_ENOMEM) if url does not
 * parse, and then out holds a placeholder with nothing of url after its amqp:// or amqps:// scheme. */
int fc_amqp_url_redact(const char *url, char *out, size_t outlen);

/* fc_amqp_new prepares a connection (not yet connected) to the broker url names, or to one of the
 * brokers of a comma-separated list (see fc_amqp_connect); name is shown in the management UI.
 * Returns NULL on a bad URL or no memory. Free with fc_amqp_free. */
fc_amqp *fc_amqp_new(const char *url, int heartbeat_s, const char *name);
/* fc_amqp_set_tls sets what amqps:// connections use: the CA certificates that verify the broker's
 * certificate and host name (NULL: the system's bundle), and an optional client certificate and
 * key (PEM files). 0 or FC_ENOMEM. */
int fc_amqp_set_tls(fc_amqp *a, const char *ca_file, const char *cert_file, const char *key_file);
/* fc_amqp_broker writes "host:port" of the broker connected to (or tried last) into out. */
const char *fc_amqp_broker(const fc_amqp *a, char *out, size_t outlen);
void fc_amqp_free(fc_amqp *a);

/* fc_amqp_connect opens the connection and a channel in confirm mode. 0 or FC_ECONN/FC_EBROKER
 * (reason in fc_amqp_errstr, without the password). Closes any previous connection first. With a
 * list of brokers it tries each once, in the list's order, starting with the one connected to
 * last, or with the next one after a connection that was up was lost: the caller backs off and
 * calls again when none answered. */
int fc_amqp_connect(fc_amqp *a);
/* fc_amqp_close closes politely (if still connected and not blocked by the broker) and forgets
 * unconfirmed publishes. A polite close of a connection that sent acks or nacks first cancels the
 * consumers still active and waits about 300 ms (1.3 s at most), so that the acks just sent reach
 * their quorum queues: RabbitMQ 3.10 drops the ones it still holds back when the channel closes,
 * and their messages would be delivered again. One that settled nothing closes at once. Synchronous methods (declare, consume, cancel, queue depth) give up
 * after 15 s without an answer, and the connection then counts as lost. */
void fc_amqp_close(fc_amqp *a);
/* What a polite close usually takes, ms: callers with a deadline stop that much before it. */
#define FC_AMQP_CLOSE_MS 300
/* fc_amqp_ok returns 1 while the connection is usable. */
int fc_amqp_ok(const fc_amqp *a);
/* fc_amqp_blocked returns 1 between the broker's connection.blocked (a resource alarm: memory or
 * disk) and connection.unblocked, as seen by fc_amqp_poll; 0 otherwise and after connect or close. */
int fc_amqp_blocked(const fc_amqp *a);
/* fc_amqp_writable returns 1 when a write of len bytes (a message with its frames) should not
 * wait for the broker to read: the socket's unsent bytes plus len fit in its send buffer, or
 * nothing is unsent (half the buffer counts: the kernel counts its own overhead too). A broker that blocks publishers stops reading, so a publish that does not
 * fit would block its caller; an event loop asks first and publishes later. */
int fc_amqp_writable(const fc_amqp *a, size_t len);
/* fc_amqp_consuming returns 1 while a consumer started by fc_amqp_consume is active: 0 before
 * any, after fc_amqp_cancel, after the broker cancelled them all (basic.cancel), and once the
 * connection is closed or broken. */
int fc_amqp_consuming(const fc_amqp *a);
const char *fc_amqp_errstr(const fc_amqp *a);
/* fc_amqp_fd returns the socket to poll for readability, or -1. */
int fc_amqp_fd(const fc_amqp *a);
/* fc_amqp_unconfirmed returns how many publishes await the broker's confirm. A synchronous method
 * (declare, queue depth) sent while one does may never be answered: a broker in a resource alarm
 * blocks a connection when it publishes, and then reads nothing more from it, possibly before its
 * connection.blocked reaches us. Periodic queries wait until it is 0. */
size_t fc_amqp_unconfirmed(const fc_amqp *a);
/* fc_amqp_pending returns 1 if frames are already buffered (poll would not wake for them). */
int fc_amqp_pending(const fc_amqp *a);

/* Declarations and bindings: 0, FC_ECONN/FC_EBROKER, or FC_EACCESS when the user lacks the
 * permission (403): the channel is then open again and the connection usable, unless publishes
 * awaited confirms or consumers ran on it (then FC_ECONN: a new channel would lose them). */
int fc_amqp_declare_exchange(fc_amqp *a, const char *name, const char *type, const fc_amqp_field *args, size_t n);
int fc_amqp_declare_queue(fc_amqp *a, const char *name, const fc_amqp_field *args, size_t n);
int fc_amqp_bind(fc_amqp *a, const char *queue, const char *exchange, const char *key);
/* fc_amqp_exchange_exists checks an exchange exists (passive declare, which needs no permission):
 * 0, or FC_ENOTFOUND. Passive declares use a channel of their own, which the broker closes on a
 * 404 (it is opened again on the next one): the consuming and publishing channel is untouched. */
int fc_amqp_exchange_exists(fc_amqp *a, const char *name);
/* fc_amqp_queue_depth asks for a queue's ready messages and consumers (passive declare, on the
 * probe channel). FC_ENOTFOUND if it does not exist. */
int fc_amqp_queue_depth(fc_amqp *a, const char *queue, long *messages, long *consumers);
int fc_amqp_delete_queue(fc_amqp *a, const char *queue);
/* fc_amqp_delete_queue_if_empty deletes queue unless it holds messages, on the probe channel (a refusal
 * closes only that one): 0 (deleted, or it did not exist), FC_EBUSY (not empty), FC_EACCESS (this user may
 * not delete it), FC_EBROKER or FC_ECONN. Not atomic (quorum queues refuse if-empty): the depth is read
 * first, so a message published meanwhile goes with the queue: only for queues nothing is published to. */
int fc_amqp_delete_queue_if_empty(fc_amqp *a, const char *queue);

/* fc_amqp_publish publishes a persistent, mandatory message; *seq receives its confirm
 * sequence number. Returns 0, FC_ENOMEM (nothing sent) or FC_ECONN. While the broker blocks the connection
 * (fc_amqp_blocked), it stops reading from the socket, so a publish may block the caller in
 * send() until the alarm clears: an event loop checks fc_amqp_blocked before publishing and
 * holds its messages meanwhile. */
int fc_amqp_publish(fc_amqp *a, const char *exchange, const char *key, const fc_amqp_props *p,
                    const void *body, size_t len, uint64_t *seq);

/* fc_amqp_consume starts consuming queue with at most prefetch unacked deliveries per consumer
 * (up to FC_AMQP_CONSUMERS_MAX queues at once; FC_EINVAL beyond). 0 or FC_ECONN/FC_EBROKER. */
int fc_amqp_consume(fc_amqp *a, const char *queue, int prefetch);
/* fc_amqp_cancel cancels every consumer; held deliveries stay held (ack or nack them). */
int fc_amqp_cancel(fc_amqp *a);
/* fc_amqp_cancel_queue cancels the consumer of queue, if any; 0 or FC_ECONN. */
int fc_amqp_cancel_queue(fc_amqp *a, const char *queue);
/* fc_amqp_consuming_queue returns 1 while a consumer of queue is active. */
int fc_amqp_consuming_queue(const fc_amqp *a, const char *queue);
int fc_amqp_ack(fc_amqp *a, uint64_t tag);
/* fc_amqp_ack_upto acks every delivery up to and including tag. */
int fc_amqp_ack_upto(fc_amqp *a, uint64_t tag);
int fc_amqp_nack(fc_amqp *a, uint64_t tag, int requeue);

/* fc_amqp_poll handles every frame that arrives within timeout_ms (0 = only what is there),
 * calling h. Also sends heartbeats. Returns 0, or FC_ECONN once the connection is lost or no
 * longer usable (fc_amqp_ok is 0), including when a callback broke or closed it. */
int fc_amqp_poll(fc_amqp *a, int timeout_ms, const fc_amqp_handler *h);

#endif
