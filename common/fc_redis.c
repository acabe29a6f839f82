/* Redis client over hiredis: URL parsing, lazy reconnect, the primary found through Redis
 * Sentinel, replies in the project's own type. */
#include "fc_redis.h"

#include <hiredis/hiredis.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "fc_error.h"

/* A server's address. */
typedef struct node {
    char host[FC_REDIS_HOST_MAX];
    int port;
} node;

struct fc_redis {
    redisContext *ctx;   /* NULL while disconnected */
    node url;            /* the URL's host and port */
    node at;             /* the node connected to (or last tried): url, or the primary a sentinel named */
    int db;
    char user[FC_REDIS_USER_MAX];         /* ACL user; empty = "AUTH password" alone */
    char password[FC_REDIS_PASSWORD_MAX]; /* never logged; empty (and no user) = no AUTH */
    int timeout_ms;      /* connect and command timeout */
    node sentinels[FC_REDIS_SENTINELS_MAX];
    int nsentinels;      /* 0 = connect to url */
    int sentinel_first;  /* the sentinel asked first: the last one whose primary answered */
    int64_t checked_ms;  /* monotonic ms when a sentinel last confirmed (or named) the primary */
    char master[FC_REDIS_MASTER_MAX];
    int wrong_node;      /* a reply said the node is no primary now: drop it once the reply is taken */
    char errstr[256];    /* last error, the password scrubbed out */
    fc_redis_fault_fn fault; /* test seam, NULL in production */
    void *fault_arg;
};

/* A redis URL split into its parts: spans of the URL text, not copies. */
typedef struct url_parts {
    const char *user;  /* ACL user, NULL when the userinfo has no ':' before the password */
    size_t userlen;    /* 0: "AUTH password" alone */
    const char *pw;    /* password, NULL when the URL has no userinfo */
    size_t pwlen;
    const char *host;
    size_t hostlen;
    int port;
    int db;
} url_parts;

/* split_url parses redis://[[user]:password@]host[:port][/db] into u; 0 or FC_EINVAL (err set,
 * never quoting the URL). The userinfo ends at the LAST '@' (a host holds none, a password may),
 * the password is everything after its first ':' (all of it without one) and the user what
 * precedes that ':' (a user name holds no ':'). Both the connector and fc_redis_url_redact use
 * this one parser, so a redacted URL hides exactly what AUTH sends. */
static int split_url(const char *url, url_parts *u, char *err, size_t errlen) {
    memset(u, 0, sizeof(*u));
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "must start with redis://");
        return FC_EINVAL;
    }
    p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        u->pw = colon ? colon + 1 : p;
        u->pwlen = (size_t)(at - u->pw);
        if (colon) u->user = p, u->userlen = (size_t)(colon - p);
        if (u->pwlen >= FC_REDIS_PASSWORD_MAX) {
            snprintf(err, errlen, "password too long (max %d bytes)", FC_REDIS_PASSWORD_MAX - 1);
            return FC_EINVAL;
        }
        if (u->userlen >= FC_REDIS_USER_MAX) {
            snprintf(err, errlen, "user name too long (max %d bytes)", FC_REDIS_USER_MAX - 1);
            return FC_EINVAL;
        }
        p = at + 1;
    }
    u->host = p;
    u->hostlen = strcspn(p, ":/");
    if (u->hostlen == 0 || u->hostlen >= FC_REDIS_HOST_MAX) {
        snprintf(err, errlen, "missing or too long host");
        return FC_EINVAL;
    }
    p += u->hostlen;
    u->port = 6379;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "bad port");
            return FC_EINVAL;
        }
        u->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 15) {
            snprintf(err, errlen, "bad database number (0..15)");
            return FC_EINVAL;
        }
        u->db = (int)db;
    }
    return FC_OK;
}

