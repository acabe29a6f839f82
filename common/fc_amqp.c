/* RabbitMQ client over rabbitmq-c 0.11: connection, declarations, confirmed publishing,
 * consuming, and a non-blocking frame pump for event loops. */
#include "fc_amqp.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "fc_buf.h"
#include "fc_error.h"
#include "fc_log.h"

#define CHANNEL 1
/* Passive declares (does a queue or exchange exist, how deep is it) go on a channel of their own:
 * the broker closes a channel on a 404, and closing the main one would drop its consumers and
 * its publishes' confirms. */
#define PROBE_CHANNEL 2
/* Longest wait for the answer of a synchronous method (declare, consume, cancel...): a broker
 * that stops reading the socket (a resource alarm) must not hang the caller for good. */
#define RPC_TIMEOUT_S 15

typedef struct pending_pub {
    uint64_t seq;
    char *message_id; /* owned */
    int returned;     /* a basic.return came for it */
} pending_pub;

/* One broker of the list AMQP_URL names. */
typedef struct broker {
    char *url_copy;               /* writable copy; amqp_parse_url points into it */
    struct amqp_connection_info info;
} broker;

/* Headers of a delivery, copied NUL-terminated for its callback. */
typedef struct header_copy {
    fc_amqp_field f[FC_AMQP_HEADERS_MAX];
    size_t n, used;
    char buf[FC_AMQP_HEADERS_BYTES];
} header_copy;

struct fc_amqp {
    header_copy hc;             /* the headers of the delivery being handed out */
    amqp_connection_state_t conn; /* NULL while disconnected */
    broker brokers[FC_AMQP_BROKERS_MAX];
    int nbrokers;
    int cur;                      /* the broker connected to, or tried last */
    int was_ok;                   /* the connection to brokers[cur] was up: a new connect starts at the next */
    char *tls_ca, *tls_cert, *tls_key; /* owned; NULL = unset */
    int heartbeat_s;
    char name[128];
    int ok;
    int probe_open;               /* PROBE_CHANNEL is open */
    int blocked;                  /* 1 between connection.blocked and connection.unblocked */
    int settled;                  /* this connection sent an ack or a nack: its close waits for them */
    char consumer_tag[FC_AMQP_CONSUMERS_MAX][64]; /* active consumers; "" = free slot */
    char consumer_queue[FC_AMQP_CONSUMERS_MAX][256]; /* the queue each consumes */
    uint64_t next_seq;            /* sequence number of the next publish */
    pending_pub *pend;            /* unconfirmed publishes, ascending seq from pend_head */
    size_t pend_head, pend_len, pend_cap;
    char errstr[256];
};

/* next_url copies the list's next URL (up to a comma, spaces around it dropped) into a new string
 * and moves *list past it. NULL at the end of the list or without memory (*oom set). */
static char *next_url(const char **list, int *oom) {
    const char *p = *list + strspn(*list, " ,");
    if (!*p) return NULL;
    size_t n = strcspn(p, ",");
    *list = p + n;
    while (n && p[n - 1] == ' ') n--;
    char *u = strndup(p, n);
    if (!u) *oom = 1;
    return u;
}

/* free_url wipes a URL copy (it may hold a password) and frees it. */
static void free_url(char *u) {
    if (u) memset(u, 0, strlen(u));
    free(u);
}

int fc_amqp_url_check(const char *url, char *why, size_t whylen) {
    int n = 0, oom = 0, bad = 0;
    for (char *u; (u = next_url(&url, &oom)) != NULL; free_url(u)) {
        struct amqp_connection_info info;
        if (++n <= FC_AMQP_BROKERS_MAX && amqp_parse_url(u, &info) != AMQP_STATUS_OK && !bad) bad = n;
    }
    if (oom) return FC_ENOMEM;
    if (n == 0 || bad) {
        char which[48] = "";
        if (n > 1) snprintf(which, sizeof(which), "URL %d of the list ", bad);
        snprintf(why, whylen, "%sis not an AMQP URL (amqp://user:password@host:port/vhost, several separated by "
                              "commas; write / @ : , %% in the password as %%2F %%40 %%3A %%2C %%25)", which);
        return FC_EINVAL;
    }
    if (n > FC_AMQP_BROKERS_MAX) {
        snprintf(why, whylen, "names %d brokers; at most %d", n, FC_AMQP_BROKERS_MAX);
        return FC_EINVAL;
    }
    return FC_OK;
}

/* put_encoded appends s with every byte outside [A-Za-z0-9-._~] and keep percent-encoded, so the
 * display form reads back as the same parts. */
static void put_encoded(fc_buf *b, const char *s, const char *keep) {
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("-._~", *c) || (keep && strchr(keep, *c)))
            fc_buf_append(b, c, 1);
        else
            fc_buf_printf(b, "%%%02X", *c);
    }
}

/* redact_parsed rebuilds url from the parts amqp_parse_url found, the password replaced by ***. */
static int redact_parsed(const struct amqp_connection_info *info, char *out, size_t outlen) {
    fc_buf b = {0};
    fc_buf_puts(&b, info->ssl ? "amqps://" : "amqp://");
    put_encoded(&b, info->user, NULL);
    fc_buf_puts(&b, ":***@");
    int v6 = strchr(info->host, ':') != NULL;
    if (v6) fc_buf_puts(&b, "[");
    put_encoded(&b, info->host, v6 ? ":" : NULL);
    fc_buf_printf(&b, "%s:%d/", v6 ? "]" : "", info->port);
    put_encoded(&b, info->vhost, NULL);
    int rc = fc_buf_err(&b);
    if (rc == FC_OK) snprintf(out, outlen, "%s", b.data);
    fc_buf_free(&b);
    return rc;
}

