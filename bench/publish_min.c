/* The producer benchmark's ceiling: a minimal rabbitmq-c publisher that does only what
 * flashcard-producer must do on the wire, with no input to parse and no Redis. It declares a
 * quorum queue and fanout exchange of its own with the work queue's arguments, publishes one body
 * COUNT times (persistent, mandatory, the producer's properties, a message id each) with publisher
 * confirms pipelined in the producer's window (publish.c: 256 messages or 4 MiB unconfirmed),
 * waits for the last confirm, deletes its queue and exchange, and prints one line:
 *
 *   msgs=N bytes=B elapsed=S rate=R msgs/s
 *
 * where S runs from before the connect to the last confirm (the deletes are left out).
 *
 *   bench-publish-min URL BODY_FILE COUNT [SIZE [PREFIX]]
 *
 * SIZE pads the body with trailing spaces (still the same JSON) to SIZE bytes, so that it can
 * match the mean size of the producer's batches when BODY_FILE is one of them (0: as it is).
 * The queue and exchange are named PREFIX.<pid> (default bench-min), so that a caller can find
 * and delete them if this program dies before it does. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CHANNEL 1
#define WINDOW_MSGS 256          /* as producer/publish.c */
#define WINDOW_BYTES (4L << 20)  /* as producer/publish.c */
#define DELIVERY_LIMIT 5         /* the work queue's default x-delivery-limit */
#define CONFIRM_TIMEOUT_S 30

typedef struct run {
    amqp_connection_state_t conn;
    unsigned char *acked; /* acked[tag] for tags 1..count */
    long count, published, confirmed, low; /* low: every tag below it is acked */
    int failed;
} run;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "bench-publish-min: %s\n", what);
    exit(1);
}

/* rpc_ok dies unless the last synchronous method succeeded. */
static void rpc_ok(amqp_connection_state_t c, const char *what) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die(what);
}

/* settle marks tag (and, if multiple, every tag below it) confirmed. */
static void settle(run *r, uint64_t tag, int multiple) {
    long from = multiple ? r->low : (long)tag;
    for (long t = from; t <= (long)tag && t <= r->count; t++)
        if (!r->acked[t]) {
            r->acked[t] = 1;
            r->confirmed++;
        }
    while (r->low <= r->count && r->acked[r->low]) r->low++;
}

/* wait_frame handles one frame (or none within 200 ms); a nack, a return or a close fails the run. */
static void wait_frame(run *r) {
    amqp_frame_t f;
    struct timeval tv = {0, 200000};
    int st = amqp_simple_wait_frame_noblock(r->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT) return;
    if (st != AMQP_STATUS_OK) die("connection lost");
    if (f.frame_type != AMQP_FRAME_METHOD) return;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *m = f.payload.method.decoded;
        settle(r, m->delivery_tag, m->multiple);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *m = f.payload.method.decoded;
        settle(r, m->delivery_tag, m->multiple);
        r->failed = 1;
        break;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msg;
        if (amqp_read_message(r->conn, f.channel, &msg, 0).reply_type == AMQP_RESPONSE_NORMAL)
            amqp_destroy_message(&msg);
        r->failed = 1;
        break;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: die("closed by the broker");
    default: break;
    }
}

/* drain waits until at most left messages of at most bytes_left bytes are unconfirmed. */
static void drain(run *r, long left, long bytes_left, size_t len) {
    double deadline = mono_s() + CONFIRM_TIMEOUT_S;
    while (r->published - r->confirmed > left || (r->published - r->confirmed) * (long)len > bytes_left) {
        if (mono_s() > deadline) die("no publisher confirms within 30 s");
        wait_frame(r);
    }
    if (!amqp_frames_enqueued(r->conn)) amqp_maybe_release_buffers(r->conn);
}

static amqp_connection_state_t connect_to(const char *url) {
    char *copy = strdup(url);
    struct amqp_connection_info info;
    if (!copy || amqp_parse_url(copy, &info) != AMQP_STATUS_OK) die("bad URL");
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, info.host, info.port) != AMQP_STATUS_OK) die("cannot connect");
    amqp_rpc_reply_t r = amqp_login(c, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die("login refused");
    free(copy);
    amqp_channel_open(c, CHANNEL);
    rpc_ok(c, "channel.open");
    amqp_confirm_select(c, CHANNEL);
    rpc_ok(c, "confirm.select");
    return c;
}