/* parse_url fills r from url; 0 or FC_EINVAL (err set). */
static int parse_url(fc_redis *r, const char *url, char *err, size_t errlen) {
    url_parts u;
    int rc = split_url(url, &u, err, errlen);
    if (rc != FC_OK) return rc;
    if (u.pw) memcpy(r->password, u.pw, u.pwlen);
    r->password[u.pw ? u.pwlen : 0] = '\0';
    if (u.user) memcpy(r->user, u.user, u.userlen);
    r->user[u.user ? u.userlen : 0] = '\0';
    memcpy(r->url.host, u.host, u.hostlen);
    r->url.host[u.hostlen] = '\0';
    r->url.port = u.port;
    r->at = r->url;
    r->db = u.db;
    return FC_OK;
}

int fc_redis_url_redact(const char *url, char *out, size_t outlen) {
    url_parts u;
    char err[64];
    if (!url || split_url(url, &u, err, sizeof(err)) != FC_OK) {
        if (outlen) snprintf(out, outlen, "%s", FC_REDIS_URL_UNPARSABLE);
        return FC_EINVAL;
    }
    if (!outlen) return FC_OK;
    if (!u.pw || u.pwlen == 0)
        snprintf(out, outlen, "%s", url);
    else
        snprintf(out, outlen, "%.*s***%s", (int)(u.pw - url), url, u.pw + u.pwlen);
    return FC_OK;
}

fc_redis *fc_redis_new(const char *url, int timeout_ms, char *err, size_t errlen) {
    fc_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_url(r, url, err, errlen) != FC_OK) {
        free(r);
        return NULL;
    }
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    return r;
}

void fc_redis_free(fc_redis *r) {
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    memset(r->password, 0, sizeof(r->password));
    free(r);
}

static void disconnect(fc_redis *r) {
    if (r->ctx) redisFree(r->ctx);
    r->ctx = NULL;
    r->wrong_node = 0;
}

/* set_errstr sets errstr to prefix + text with every piece of the password in text replaced by
 * "***": a server may echo arguments in an error (an AUTH renamed away answers "unknown command
 * 'AUTH', with args beginning with: '<password>'", cut at 128 characters), and errstr is logged.
 * A piece is the whole password or a run of at least 8 of its first characters; the whole of
 * text is scanned before errstr is cut to size, so a cut never leaves a piece behind. */
static void set_errstr(fc_redis *r, const char *prefix, const char *text) {
    size_t cap = sizeof(r->errstr) - 1, pwlen = strlen(r->password);
    size_t o = (size_t)snprintf(r->errstr, sizeof(r->errstr), "%s", prefix);
    if (o > cap) o = cap;
    for (const char *p = text; *p && o < cap;) {
        size_t m = 0;
        while (m < pwlen && p[m] == r->password[m]) m++;
        if (pwlen && (m == pwlen || m >= 8)) {
            for (const char *st = "***"; *st && o < cap;) r->errstr[o++] = *st++;
            p += m;
        } else {
            r->errstr[o++] = *p++;
        }
    }
    r->errstr[o] = '\0';
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(int ms) { return (struct timeval){ms / 1000, (ms % 1000) * 1000}; }

/* auth_argv fills argv with the AUTH command r's URL asks for; returns its argc (0: no AUTH). */
static int auth_argv(const fc_redis *r, const char *argv[3]) {
    int argc = 0;
    argv[argc++] = "AUTH";
    if (r->user[0]) argv[argc++] = r->user;
    argv[argc++] = r->password;
    return r->user[0] || r->password[0] ? argc : 0;
}

/* setup_command runs a setup command (AUTH, SELECT) on c, a fresh context; 0, or FC_EREDIS
 * with errstr "<what> failed: <why>" (the reply or the I/O error, without the password). */
static int setup_command(fc_redis *r, redisContext *c, const char *what, int argc, const char **argv) {
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    int rc = FC_OK;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "%s failed: ", what);
        set_errstr(r, prefix, rep ? rep->str : c->errstr);
        rc = FC_EREDIS;
    }
    if (rep) freeReplyObject(rep);
    return rc;
}

/* connect_node connects to r->at and applies timeout, AUTH and SELECT. 0; FC_ECONN when
 * unreachable, FC_EREDIS when AUTH or SELECT failed (errstr says which); r->ctx NULL then. */