/* redact_one writes the display form of one URL of the list. */
static int redact_one(const char *url, char *out, size_t outlen) {
    struct amqp_connection_info info;
    int rc = FC_ENOMEM;
    char *copy = strdup(url);
    if (copy) rc = amqp_parse_url(copy, &info) == AMQP_STATUS_OK ? FC_OK : FC_EINVAL;
    if (rc == FC_OK) rc = redact_parsed(&info, out, outlen);
    free_url(copy);
    if (rc != FC_OK) {
        const char *scheme = strncmp(url, "amqps://", 8) == 0 ? "amqps://"
                             : strncmp(url, "amqp://", 7) == 0 ? "amqp://"
                                                                : "";
        snprintf(out, outlen, "%s(URL not shown: it does not parse)", scheme);
    }
    return rc;
}

int fc_amqp_url_redact(const char *url, char *out, size_t outlen) {
    int rc = FC_OK, oom = 0;
    size_t used = 0;
    if (outlen) out[0] = '\0';
    for (char *u; (u = next_url(&url, &oom)) != NULL; free_url(u)) {
        char one[512];
        int r = redact_one(u, one, sizeof(one));
        if (rc == FC_OK) rc = r;
        if (used < outlen) used += (size_t)snprintf(out + used, outlen - used, "%s%s", used ? "," : "", one);
    }
    if (oom) rc = FC_ENOMEM;
    if (oom && outlen) snprintf(out, outlen, "(URL not shown)");
    return rc;
}

fc_amqp *fc_amqp_new(const char *url, int heartbeat_s, const char *name) {
    fc_amqp *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    int oom = 0, bad = 0;
    for (char *u; !bad && (u = next_url(&url, &oom)) != NULL;) {
        if (a->nbrokers == FC_AMQP_BROKERS_MAX) bad = 1;
        broker *b = &a->brokers[a->nbrokers];
        if (bad || amqp_parse_url(u, &b->info) != AMQP_STATUS_OK) {
            free_url(u);
            bad = 1;
            break;
        }
        b->url_copy = u;
        a->nbrokers++;
    }
    if (oom || bad || a->nbrokers == 0) {
        fc_amqp_free(a);
        return NULL;
    }
    a->heartbeat_s = heartbeat_s;
    snprintf(a->name, sizeof(a->name), "%s", name ? name : "flashcard");
    return a;
}

int fc_amqp_set_tls(fc_amqp *a, const char *ca_file, const char *cert_file, const char *key_file) {
    free(a->tls_ca);
    free(a->tls_cert);
    free(a->tls_key);
    a->tls_ca = ca_file && *ca_file ? strdup(ca_file) : NULL;
    a->tls_cert = cert_file && *cert_file ? strdup(cert_file) : NULL;
    a->tls_key = key_file && *key_file ? strdup(key_file) : NULL;
    if ((ca_file && *ca_file && !a->tls_ca) || (cert_file && *cert_file && !a->tls_cert) ||
        (key_file && *key_file && !a->tls_key))
        return FC_ENOMEM;
    return FC_OK;
}

const char *fc_amqp_broker(const fc_amqp *a, char *out, size_t outlen) {
    const struct amqp_connection_info *i = &a->brokers[a->cur].info;
    snprintf(out, outlen, "%s:%d", i->host, i->port);
    return out;
}

static void forget_pending(fc_amqp *a) {
    for (size_t i = a->pend_head; i < a->pend_len; i++) free(a->pend[i].message_id);
    a->pend_head = a->pend_len = 0;
}

static void destroy_conn(fc_amqp *a) {
    if (a->conn) amqp_destroy_connection(a->conn);
    a->conn = NULL;
    a->ok = 0;
    a->blocked = 0;
    a->settled = 0;
    a->probe_open = 0;
    memset(a->consumer_tag, 0, sizeof(a->consumer_tag));
    forget_pending(a);
}

/* has_consumers says whether consumers were started on the channel (whatever the connection's state). */
static int has_consumers(const fc_amqp *a) {
    for (int i = 0; i < FC_AMQP_CONSUMERS_MAX; i++)
        if (a->consumer_tag[i][0]) return 1;
    return 0;
}

void fc_amqp_free(fc_amqp *a) {
    if (!a) return;
    destroy_conn(a);
    free(a->pend);
    for (int i = 0; i < a->nbrokers; i++) free_url(a->brokers[i].url_copy);
    free(a->tls_ca);
    free(a->tls_cert);
    free(a->tls_key);
    free(a);
}

/* set_error records why the last operation failed from an RPC reply; returns FC_ECONN or FC_EBROKER. */
static int rpc_error(fc_amqp *a, amqp_rpc_reply_t r, const char *what) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return FC_OK;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(a->errstr, sizeof(a->errstr), "%s: %s", what, amqp_error_string2(r.library_error));
        a->ok = 0;
        return FC_ECONN;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            /* Both carry reply_code and reply_text at the same offsets. */
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(a->errstr, sizeof(a->errstr), "%s: broker said %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
            if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && m->reply_code == AMQP_ACCESS_REFUSED) {
                a->ok = 0;
                return FC_EACCESS;
            }
        } else {
            snprintf(a->errstr, sizeof(a->errstr), "%s: broker error 0x%08x", what, r.reply.id);
        }
        a->ok = 0;
        return FC_EBROKER;
    default:
        snprintf(a->errstr, sizeof(a->errstr), "%s: no reply", what);
        a->ok = 0;
        return FC_ECONN;
    }
}

