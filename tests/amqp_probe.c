/* amqp-probe: one AMQP 0-9-1 operation made as one broker user, for the integration tests that
 * check the broker's permissions: it prints whether the broker allowed it or refused it, with the
 * broker's reply code and text. A test tool, so it speaks rabbitmq-c directly (fc_amqp has no
 * purge and hides a refused publish behind its confirm tracking). The broker and the user come
 * from AMQP_URL in the environment only: a URL with a password is never an argument, never printed. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define PROBE_CHANNEL 1
#define PROBE_TIMEOUT_S 10 /* longest wait for the broker's answer to any step */

enum probe_status {
    PROBE_PENDING = -1, /* publish: the confirm is still to come */
    PROBE_OK = 0,       /* the broker did it */
    PROBE_FAILED = 1,   /* no answer, a bad AMQP_URL, a library error */
    PROBE_USAGE = 2,
    PROBE_REFUSED = 3,  /* the broker closed the channel or the connection: "refused: CODE TEXT" */
    PROBE_RETURNED = 4, /* publish: confirmed, but returned as unroutable */
    PROBE_NACKED = 5,   /* publish: the broker nacked it */
};

static const char usage[] =
    "usage: amqp-probe ACTION ARGS...   (the broker and the user: AMQP_URL in the environment)\n"
    "  publish EXCHANGE KEY [BODY]   a persistent, mandatory publish in confirm mode\n"
    "  get QUEUE                     basic.get one message, then reject it with requeue\n"
    "  purge-queue QUEUE | delete-queue QUEUE | declare-queue QUEUE (durable, no arguments)\n"
    "  bind QUEUE EXCHANGE KEY\n"
    "Prints one line; exit 0 done, 3 refused by the broker (\"refused: CODE TEXT\"), 4 publish returned,\n"
    "5 publish nacked, 1 other failure, 2 usage.\n";

/* closed prints the reply code and text of a channel.close or connection.close (both carry them
 * first, at the same offsets) and returns PROBE_REFUSED. */
static int closed(const void *decoded) {
    const amqp_channel_close_t *m = decoded;
    printf("refused: %u %.*s\n", m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    return PROBE_REFUSED;
}

/* check returns PROBE_OK for a normal reply; else prints why what failed and returns
 * PROBE_REFUSED (the broker closed the channel or connection) or PROBE_FAILED. */
static int check(amqp_rpc_reply_t r, const char *what) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return PROBE_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
            return closed(r.reply.decoded);
        printf("%s: unexpected method 0x%08x\n", what, r.reply.id);
        return PROBE_FAILED;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        printf("%s: %s\n", what, amqp_error_string2(r.library_error));
        return PROBE_FAILED;
    default: printf("%s: no reply\n", what); return PROBE_FAILED;
    }
}

/* probe_open connects, logs in and opens the channel as AMQP_URL says; 0 or a probe_status, with
 * *conn set either way (destroy it with amqp_destroy_connection). */
static int probe_open(amqp_connection_state_t *conn) {
    struct timeval tv = {PROBE_TIMEOUT_S, 0};
    struct amqp_connection_info ci;
    const char *env = getenv("AMQP_URL");
    char *url = env ? strdup(env) : NULL;
    *conn = amqp_new_connection();
    amqp_default_connection_info(&ci);
    if (!url || !*conn || amqp_parse_url(url, &ci) != AMQP_STATUS_OK || ci.ssl) {
        printf("AMQP_URL: unset, or not an amqp:// URL\n");
        free(url);
        return PROBE_FAILED;
    }
    amqp_socket_t *sock = amqp_tcp_socket_new(*conn);
    int rc = PROBE_FAILED;
    if (!sock || amqp_socket_open_noblock(sock, ci.host, ci.port, &tv) != AMQP_STATUS_OK) {
        printf("connect: cannot reach %s:%d\n", ci.host, ci.port);
    } else {
        amqp_set_rpc_timeout(*conn, &tv);
        rc = check(amqp_login(*conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password), "login");
        if (rc == PROBE_OK) amqp_channel_open(*conn, PROBE_CHANNEL);
        if (rc == PROBE_OK) rc = check(amqp_get_rpc_reply(*conn), "channel.open");
    }
    free(url);
    return rc;
}

/* on_frame handles one frame after a publish: PROBE_PENDING while the confirm is still to come,
 * else the outcome. */
static int on_frame(amqp_connection_state_t conn, const amqp_frame_t *f, int *returned) {
    if (f->frame_type != AMQP_FRAME_METHOD) return PROBE_PENDING;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
        if (!*returned) printf("ok: published and confirmed\n");
        return *returned ? PROBE_RETURNED : PROBE_OK;
    case AMQP_BASIC_NACK_METHOD: printf("nacked\n"); return PROBE_NACKED;
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *m = f->payload.method.decoded;
        amqp_message_t msg;
        printf("returned: %u %.*s\n", m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        *returned = 1;
        if (amqp_read_message(conn, PROBE_CHANNEL, &msg, 0).reply_type != AMQP_RESPONSE_NORMAL) return PROBE_FAILED;
        amqp_destroy_message(&msg);
        return PROBE_PENDING;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: return closed(f->payload.method.decoded);
    default: return PROBE_PENDING;
    }
}