static int connect_node(fc_redis *r) {
    struct timeval tv = ms_tv(r->timeout_ms);
    r->ctx = redisConnectWithTimeout(r->at.host, r->at.port, tv);
    if (!r->ctx || r->ctx->err) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot connect to redis %s:%d: %s", r->at.host, r->at.port,
                 r->ctx ? r->ctx->errstr : "out of memory");
        disconnect(r);
        return FC_ECONN;
    }
    redisSetTimeout(r->ctx, tv);
    const char *auth[3], *select[2] = {"SELECT", NULL};
    char db[8];
    snprintf(db, sizeof(db), "%d", r->db);
    select[1] = db;
    int argc = auth_argv(r, auth);
    if ((argc && setup_command(r, r->ctx, "AUTH", argc, auth) != FC_OK) ||
        (r->db && setup_command(r, r->ctx, "SELECT", 2, select) != FC_OK)) {
        disconnect(r);
        return FC_EREDIS;
    }
    return FC_OK;
}

/* check_primary asks the node just connected for its ROLE: 0 when it is a primary, else
 * FC_ECONN with why in errstr (r->ctx dropped). A sentinel's answer may be stale for a moment
 * after a failover: the node it names may have become a replica. */
static int check_primary(fc_redis *r, const node *sentinel) {
    redisReply *rep = redisCommand(r->ctx, "ROLE");
    int ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
             rep->element[0]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, "master") == 0;
    char prefix[FC_REDIS_HOST_MAX + 64];
    snprintf(prefix, sizeof(prefix), "redis %s:%d: ", r->at.host, r->at.port);
    if (!rep) set_errstr(r, prefix, r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
    else if (rep->type == REDIS_REPLY_ERROR) set_errstr(r, prefix, rep->str);
    else if (!ok)
        snprintf(r->errstr, sizeof(r->errstr), "redis %s:%d, named by sentinel %s:%d, is not a primary (ROLE %s)",
                 r->at.host, r->at.port, sentinel->host, sentinel->port,
                 rep->type == REDIS_REPLY_ARRAY && rep->elements && rep->element[0]->type == REDIS_REPLY_STRING
                     ? rep->element[0]->str
                     : "unreadable");
    if (rep) freeReplyObject(rep);
    if (ok) return FC_OK;
    disconnect(r);
    return FC_ECONN;
}

/* read_primary reads a sentinel's answer to get-master-addr-by-name into *out: 0, or FC_ENOTFOUND
 * (the sentinel knows no such master), FC_EPARSE (not a [host, port] pair), FC_EREDIS (an error). */
static int read_primary(const redisReply *rep, node *out) {
    if (rep->type == REDIS_REPLY_NIL) return FC_ENOTFOUND;
    if (rep->type == REDIS_REPLY_ERROR) return FC_EREDIS;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING || rep->element[0]->len == 0 ||
        rep->element[0]->len >= sizeof(out->host))
        return FC_EPARSE;
    char *end;
    long port = strtol(rep->element[1]->str, &end, 10);
    if (end == rep->element[1]->str || *end || port < 1 || port > 65535) return FC_EPARSE;
    memcpy(out->host, rep->element[0]->str, rep->element[0]->len + 1);
    out->port = (int)port;
    return FC_OK;
}

/* sentinel_query sends get-master-addr-by-name on c; after a NOAUTH answer it sends the URL's
 * AUTH (a sentinel with requirepass) and asks again. Returns the reply (caller frees), or NULL
 * with *auth_failed set when that AUTH failed (errstr says why), or NULL on an I/O error. */
static redisReply *sentinel_query(fc_redis *r, redisContext *c, int *auth_failed) {
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->master}, *auth[3];
    redisReply *rep = redisCommandArgv(c, 3, argv, NULL);
    int argc = auth_argv(r, auth);
    if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0 && argc) {
        freeReplyObject(rep);
        *auth_failed = setup_command(r, c, "sentinel AUTH", argc, auth) != FC_OK;
        rep = *auth_failed ? NULL : redisCommandArgv(c, 3, argv, NULL);
    }
    return rep;
}