static int login(fc_amqp *a) {
    amqp_table_entry_t caps[3], props[2];
    caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[0].value.value.boolean = 1;
    caps[1].key = amqp_cstring_bytes("connection.blocked");
    caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[1].value.value.boolean = 1;
    caps[2].key = amqp_cstring_bytes("publisher_confirms");
    caps[2].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[2].value.value.boolean = 1;
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table.num_entries = 3;
    props[0].value.value.table.entries = caps;
    props[1].key = amqp_cstring_bytes("connection_name");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes(a->name);
    amqp_table_t table = {2, props};
    const struct amqp_connection_info *i = &a->brokers[a->cur].info;
    amqp_rpc_reply_t r = amqp_login_with_properties(a->conn, i->vhost, 0, 131072, a->heartbeat_s, &table,
                                                    AMQP_SASL_METHOD_PLAIN, i->user, i->password);
    return rpc_error(a, r, "login");
}

static int open_channel(fc_amqp *a) {
    amqp_channel_open(a->conn, CHANNEL);
    int rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "channel.open");
    if (rc != FC_OK) return rc;
    amqp_confirm_select(a->conn, CHANNEL);
    rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "confirm.select");
    a->next_seq = 1;
    forget_pending(a);
    return rc;
}

/* System CA bundle (Debian's ca-certificates), used for amqps:// when AMQP_CA_FILE is unset. */
#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* new_socket creates the connection's socket: TCP, or TLS with the peer's certificate and host
 * name verified against the CA file (the client certificate sent when one is set). */
static amqp_socket_t *new_socket(fc_amqp *a, const struct amqp_connection_info *info) {
    if (!info->ssl) return amqp_tcp_socket_new(a->conn);
    amqp_socket_t *sock = amqp_ssl_socket_new(a->conn);
    if (!sock) return NULL;
    const char *ca = a->tls_ca ? a->tls_ca : SYSTEM_CA_FILE;
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    if (amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
        snprintf(a->errstr, sizeof(a->errstr), "cannot read the CA certificates in %s (AMQP_CA_FILE)", ca);
        return NULL;
    }
    if ((a->tls_cert || a->tls_key) &&
        amqp_ssl_socket_set_key(sock, a->tls_cert ? a->tls_cert : "", a->tls_key ? a->tls_key : "") !=
            AMQP_STATUS_OK) {
        snprintf(a->errstr, sizeof(a->errstr), "cannot use the client certificate %s with the key %s "
                 "(AMQP_CERT_FILE, AMQP_KEY_FILE)", a->tls_cert ? a->tls_cert : "(unset)",
                 a->tls_key ? a->tls_key : "(unset)");
        return NULL;
    }
    return sock;
}

/* connect_one opens the connection to brokers[a->cur] and a channel in confirm mode. */
static int connect_one(fc_amqp *a) {
    const struct amqp_connection_info *info = &a->brokers[a->cur].info;
    destroy_conn(a);
    a->conn = amqp_new_connection();
    snprintf(a->errstr, sizeof(a->errstr), "cannot create socket");
    amqp_socket_t *sock = a->conn ? new_socket(a, info) : NULL;
    if (!sock) {
        destroy_conn(a);
        return FC_ECONN;
    }
    struct timeval tv = {5, 0};
    int st = amqp_socket_open_noblock(sock, info->host, info->port, &tv);
    if (st != AMQP_STATUS_OK) {
        snprintf(a->errstr, sizeof(a->errstr), "cannot connect to %s:%d: %s", info->host, info->port,
                 amqp_error_string2(st));
        destroy_conn(a);
        return FC_ECONN;
    }
    int rc = login(a);
    if (rc == FC_ECONN && info->ssl) {
        /* A broker that wants a client certificate closes the TLS session at login. */
        char why[sizeof(a->errstr)];
        snprintf(why, sizeof(why), "%s", a->errstr);
        snprintf(a->errstr, sizeof(a->errstr), "%s:%d over TLS: %s%s", info->host, info->port, why,
                 a->tls_cert ? "" : " (a broker that requires a client certificate refuses one without: "
                                    "AMQP_CERT_FILE, AMQP_KEY_FILE)");
    }
    if (rc == FC_OK) rc = open_channel(a);
    if (rc != FC_OK) {
        destroy_conn(a);
        return rc;
    }
    struct timeval rpc = {RPC_TIMEOUT_S, 0};
    amqp_set_rpc_timeout(a->conn, &rpc);
    a->ok = 1;
    return FC_OK;
}

/* Brokers are tried in the order of the list; after a connection that was up is lost, the next
 * connect starts at the broker after it, so a fleet that lost a node moves on at once. */
int fc_amqp_connect(fc_amqp *a) {
    if (a->was_ok) a->cur = (a->cur + 1) % a->nbrokers;
    a->was_ok = 0;
    int rc = FC_ECONN;
    for (int tried = 0; tried < a->nbrokers; tried++) {
        if (tried) a->cur = (a->cur + 1) % a->nbrokers;
        rc = connect_one(a);
        if (rc == FC_OK) {
            a->was_ok = 1;
            return FC_OK;
        }
        if (a->nbrokers > 1) fc_debug("broker %d of %d: %s", a->cur + 1, a->nbrokers, a->errstr);
    }
    if (a->nbrokers > 1) {
        char last[sizeof(a->errstr)];
        snprintf(last, sizeof(last), "%s", a->errstr);
        snprintf(a->errstr, sizeof(a->errstr), "none of the %d brokers answered; last: %s", a->nbrokers, last);
    }
    /* Next time, start again where this round started. */
    a->cur = (a->cur + 1) % a->nbrokers;
    return rc;
}