static amqp_table_entry_t str_arg(const char *k, const char *v) {
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

/* declare declares name as a fanout exchange and a quorum queue bound to it, with the arguments of
 * the producer's work queue (fc_topology.c); its dead-letter exchange need not exist. */
static void declare(amqp_connection_state_t c, const char *name, const char *dlx) {
    amqp_table_entry_t e[5];
    e[0] = str_arg("x-queue-type", "quorum");
    e[1].key = amqp_cstring_bytes("x-delivery-limit");
    e[1].value.kind = AMQP_FIELD_KIND_I64;
    e[1].value.value.i64 = DELIVERY_LIMIT;
    e[2] = str_arg("x-dead-letter-exchange", dlx);
    e[3] = str_arg("x-dead-letter-strategy", "at-least-once");
    e[4] = str_arg("x-overflow", "reject-publish");
    amqp_table_t args = {5, e};
    amqp_exchange_declare(c, CHANNEL, amqp_cstring_bytes(name), amqp_cstring_bytes("fanout"), 0, 1, 0, 0,
                          amqp_empty_table);
    rpc_ok(c, "exchange.declare");
    amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    rpc_ok(c, "queue.declare");
    amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(name), amqp_cstring_bytes(name), amqp_empty_bytes,
                    amqp_empty_table);
    rpc_ok(c, "queue.bind");
}

/* read_body reads path, padded with spaces to size bytes when size is larger. Caller frees. */
static char *read_body(const char *path, long size, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open BODY_FILE");
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = (n + 65536) * 2;
            if (!(b = realloc(b, cap))) die("out of memory");
        }
        size_t got = fread(b + n, 1, 65536, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (size > 0 && (size_t)size > n) {
        if (!(b = realloc(b, (size_t)size))) die("out of memory");
        memset(b + n, ' ', (size_t)size - n);
        n = (size_t)size;
    }
    *len = n;
    return b;
}

static void publish(run *r, const char *exchange, const char *body, size_t len) {
    char mid[64];
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                   AMQP_BASIC_MESSAGE_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.timestamp = (uint64_t)time(NULL);
    snprintf(mid, sizeof(mid), "bench-min:%ld:1", r->published);
    props.message_id = amqp_cstring_bytes(mid);
    amqp_bytes_t b = {len, (void *)body};
    if (amqp_basic_publish(r->conn, CHANNEL, amqp_cstring_bytes(exchange), amqp_empty_bytes, 1, 0, &props, b) !=
        AMQP_STATUS_OK)
        die("publish failed");
    r->published++;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench-publish-min URL BODY_FILE COUNT [SIZE [PREFIX]]\n");
        return 2;
    }
    run r = {0};
    r.count = atol(argv[3]);
    long size = argc > 4 ? atol(argv[4]) : 0;
    if (r.count < 1 || r.count > 100000000) die("COUNT out of range");
    size_t len;
    char *body = read_body(argv[2], size, &len);
    if (!(r.acked = calloc((size_t)r.count + 1, 1))) die("out of memory");
    r.low = 1;
    char name[200], dlx[220];
    snprintf(name, sizeof(name), "%.160s.%d", argc > 5 ? argv[5] : "bench-min", (int)getpid());
    snprintf(dlx, sizeof(dlx), "%s.dead", name);
    double t0 = mono_s(); /* connecting counts, as it does in the producer's figure */
    r.conn = connect_to(argv[1]);
    declare(r.conn, name, dlx);
    long window_bytes = (long)len < WINDOW_BYTES ? WINDOW_BYTES - (long)len : 0;
    for (long i = 0; i < r.count && !r.failed; i++) {
        if ((long)len < WINDOW_BYTES) drain(&r, WINDOW_MSGS - 1, window_bytes, len);
        else drain(&r, 0, 0, len);
        publish(&r, name, body, len);
    }
    drain(&r, 0, 0, len);
    double secs = mono_s() - t0;
    amqp_queue_delete(r.conn, CHANNEL, amqp_cstring_bytes(name), 0, 0);
    rpc_ok(r.conn, "queue.delete");
    amqp_exchange_delete(r.conn, CHANNEL, amqp_cstring_bytes(name), 0);
    rpc_ok(r.conn, "exchange.delete");
    amqp_channel_close(r.conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(r.conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(r.conn);
    if (r.failed) die("the broker refused or returned a message");
    printf("msgs=%ld bytes=%zu elapsed=%.3f rate=%.0f msgs/s\n", r.published, len, secs, (double)r.published / secs);
    free(body);
    free(r.acked);
    return 0;
}