/* ask_sentinel asks sentinel s where the primary is, into *out: 0, or FC_ECONN with why in errstr. */
static int ask_sentinel(fc_redis *r, const node *s, node *out) {
    int ms = r->timeout_ms < FC_REDIS_SENTINEL_TIMEOUT_MS ? r->timeout_ms : FC_REDIS_SENTINEL_TIMEOUT_MS;
    struct timeval tv = ms_tv(ms);
    char prefix[FC_REDIS_HOST_MAX + 64];
    snprintf(prefix, sizeof(prefix), "sentinel %s:%d: ", s->host, s->port);
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) {
        set_errstr(r, prefix, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return FC_ECONN;
    }
    redisSetTimeout(c, tv);
    int auth_failed = 0;
    redisReply *rep = sentinel_query(r, c, &auth_failed);
    int rc = rep ? read_primary(rep, out) : FC_EIO;
    if (rc == FC_EIO && !auth_failed) set_errstr(r, prefix, c->errstr[0] ? c->errstr : "connection lost");
    else if (rc == FC_EREDIS) set_errstr(r, prefix, rep->str);
    else if (rc == FC_ENOTFOUND)
        snprintf(r->errstr, sizeof(r->errstr), "sentinel %s:%d knows no master named '%s'", s->host, s->port, r->master);
    else if (rc == FC_EPARSE) set_errstr(r, prefix, "unreadable answer to get-master-addr-by-name");
    if (rep) freeReplyObject(rep);
    redisFree(c);
    return rc == FC_OK ? FC_OK : FC_ECONN;
}

/* connect_via_sentinels asks the sentinels in turn, from the last good one, for the primary and
 * connects to the first address that answers as a primary (an address that failed is not tried
 * twice in a round). 0; FC_EREDIS when AUTH or SELECT failed there; else FC_ECONN, errstr
 * saying what the last attempt found. */
static int connect_via_sentinels(fc_redis *r) {
    node tried[FC_REDIS_SENTINELS_MAX];
    int ntried = 0;
    for (int k = 0; k < r->nsentinels; k++) {
        int i = (r->sentinel_first + k) % r->nsentinels;
        node primary;
        if (ask_sentinel(r, &r->sentinels[i], &primary) != FC_OK) continue;
        int seen = 0;
        for (int j = 0; j < ntried; j++)
            seen |= tried[j].port == primary.port && strcmp(tried[j].host, primary.host) == 0;
        if (seen) continue;
        tried[ntried++] = primary;
        r->at = primary;
        int rc = connect_node(r);
        if (rc == FC_OK) rc = check_primary(r, &r->sentinels[i]);
        if (rc == FC_OK) {
            r->sentinel_first = i;
            r->checked_ms = mono_ms();
        }
        if (rc != FC_ECONN) return rc;
    }
    char last[sizeof(r->errstr)];
    memcpy(last, r->errstr, sizeof(last));
    snprintf(r->errstr, sizeof(r->errstr), "no redis primary '%s' from %d sentinel%s; last: %s", r->master,
             r->nsentinels, r->nsentinels > 1 ? "s" : "", last);
    return FC_ECONN;
}

/* recheck_primary asks one sentinel, once per FC_REDIS_SENTINEL_CHECK_MS while connected, whether
 * the node connected to is still the primary, and drops the connection if it names another.
 * A switchover (SENTINEL FAILOVER) leaves the old primary taking writes, which its conversion
 * to a replica discards, until a sentinel's periodic INFO finds it, about 10 s later; a client
 * that waited for a READONLY would write into it all that time. A sentinel that does not
 * answer leaves the connection alone (errstr unchanged) and the next check asks the next one. */