int fc_amqp_writable(const fc_amqp *a, size_t len) {
    if (!fc_amqp_ok(a)) return 0;
    int fd = amqp_get_sockfd(a->conn), queued = 0, room = 0;
    socklen_t rl = sizeof(room);
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &queued) != 0 || getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &room, &rl) != 0)
        return 1; /* cannot tell: behave as before */
    /* SIOCOUTQ counts payload bytes, the kernel's limit counts their buffers too (about twice as
     * much for small segments): half the buffer is what surely fits. */
    return queued == 0 || (size_t)queued + len <= (size_t)room / 2;
}

/* Wait before a polite close, in ms, for settlements the broker may hold back. RabbitMQ 3.10's
 * quorum queue client, inside the channel process, sends at most 32 commands that the queue's Raft
 * log has not applied yet; the settlements (acks) beyond them wait in the channel until the log
 * applies those (a write of the log later: about 3 ms on an idle machine; on one busy with CPU and
 * fsync work 30 ms was once too short, 50 ms always enough in our tries), and the ones still waiting
 * when the channel closes are dropped: their messages come back and are delivered again. Nothing
 * the broker sends the client follows their release, so the client waits. */
#define CLOSE_SETTLE_MS FC_AMQP_CLOSE_MS
/* Longest wait, in s, for the answer of the round trip before that wait. */
#define CLOSE_RPC_TIMEOUT_S 1

/* close_clock_ms returns a monotonic clock in ms. */
static int64_t close_clock_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* let_acks_settle gives the acks sent on the channel time to reach their queues before it closes:
 * one round trip on the channel (every ack sent before it has then been handled), then
 * CLOSE_SETTLE_MS of polling the connection (deliveries and confirms that come are dropped, as the
 * close forgets them). The round trip is a cancel of the consumers still active, if any: on a quorum
 * queue a cancel is a Raft command itself, answered once the commands sent before it are applied, so
 * the settlements held back are released by then; without consumers it is a confirm.select, which
 * changes nothing on a channel already in confirm mode. Either fails after CLOSE_RPC_TIMEOUT_S,
 * and the connection then counts as lost. */
static void let_acks_settle(fc_amqp *a) {
    struct timeval quick = {CLOSE_RPC_TIMEOUT_S, 0}, normal = {RPC_TIMEOUT_S, 0};
    amqp_set_rpc_timeout(a->conn, &quick);
    if (has_consumers(a)) {
        fc_amqp_cancel(a);
    } else {
        amqp_confirm_select(a->conn, CHANNEL);
        rpc_error(a, amqp_get_rpc_reply(a->conn), "confirm.select");
    }
    fc_amqp_handler none = {NULL, NULL, NULL, NULL};
    int64_t end = close_clock_ms() + CLOSE_SETTLE_MS, left;
    while (fc_amqp_ok(a) && (left = end - close_clock_ms()) > 0 && fc_amqp_poll(a, (int)left, &none) == FC_OK) {}
    amqp_set_rpc_timeout(a->conn, &normal);
}

void fc_amqp_close(fc_amqp *a) {
    /* A blocked broker reads nothing: a polite close would wait for answers that never come. */
    if (a->conn && a->ok && !a->blocked) {
        char why[sizeof(a->errstr)];
        snprintf(why, sizeof(why), "%s", a->errstr); /* kept for the caller, whatever the wait meets */
        if (a->settled) let_acks_settle(a); /* a connection that only published has nothing to wait for */
        if (fc_amqp_ok(a) && !a->blocked) { /* the wait may have seen connection.blocked */
            amqp_channel_close(a->conn, CHANNEL, AMQP_REPLY_SUCCESS);
            amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
        }
        snprintf(a->errstr, sizeof(a->errstr), "%s", why);
    }
    destroy_conn(a);
}

int fc_amqp_ok(const fc_amqp *a) { return a->conn && a->ok; }
size_t fc_amqp_unconfirmed(const fc_amqp *a) { return a->pend_len - a->pend_head; }
int fc_amqp_blocked(const fc_amqp *a) { return a->conn && a->blocked; }
int fc_amqp_consuming(const fc_amqp *a) {
    for (int i = 0; fc_amqp_ok(a) && i < FC_AMQP_CONSUMERS_MAX; i++)
        if (a->consumer_tag[i][0]) return 1;
    return 0;
}
const char *fc_amqp_errstr(const fc_amqp *a) { return a->errstr; }

int fc_amqp_fd(const fc_amqp *a) {
    if (!a->conn) return -1;
    amqp_socket_t *s = amqp_get_socket(a->conn);
    return s ? amqp_socket_get_sockfd(s) : -1;
}

int fc_amqp_pending(const fc_amqp *a) {
    return a->conn && (amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn));
}

/* make_table converts project fields into an amqp table; entries must hold n slots. */
static amqp_table_t make_table(const fc_amqp_field *f, size_t n, amqp_table_entry_t *entries) {
    for (size_t i = 0; i < n; i++) {
        entries[i].key = amqp_cstring_bytes(f[i].key);
        if (f[i].is_num) {
            entries[i].value.kind = AMQP_FIELD_KIND_I64;
            entries[i].value.value.i64 = f[i].num;
        } else {
            entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
            entries[i].value.value.bytes = amqp_cstring_bytes(f[i].str);
        }
    }
    amqp_table_t t = {(int)n, n ? entries : NULL};
    return t;
}