static int publish(amqp_connection_state_t conn, const char *exchange, const char *key, const char *body) {
    amqp_confirm_select(conn, PROBE_CHANNEL);
    int rc = check(amqp_get_rpc_reply(conn), "confirm.select");
    if (rc != PROBE_OK) return rc;
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = 2;
    p.content_type = amqp_cstring_bytes("application/json");
    if (amqp_basic_publish(conn, PROBE_CHANNEL, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 1, 0, &p,
                           amqp_cstring_bytes(body)) != AMQP_STATUS_OK) {
        printf("publish: not sent\n");
        return PROBE_FAILED;
    }
    int returned = 0;
    for (int frames = 0; frames < 16; frames++) {
        struct timeval tv = {PROBE_TIMEOUT_S, 0};
        amqp_frame_t f;
        if (amqp_simple_wait_frame_noblock(conn, &f, &tv) != AMQP_STATUS_OK) break;
        rc = on_frame(conn, &f, &returned);
        if (rc != PROBE_PENDING) return rc;
    }
    printf("publish: no confirm\n");
    return PROBE_FAILED;
}

static int get(amqp_connection_state_t conn, const char *queue) {
    amqp_rpc_reply_t r = amqp_basic_get(conn, PROBE_CHANNEL, amqp_cstring_bytes(queue), 0);
    int rc = check(r, "basic.get");
    if (rc != PROBE_OK) return rc;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
        printf("ok: empty\n");
        return PROBE_OK;
    }
    uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    amqp_message_t msg;
    rc = check(amqp_read_message(conn, PROBE_CHANNEL, &msg, 0), "read message");
    if (rc != PROBE_OK) return rc;
    printf("ok: got a message of %zu bytes (requeued)\n", msg.body.len);
    amqp_destroy_message(&msg);
    return amqp_basic_reject(conn, PROBE_CHANNEL, tag, 1) == AMQP_STATUS_OK ? PROBE_OK : PROBE_FAILED;
}

static int purge(amqp_connection_state_t conn, const char *queue) {
    amqp_queue_purge_ok_t *ok = amqp_queue_purge(conn, PROBE_CHANNEL, amqp_cstring_bytes(queue));
    int rc = check(amqp_get_rpc_reply(conn), "queue.purge");
    if (rc == PROBE_OK) printf("ok: purged %u messages\n", ok->message_count);
    return rc;
}

static int simple(amqp_connection_state_t conn, const char *what) {
    int rc = check(amqp_get_rpc_reply(conn), what);
    if (rc == PROBE_OK) printf("ok: %s\n", what);
    return rc;
}

/* run does the action of argv (validated by the caller) on an open channel. */
static int run(amqp_connection_state_t conn, int argc, char **argv) {
    const char *a = argv[1];
    if (!strcmp(a, "publish")) return publish(conn, argv[2], argv[3], argc > 4 ? argv[4] : "{}");
    if (!strcmp(a, "get")) return get(conn, argv[2]);
    if (!strcmp(a, "purge-queue")) return purge(conn, argv[2]);
    if (!strcmp(a, "delete-queue")) amqp_queue_delete(conn, PROBE_CHANNEL, amqp_cstring_bytes(argv[2]), 0, 0);
    else if (!strcmp(a, "declare-queue"))
        amqp_queue_declare(conn, PROBE_CHANNEL, amqp_cstring_bytes(argv[2]), 0, 1, 0, 0, amqp_empty_table);
    else
        amqp_queue_bind(conn, PROBE_CHANNEL, amqp_cstring_bytes(argv[2]), amqp_cstring_bytes(argv[3]),
                        amqp_cstring_bytes(argv[4]), amqp_empty_table);
    return simple(conn, a);
}

/* args_ok says whether argv names an action with its arguments. */
static int args_ok(int argc, char **argv) {
    static const struct { const char *name; int min, max; } actions[] = {
        {"publish", 2, 3}, {"get", 1, 1}, {"purge-queue", 1, 1}, {"delete-queue", 1, 1},
        {"declare-queue", 1, 1}, {"bind", 3, 3},
    };
    for (size_t i = 0; argc >= 2 && i < sizeof(actions) / sizeof(actions[0]); i++)
        if (!strcmp(argv[1], actions[i].name)) return argc - 2 >= actions[i].min && argc - 2 <= actions[i].max;
    return 0;
}

int main(int argc, char **argv) {
    if (!args_ok(argc, argv)) {
        fputs(usage, stderr);
        return PROBE_USAGE;
    }
    amqp_connection_state_t conn;
    int rc = probe_open(&conn);
    if (rc == PROBE_OK) rc = run(conn, argc, argv);
    if (rc == PROBE_OK) {
        amqp_channel_close(conn, PROBE_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    if (conn) amqp_destroy_connection(conn);
    return rc;
}