static void recheck_primary(fc_redis *r) {
    int64_t now = mono_ms();
    if (!r->nsentinels || !r->ctx || now - r->checked_ms < FC_REDIS_SENTINEL_CHECK_MS) return;
    r->checked_ms = now;
    char saved[sizeof(r->errstr)];
    memcpy(saved, r->errstr, sizeof(saved));
    node primary;
    if (ask_sentinel(r, &r->sentinels[r->sentinel_first], &primary) != FC_OK) {
        memcpy(r->errstr, saved, sizeof(saved));
        r->sentinel_first = (r->sentinel_first + 1) % r->nsentinels;
        return;
    }
    if (primary.port != r->at.port || strcmp(primary.host, r->at.host) != 0) disconnect(r);
}

/* ensure_connected connects (again) when needed, through the sentinels if any, and re-applies
 * timeout, AUTH and SELECT. */
static int ensure_connected(fc_redis *r) {
    recheck_primary(r);
    if (r->ctx) return FC_OK;
    return r->nsentinels ? connect_via_sentinels(r) : connect_node(r);
}

/* convert copies a hiredis reply into out. */
static int convert(const redisReply *in, fc_reply *out) {
    memset(out, 0, sizeof(*out));
    switch (in->type) {
    case REDIS_REPLY_INTEGER:
        out->type = FC_REPLY_INT;
        out->integer = in->integer;
        return FC_OK;
    case REDIS_REPLY_NIL: out->type = FC_REPLY_NIL; return FC_OK;
    case REDIS_REPLY_ARRAY:
        out->type = FC_REPLY_ARRAY;
        out->nelem = in->elements;
        if (in->elements == 0) return FC_OK;
        out->elem = calloc(in->elements, sizeof(fc_reply));
        if (!out->elem) return FC_ENOMEM;
        for (size_t i = 0; i < in->elements; i++)
            if (convert(in->element[i], &out->elem[i]) != FC_OK) return FC_ENOMEM;
        return FC_OK;
    default:
        out->type = in->type == REDIS_REPLY_STATUS ? FC_REPLY_STATUS
                  : in->type == REDIS_REPLY_ERROR  ? FC_REPLY_ERROR
                                                   : FC_REPLY_STR;
        out->str = malloc(in->len + 1);
        if (!out->str) return FC_ENOMEM;
        memcpy(out->str, in->str, in->len);
        out->str[in->len] = '\0';
        out->len = in->len;
        return FC_OK;
    }
}

/* take turns a hiredis reply into the caller's reply and a return code (raw is not freed). An
 * error reply's text reaches the caller as it is in errstr: without the password. */
static int take(fc_redis *r, const redisReply *raw, fc_reply *out) {
    int rc = FC_OK;
    redisReply clean = *raw;
    if (raw->type == REDIS_REPLY_ERROR) {
        set_errstr(r, "", raw->str);
        rc = strncmp(raw->str, "NOSCRIPT", 8) == 0 ? FC_ENOSCRIPT : FC_EREDIS;
        if (strncmp(raw->str, "READONLY", 8) == 0 || strncmp(raw->str, "MASTERDOWN", 10) == 0) r->wrong_node = 1;
        clean.str = r->errstr;
        clean.len = strlen(r->errstr);
    }
    if (out && convert(&clean, out) != FC_OK) rc = FC_ENOMEM;
    return rc;
}

/* drop_wrong_node drops the connection when a reply said the node is no primary (a failover
 * demoted it): the next command connects again, through the sentinels if any. */
static void drop_wrong_node(fc_redis *r) {
    if (r->wrong_node) disconnect(r);
}