#define MAX_FIELDS 16

static int reopen_after_close(fc_amqp *a);

/* after_refusal answers a channel closed with 403 ACCESS_REFUSED: the connection is still good, so
 * the channel is opened again and FC_EACCESS returned, unless publishes await confirms (a new
 * channel would lose them): the connection then counts as lost (FC_ECONN). */
static int after_refusal(fc_amqp *a, int rc) {
    if (rc != FC_EACCESS) return rc;
    if (a->pend_head != a->pend_len || reopen_after_close(a) != FC_OK) {
        a->ok = 0;
        return FC_ECONN;
    }
    return FC_EACCESS;
}

int fc_amqp_declare_exchange(fc_amqp *a, const char *name, const char *type, const fc_amqp_field *args,
                             size_t n) {
    amqp_table_entry_t e[MAX_FIELDS];
    if (n > MAX_FIELDS) return FC_EINVAL;
    amqp_exchange_declare(a->conn, CHANNEL, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0, 1, 0, 0,
                          make_table(args, n, e));
    char what[200];
    snprintf(what, sizeof(what), "declare exchange %s", name);
    return after_refusal(a, rpc_error(a, amqp_get_rpc_reply(a->conn), what));
}

int fc_amqp_declare_queue(fc_amqp *a, const char *name, const fc_amqp_field *args, size_t n) {
    amqp_table_entry_t e[MAX_FIELDS];
    if (n > MAX_FIELDS) return FC_EINVAL;
    amqp_queue_declare(a->conn, CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, make_table(args, n, e));
    char what[200];
    snprintf(what, sizeof(what), "declare queue %s", name);
    return after_refusal(a, rpc_error(a, amqp_get_rpc_reply(a->conn), what));
}

int fc_amqp_bind(fc_amqp *a, const char *queue, const char *exchange, const char *key) {
    amqp_queue_bind(a->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
    char what[400];
    snprintf(what, sizeof(what), "bind queue %s to %s", queue, exchange);
    return after_refusal(a, rpc_error(a, amqp_get_rpc_reply(a->conn), what));
}

/* reopen_after_close acknowledges a channel.close and opens the channel again. With consumers on
 * it, the connection counts as lost instead (FC_ECONN): the broker dropped them without a cancel,
 * and the caller's reconnection consumes again. */
static int reopen_after_close(fc_amqp *a) {
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(a->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (has_consumers(a)) {
        snprintf(a->errstr, sizeof(a->errstr), "the broker closed the consuming channel");
        a->ok = 0;
        return FC_ECONN;
    }
    int rc = open_channel(a);
    if (rc == FC_OK) a->ok = 1;
    return rc;
}

/* probe_reply reads the answer to a passive declare on PROBE_CHANNEL: 0, FC_ENOTFOUND (the broker
 * closed the probe channel; it is opened again on the next probe), or a lost connection. */
static int probe_reply(fc_amqp *a, const char *what) {
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(a->conn);
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(a->conn, PROBE_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        a->probe_open = 0;
        return FC_ENOTFOUND;
    }
    return rpc_error(a, reply, what);
}

static int open_probe(fc_amqp *a) {
    if (a->probe_open) return FC_OK;
    amqp_channel_open(a->conn, PROBE_CHANNEL);
    int rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "channel.open");
    a->probe_open = rc == FC_OK;
    return rc;
}

int fc_amqp_queue_depth(fc_amqp *a, const char *queue, long *messages, long *consumers) {
    int rc = open_probe(a);
    if (rc != FC_OK) return rc;
    amqp_queue_declare_ok_t *r =
        amqp_queue_declare(a->conn, PROBE_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    rc = probe_reply(a, "queue depth");
    if (rc != FC_OK) return rc;
    if (messages) *messages = r->message_count;
    if (consumers) *consumers = r->consumer_count;
    return FC_OK;
}

int fc_amqp_exchange_exists(fc_amqp *a, const char *name) {
    int rc = open_probe(a);
    if (rc != FC_OK) return rc;
    amqp_exchange_declare(a->conn, PROBE_CHANNEL, amqp_cstring_bytes(name), amqp_cstring_bytes(""), 1, 0, 0, 0,
                          amqp_empty_table);
    return probe_reply(a, "exchange check");
}

int fc_amqp_delete_queue(fc_amqp *a, const char *queue) {
    amqp_queue_delete(a->conn, CHANNEL, amqp_cstring_bytes(queue), 0, 0);
    return rpc_error(a, amqp_get_rpc_reply(a->conn), "queue.delete");
}

int fc_amqp_delete_queue_if_empty(fc_amqp *a, const char *queue) {
    /* Quorum queues refuse queue.delete's if-empty flag (540, closing the connection): the depth is
     * asked first, then the queue deleted. A message published in between is lost with it, so callers
     * delete only queues nothing is published to any more. */
    long messages = 0;
    int rc = fc_amqp_queue_depth(a, queue, &messages, NULL);
    if (rc == FC_ENOTFOUND) return FC_OK;
    if (rc != FC_OK) return rc;
    if (messages > 0) return FC_EBUSY;
    amqp_queue_delete(a->conn, PROBE_CHANNEL, amqp_cstring_bytes(queue), 0, 0);
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(a->conn);
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        int code = ((amqp_channel_close_t *)reply.reply.decoded)->reply_code;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(a->conn, PROBE_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        a->probe_open = 0;
        return code == AMQP_NOT_FOUND ? FC_OK : code == AMQP_ACCESS_REFUSED ? FC_EACCESS : FC_EBROKER;
    }
    return rpc_error(a, reply, "queue.delete");
}

static int add_pending(fc_amqp *a, uint64_t seq, const char *message_id) {
    if (a->pend_head > 0 && a->pend_head == a->pend_len) a->pend_head = a->pend_len = 0;
    if (a->pend_len == a->pend_cap) {
        if (a->pend_head > a->pend_cap / 2) {
            memmove(a->pend, a->pend + a->pend_head, (a->pend_len - a->pend_head) * sizeof(*a->pend));
            a->pend_len -= a->pend_head;
            a->pend_head = 0;
        } else {
            size_t cap = a->pend_cap ? a->pend_cap * 2 : 64;
            pending_pub *p = realloc(a->pend, cap * sizeof(*p));
            if (!p) return FC_ENOMEM;
            a->pend = p;
            a->pend_cap = cap;
        }
    }
    char *id = strdup(message_id ? message_id : "");
    if (!id) return FC_ENOMEM;
    a->pend[a->pend_len].seq = seq;
    a->pend[a->pend_len].message_id = id;
    a->pend[a->pend_len].returned = 0;
    a->pend_len++;
    return FC_OK;
}

int fc_amqp_publish(fc_amqp *a, const char *exchange, const char *key, const fc_amqp_props *p,
                    const void *body, size_t len, uint64_t *seq) {
    if (!fc_amqp_ok(a)) return FC_ECONN;
    amqp_table_entry_t e[MAX_FIELDS];
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.content_type = amqp_cstring_bytes(p->content_type ? p->content_type : "application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.timestamp = (uint64_t)time(NULL);
    if (p->message_id) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(p->message_id);
    }
    if (p->nheaders) {
        if (p->nheaders > MAX_FIELDS) return FC_EINVAL;
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers = make_table(p->headers, p->nheaders, e);
    }
    /* Track it before it goes: once sent, a publish whose confirm cannot be matched would be
     * reported neither confirmed nor refused. */
    if (add_pending(a, a->next_seq, p->message_id) != FC_OK) return FC_ENOMEM;
    amqp_bytes_t b = {len, (void *)body};
    int st = amqp_basic_publish(a->conn, CHANNEL, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 1, 0,
                                &props, b);
    if (st != AMQP_STATUS_OK) {
        snprintf(a->errstr, sizeof(a->errstr), "publish: %s", amqp_error_string2(st));
        a->ok = 0;
        return FC_ECONN; /* the connection is gone, and its unconfirmed publishes with it */
    }
    *seq = a->next_seq++;
    return FC_OK;
}

/* free_tag returns a free consumer slot, or NULL. */
static int tag_slot(const fc_amqp *a, const char *tag) { return (int)((tag - a->consumer_tag[0]) / sizeof(a->consumer_tag[0])); }

static char *free_tag(fc_amqp *a) {
    for (int i = 0; i < FC_AMQP_CONSUMERS_MAX; i++)
        if (!a->consumer_tag[i][0]) return a->consumer_tag[i];
    return NULL;
}

int fc_amqp_consume(fc_amqp *a, const char *queue, int prefetch) {
    char *tag = free_tag(a);
    if (!tag) return FC_EINVAL;
    amqp_basic_qos(a->conn, CHANNEL, 0, (uint16_t)(prefetch > 65535 ? 65535 : prefetch), 0);
    int rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "basic.qos");
    if (rc != FC_OK) return rc;
    amqp_basic_consume_ok_t *ok =
        amqp_basic_consume(a->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "basic.consume");
    if (rc != FC_OK) return rc;
    snprintf(tag, sizeof(a->consumer_tag[0]), "%.*s", (int)ok->consumer_tag.len, (char *)ok->consumer_tag.bytes);
    snprintf(a->consumer_queue[tag_slot(a, tag)], sizeof(a->consumer_queue[0]), "%s", queue);
    return FC_OK;
}

/* queue_slot returns the consumer slot of queue, or -1. */
static int queue_slot(const fc_amqp *a, const char *queue) {
    for (int i = 0; i < FC_AMQP_CONSUMERS_MAX; i++)
        if (a->consumer_tag[i][0] && strcmp(a->consumer_queue[i], queue) == 0) return i;
    return -1;
}

int fc_amqp_consuming_queue(const fc_amqp *a, const char *queue) { return fc_amqp_ok(a) && queue_slot(a, queue) >= 0; }

int fc_amqp_cancel_queue(fc_amqp *a, const char *queue) {
    int i = queue_slot(a, queue), rc = FC_OK;
    if (i < 0) return FC_OK;
    if (fc_amqp_ok(a)) {
        amqp_basic_cancel(a->conn, CHANNEL, amqp_cstring_bytes(a->consumer_tag[i]));
        rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "basic.cancel");
    }
    a->consumer_tag[i][0] = '\0';
    return rc;
}

int fc_amqp_cancel(fc_amqp *a) {
    int rc = FC_OK;
    for (int i = 0; i < FC_AMQP_CONSUMERS_MAX; i++) {
        if (!a->consumer_tag[i][0]) continue;
        if (fc_amqp_ok(a) && rc == FC_OK) {
            amqp_basic_cancel(a->conn, CHANNEL, amqp_cstring_bytes(a->consumer_tag[i]));
            rc = rpc_error(a, amqp_get_rpc_reply(a->conn), "basic.cancel");
        }
        a->consumer_tag[i][0] = '\0';
    }
    return rc;
}

/* forget_tag frees the slot of the consumer the broker cancelled; returns its queue's name (in
 * the slot, valid until the slot is taken again), or "" when unknown. */