/* finish is take for a reply read from the connection (NULL: I/O failed); frees raw. */
static int finish(fc_redis *r, redisReply *raw, fc_reply *out) {
    if (!raw) {
        snprintf(r->errstr, sizeof(r->errstr), "redis %s:%d: %s", r->at.host, r->at.port,
                 r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        disconnect(r);
        return FC_ECONN;
    }
    int rc = take(r, raw, out);
    freeReplyObject(raw);
    return rc;
}

void fc_redis_set_fault(fc_redis *r, fc_redis_fault_fn fn, void *arg) {
    r->fault = fn;
    r->fault_arg = fn ? arg : NULL;
}

/* injected asks the fault seam about command cmd (len bytes): 0 when it is to run, else 1
 * with *rc and out set as if Redis had answered or the connection had dropped. */
static int injected(fc_redis *r, const char *cmd, size_t len, fc_reply *out, int *rc) {
    if (!r->fault) return 0;
    char name[32], text[sizeof(r->errstr)] = "";
    snprintf(name, sizeof(name), "%.*s", (int)(len < sizeof(name) ? len : sizeof(name) - 1), cmd);
    int f = r->fault(r->fault_arg, name, text, sizeof(text));
    if (f == FC_OK) return 0;
    if (f == FC_EREDIS) {
        redisReply fake = {.type = REDIS_REPLY_ERROR, .str = text, .len = strlen(text)};
        *rc = take(r, &fake, out);
        drop_wrong_node(r);
        return 1;
    }
    set_errstr(r, "", text[0] ? text : fc_strerror(f));
    if (f == FC_ECONN) disconnect(r);
    *rc = f;
    return 1;
}

int fc_redis_command(fc_redis *r, fc_reply *out, int argc, const char **argv, const size_t *lens) {
    if (out) memset(out, 0, sizeof(*out));
    int rc;
    if (argc > 0 && injected(r, argv[0], lens ? lens[0] : strlen(argv[0]), out, &rc)) return rc;
    rc = ensure_connected(r);
    if (rc != FC_OK) return rc;
    rc = finish(r, redisCommandArgv(r->ctx, argc, argv, lens), out);
    drop_wrong_node(r);
    return rc;
}

int fc_redis_cmd(fc_redis *r, fc_reply *out, const char *fmt, ...) {
    if (out) memset(out, 0, sizeof(*out));
    int rc;
    if (injected(r, fmt, strcspn(fmt, " "), out, &rc)) return rc;
    rc = ensure_connected(r);
    if (rc != FC_OK) return rc;
    va_list ap;
    va_start(ap, fmt);
    redisReply *raw = redisvCommand(r->ctx, fmt, ap);
    va_end(ap);
    rc = finish(r, raw, out);
    drop_wrong_node(r);
    return rc;
}

int fc_redis_pipeline(fc_redis *r, fc_reply *replies, size_t n, const int *argcs, const char ***argvs,
                      const size_t **lens) {
    int rc = ensure_connected(r);
    if (rc != FC_OK) return rc;
    for (size_t i = 0; i < n; i++) {
        if (redisAppendCommandArgv(r->ctx, argcs[i], argvs[i], lens ? lens[i] : NULL) != REDIS_OK) {
            disconnect(r);
            return FC_ENOMEM;
        }
    }
    int first = FC_OK;
    for (size_t i = 0; i < n; i++) {
        void *raw = NULL;
        if (redisGetReply(r->ctx, &raw) != REDIS_OK) raw = NULL;
        int one = finish(r, raw, replies ? &replies[i] : NULL);
        if (one != FC_OK && first == FC_OK) first = one;
        if (one == FC_ECONN) return first;
    }
    drop_wrong_node(r);
    return first;
}

const char *fc_redis_errstr(const fc_redis *r) { return r->errstr; }

void fc_reply_free(fc_reply *rep) {
    if (!rep) return;
    for (size_t i = 0; i < rep->nelem && rep->elem; i++) fc_reply_free(&rep->elem[i]);
    free(rep->elem);
    free(rep->str);
    memset(rep, 0, sizeof(*rep));
}

/* parse_port reads a decimal port 1..65535 from [p, end); -1 if it is not one. */
static int parse_port(const char *p, const char *end) {
    long v = 0;
    if (p == end || end - p > 5) return -1;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

/* parse_sentinel parses one entry "host:port" or "[v6addr]:port" of len bytes (spaces trimmed)
 * into *out; 0, or FC_EINVAL with why (naming entry number n) in err. */
static int parse_sentinel(const char *e, size_t len, int n, node *out, char *err, size_t errlen) {
    const char *end = e + len, *colon;
    const char *host = e, *hend;
    if (*e == '[') {
        host = e + 1;
        hend = memchr(host, ']', len - 1);
        colon = hend && hend + 1 < end && hend[1] == ':' ? hend + 1 : NULL;
    } else {
        colon = memchr(e, ':', len);
        hend = colon;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))) {
            snprintf(err, errlen, "entry %d '%.*s': more than one ':' (want host:port, IPv6 as [addr]:port)", n, (int)len, e);
            return FC_EINVAL;
        }
    }
    if (!colon) {
        snprintf(err, errlen, "entry %d '%.*s' has no port (want host:port)", n, (int)len, e);
        return FC_EINVAL;
    }
    if (hend == host || (size_t)(hend - host) >= sizeof(out->host)) {
        snprintf(err, errlen, "entry %d '%.*s': missing or too long host (want host:port)", n, (int)len, e);
        return FC_EINVAL;
    }
    out->port = parse_port(colon + 1, end);
    if (out->port < 0) {
        snprintf(err, errlen, "entry %d '%.*s': port must be a number 1..65535", n, (int)len, e);
        return FC_EINVAL;
    }
    memcpy(out->host, host, (size_t)(hend - host));
    out->host[hend - host] = '\0';
    return FC_OK;
}