static const char *forget_tag(fc_amqp *a, amqp_bytes_t tag) {
    for (int i = 0; i < FC_AMQP_CONSUMERS_MAX; i++)
        if (a->consumer_tag[i][0] && strlen(a->consumer_tag[i]) == tag.len &&
            memcmp(a->consumer_tag[i], tag.bytes, tag.len) == 0) {
            a->consumer_tag[i][0] = '\0';
            return a->consumer_queue[i];
        }
    return "";
}

static int status_error(fc_amqp *a, int st, const char *what) {
    if (st == AMQP_STATUS_OK) return FC_OK;
    snprintf(a->errstr, sizeof(a->errstr), "%s: %s", what, amqp_error_string2(st));
    a->ok = 0;
    return FC_ECONN;
}

int fc_amqp_ack(fc_amqp *a, uint64_t tag) {
    if (!fc_amqp_ok(a)) return FC_ECONN;
    a->settled = 1;
    return status_error(a, amqp_basic_ack(a->conn, CHANNEL, tag, 0), "basic.ack");
}

int fc_amqp_ack_upto(fc_amqp *a, uint64_t tag) {
    if (!fc_amqp_ok(a)) return FC_ECONN;
    a->settled = 1;
    return status_error(a, amqp_basic_ack(a->conn, CHANNEL, tag, 1), "basic.ack");
}

int fc_amqp_nack(fc_amqp *a, uint64_t tag, int requeue) {
    if (!fc_amqp_ok(a)) return FC_ECONN;
    a->settled = 1;
    return status_error(a, amqp_basic_nack(a->conn, CHANNEL, tag, 0, requeue), "basic.nack");
}

/* settle reports the broker's verdict on seq (or on every seq up to it when multiple). The confirm
 * callback may publish, which can grow or compact pend, so entries are found by their place after
 * pend_head, which neither changes. */
static void settle(fc_amqp *a, uint64_t tag, int multiple, int nack, const fc_amqp_handler *h) {
    for (size_t k = 0; a->pend_head + k < a->pend_len; k++) {
        pending_pub *p = &a->pend[a->pend_head + k];
        if (p->seq > tag) break;
        if (!multiple && p->seq != tag) continue;
        if (p->seq == 0) continue; /* already settled */
        uint64_t seq = p->seq;
        int status = nack ? FC_ENACK : p->returned ? FC_EUNROUTABLE : FC_OK;
        free(p->message_id);
        p->message_id = NULL;
        p->seq = 0;
        if (h->confirm) h->confirm(h->ud, seq, status);
        if (!a->conn) return; /* the callback closed the connection, which forgot every publish */
    }
    while (a->pend_head < a->pend_len && a->pend[a->pend_head].seq == 0) a->pend_head++;
}

static void mark_returned(fc_amqp *a, const amqp_message_t *m) {
    if (!(m->properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)) return;
    for (size_t i = a->pend_head; i < a->pend_len; i++) {
        pending_pub *p = &a->pend[i];
        if (p->seq && p->message_id && strlen(p->message_id) == m->properties.message_id.len &&
            memcmp(p->message_id, m->properties.message_id.bytes, m->properties.message_id.len) == 0) {
            p->returned = 1;
            return;
        }
    }
}

static long header_i64(const amqp_basic_properties_t *p, const char *key) {
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != strlen(key) || memcmp(e->key.bytes, key, e->key.len) != 0) continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I64: return (long)e->value.value.i64;
        case AMQP_FIELD_KIND_I32: return e->value.value.i32;
        case AMQP_FIELD_KIND_U32: return (long)e->value.value.u32;
        case AMQP_FIELD_KIND_I16: return e->value.value.i16;
        default: return 0;
        }
    }
    return 0;
}

/* table_str copies the string value of key in t into out ("" if absent). */
static void table_str(const amqp_table_t *t, const char *key, char *out, size_t n) {
    out[0] = '\0';
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0 &&
            e->value.kind == AMQP_FIELD_KIND_UTF8)
            snprintf(out, n, "%.*s", (int)e->value.value.bytes.len, (char *)e->value.value.bytes.bytes);
    }
}

/* last_death fills reason and queue from the first (most recent) entry of the x-death header. */
static void last_death(const amqp_basic_properties_t *p, char *reason, char *queue, size_t n) {
    reason[0] = queue[0] = '\0';
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) return;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != 7 || memcmp(e->key.bytes, "x-death", 7) != 0 || e->value.kind != AMQP_FIELD_KIND_ARRAY ||
            e->value.value.array.num_entries < 1 || e->value.value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
            continue;
        const amqp_table_t *d = &e->value.value.array.entries[0].value.table;
        table_str(d, "reason", reason, n);
        table_str(d, "queue", queue, n);
    }
}

static const char *copy_bytes(header_copy *c, const amqp_bytes_t *b) {
    size_t room = sizeof(c->buf) - c->used;
    if (room == 0) return NULL;
    size_t len = b->len < room - 1 ? b->len : room - 1;
    char *s = c->buf + c->used;
    if (len) memcpy(s, b->bytes, len); /* an empty value may have no bytes at all */
    s[len] = '\0';
    c->used += len + 1;
    return s;
}