/* parse_sentinels splits a comma-separated list into out (room for FC_REDIS_SENTINELS_MAX);
 * returns the count, or FC_EINVAL with why in err. Addresses are not secrets: errors quote them. */
static int parse_sentinels(const char *list, node *out, char *err, size_t errlen) {
    int n = 0;
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ",");
        const char *e = p, *next = p + len;
        while (e < next && isspace((unsigned char)*e)) e++;
        while (next > e && isspace((unsigned char)next[-1])) next--;
        if (next == e) {
            snprintf(err, errlen, "entry %d is empty (want host:port,host:port,...)", n + 1);
            return FC_EINVAL;
        }
        if (n == FC_REDIS_SENTINELS_MAX) {
            snprintf(err, errlen, "more than %d sentinels", FC_REDIS_SENTINELS_MAX);
            return FC_EINVAL;
        }
        if (parse_sentinel(e, (size_t)(next - e), n + 1, &out[n], err, errlen) != FC_OK) return FC_EINVAL;
        n++;
        p += len;
        if (!*p) return n;
    }
}

/* check_master checks a master name as sentinels know it: 0 or FC_EINVAL with why in err. */
static int check_master(const char *master, char *err, size_t errlen) {
    if (!master || !*master) {
        snprintf(err, errlen, "the master name (REDIS_SENTINEL_MASTER) is empty");
        return FC_EINVAL;
    }
    if (strlen(master) >= FC_REDIS_MASTER_MAX) {
        snprintf(err, errlen, "the master name (REDIS_SENTINEL_MASTER) is over %d bytes", FC_REDIS_MASTER_MAX - 1);
        return FC_EINVAL;
    }
    for (const char *p = master; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 127) {
            snprintf(err, errlen, "the master name (REDIS_SENTINEL_MASTER) holds a space or control character");
            return FC_EINVAL;
        }
    }
    return FC_OK;
}

int fc_redis_set_sentinels(fc_redis *r, const char *sentinels, const char *master, char *err, size_t errlen) {
    if (!sentinels || !*sentinels) {
        if (r->nsentinels) disconnect(r);
        r->nsentinels = 0;
        r->at = r->url;
        return FC_OK;
    }
    node parsed[FC_REDIS_SENTINELS_MAX];
    int n = parse_sentinels(sentinels, parsed, err, errlen);
    if (n < 0 || check_master(master, err, errlen) != FC_OK) return FC_EINVAL;
    disconnect(r);
    memcpy(r->sentinels, parsed, (size_t)n * sizeof(node));
    r->nsentinels = n;
    r->sentinel_first = 0;
    snprintf(r->master, sizeof(r->master), "%s", master);
    return FC_OK;
}