/* copy_headers keeps the string and integer headers of p; others (tables, arrays) are left out. */
static void copy_headers(const amqp_basic_properties_t *p, header_copy *c) {
    c->n = c->used = 0;
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) return;
    for (int i = 0; i < p->headers.num_entries && c->n < FC_AMQP_HEADERS_MAX; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        fc_amqp_field f = {NULL, NULL, 0, 1};
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES: f.is_num = 0; break;
        case AMQP_FIELD_KIND_I64: f.num = e->value.value.i64; break;
        case AMQP_FIELD_KIND_I32: f.num = e->value.value.i32; break;
        case AMQP_FIELD_KIND_U32: f.num = e->value.value.u32; break;
        case AMQP_FIELD_KIND_I16: f.num = e->value.value.i16; break;
        case AMQP_FIELD_KIND_U16: f.num = e->value.value.u16; break;
        case AMQP_FIELD_KIND_I8: f.num = e->value.value.i8; break;
        case AMQP_FIELD_KIND_U8: f.num = e->value.value.u8; break;
        default: continue;
        }
        if (!(f.key = copy_bytes(c, &e->key))) return;
        if (!f.is_num && !(f.str = copy_bytes(c, &e->value.value.bytes))) return;
        c->f[c->n++] = f;
    }
}

const char *fc_delivery_header(const fc_delivery *d, const char *key) {
    for (size_t i = 0; i < d->nheaders; i++)
        if (!d->headers[i].is_num && strcmp(d->headers[i].key, key) == 0) return d->headers[i].str;
    return NULL;
}

long long fc_delivery_header_num(const fc_delivery *d, const char *key, long long dflt) {
    for (size_t i = 0; i < d->nheaders; i++)
        if (d->headers[i].is_num && strcmp(d->headers[i].key, key) == 0) return d->headers[i].num;
    return dflt;
}

static void deliver(fc_amqp *a, amqp_envelope_t *env, const fc_amqp_handler *h) {
    char mid[256] = "", ctype[256] = "", rk[256], reason[256], queue[256];
    amqp_basic_properties_t *p = &env->message.properties;
    last_death(p, reason, queue, sizeof(reason));
    copy_headers(p, &a->hc);
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        snprintf(mid, sizeof(mid), "%.*s", (int)p->message_id.len, (char *)p->message_id.bytes);
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        snprintf(ctype, sizeof(ctype), "%.*s", (int)p->content_type.len, (char *)p->content_type.bytes);
    snprintf(rk, sizeof(rk), "%.*s", (int)env->routing_key.len, (char *)env->routing_key.bytes);
    fc_delivery d = {env->delivery_tag, env->message.body.bytes, env->message.body.len, mid, ctype, rk,
                     env->redelivered, header_i64(p, "x-delivery-count"), reason, queue, a->hc.f, a->hc.n};
    if (h->delivery) h->delivery(h->ud, &d);
}

/* handle_method deals with a non-delivery frame; returns 0 or FC_ECONN. */
static int handle_method(fc_amqp *a, amqp_frame_t *f, const fc_amqp_handler *h) {
    if (f->frame_type != AMQP_FRAME_METHOD) return FC_OK;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *m = f->payload.method.decoded;
        settle(a, m->delivery_tag, m->multiple, 0, h);
        return FC_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *m = f->payload.method.decoded;
        settle(a, m->delivery_tag, m->multiple, 1, h);
        return FC_OK;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(a->conn, f->channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) return rpc_error(a, r, "basic.return");
        mark_returned(a, &msg);
        amqp_destroy_message(&msg);
        return FC_OK;
    }
    case AMQP_BASIC_CANCEL_METHOD: {
        const char *queue = forget_tag(a, ((amqp_basic_cancel_t *)f->payload.method.decoded)->consumer_tag);
        if (h->cancelled) h->cancelled(h->ud, queue);
        return FC_OK;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(a->errstr, sizeof(a->errstr), "channel closed by broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        a->ok = 0;
        return FC_ECONN;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(a->errstr, sizeof(a->errstr), "connection closed by broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        a->ok = 0;
        return FC_ECONN;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        amqp_connection_blocked_t *m = f->payload.method.decoded;
        a->blocked = 1;
        fc_warn("broker blocked publishing: %.*s", (int)m->reason.len, (char *)m->reason.bytes);
        return FC_OK;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        a->blocked = 0;
        fc_info("broker unblocked publishing");
        return FC_OK;
    default: return FC_OK;
    }
}

/* poll_once reads one event; returns 1 if it handled one, 0 on timeout, FC_ECONN on loss. */
static int poll_once(fc_amqp *a, struct timeval *tv, const fc_amqp_handler *h) {
    amqp_envelope_t env;
    amqp_rpc_reply_t r = amqp_consume_message(a->conn, &env, tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        deliver(a, &env, h);
        amqp_destroy_envelope(&env);
        return 1;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, tv);
        if (st == AMQP_STATUS_TIMEOUT) return 0;
        if (st != AMQP_STATUS_OK) return status_error(a, st, "read frame");
        int rc = handle_method(a, &f, h);
        return rc == FC_OK ? 1 : rc;
    }
    return rpc_error(a, r, "consume");
}

int fc_amqp_poll(fc_amqp *a, int timeout_ms, const fc_amqp_handler *h) {
    if (!fc_amqp_ok(a)) return FC_ECONN;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int rc;
    while ((rc = poll_once(a, &tv, h)) == 1) {
        /* A callback may have closed the connection (a->conn is NULL then) or broken it. */
        if (!fc_amqp_ok(a)) return FC_ECONN;
        tv.tv_sec = 0;
        tv.tv_usec = 0;
    }
    if (!a->conn) return FC_ECONN;
    if (!amqp_frames_enqueued(a->conn)) amqp_maybe_release_buffers(a->conn);
    return rc < 0 ? FC_ECONN : FC_OK;
}
