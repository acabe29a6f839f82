/* Redis client over hiredis: URL parsing, lazy reconnect, replies in the project's own type. */
#include "fc_redis.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "fc_error.h"

struct fc_redis {
    redisContext *ctx;   /* NULL while disconnected */
    char host[FC_REDIS_HOST_MAX];
    int port;
    int db;
    char password[FC_REDIS_PASSWORD_MAX]; /* never logged; empty = no AUTH */
    int timeout_ms;      /* connect and command timeout */
    char errstr[256];    /* last error, the password scrubbed out */
    fc_redis_fault_fn fault; /* test seam, NULL in production */
    void *fault_arg;
};

/* A redis URL split into its parts: spans of the URL text, not copies. */
typedef struct url_parts {
    const char *pw;    /* password, NULL when the URL has no userinfo */
    size_t pwlen;
    const char *host;
    size_t hostlen;
    int port;
    int db;
} url_parts;

/* split_url parses redis://[[user]:password@]host[:port][/db] into u; 0 or FC_EINVAL (err set,
 * never quoting the URL). The userinfo ends at the LAST '@' (a host holds none, a password may),
 * and the password is everything after its first ':' (all of it without one). Both the connector
 * and fc_redis_url_redact use this one parser, so a redacted URL hides exactly what AUTH sends. */
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
        if (u->pwlen >= FC_REDIS_PASSWORD_MAX) {
            snprintf(err, errlen, "password too long (max %d bytes)", FC_REDIS_PASSWORD_MAX - 1);
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
    memcpy(r->host, u.host, u.hostlen);
    r->host[u.hostlen] = '\0';
    r->port = u.port;
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

/* simple_command runs a setup command (AUTH/SELECT) on a fresh context; 0 or FC_EREDIS. */
static int simple_command(fc_redis *r, const char *fmt, const char *arg) {
    redisReply *rep = redisCommand(r->ctx, fmt, arg);
    int rc = FC_OK;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        set_errstr(r, strncmp(fmt, "AUTH", 4) ? "SELECT failed: " : "AUTH failed: ", rep ? rep->str : r->ctx->errstr);
        rc = FC_EREDIS;
    }
    if (rep) freeReplyObject(rep);
    return rc;
}

/* ensure_connected connects (again) when needed and re-applies timeout, AUTH and SELECT. */
static int ensure_connected(fc_redis *r) {
    if (r->ctx) return FC_OK;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    r->ctx = redisConnectWithTimeout(r->host, r->port, tv);
    if (!r->ctx || r->ctx->err) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot connect to redis %s:%d: %s", r->host, r->port,
                 r->ctx ? r->ctx->errstr : "out of memory");
        disconnect(r);
        return FC_ECONN;
    }
    redisSetTimeout(r->ctx, tv);
    char db[8];
    snprintf(db, sizeof(db), "%d", r->db);
    if ((r->password[0] && simple_command(r, "AUTH %s", r->password) != FC_OK) ||
        (r->db && simple_command(r, "SELECT %s", db) != FC_OK)) {
        disconnect(r);
        return FC_EREDIS;
    }
    return FC_OK;
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
        clean.str = r->errstr;
        clean.len = strlen(r->errstr);
    }
    if (out && convert(&clean, out) != FC_OK) rc = FC_ENOMEM;
    return rc;
}

/* finish is take for a reply read from the connection (NULL: I/O failed); frees raw. */
static int finish(fc_redis *r, redisReply *raw, fc_reply *out) {
    if (!raw) {
        snprintf(r->errstr, sizeof(r->errstr), "redis %s:%d: %s", r->host, r->port,
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
    return finish(r, redisCommandArgv(r->ctx, argc, argv, lens), out);
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
    return finish(r, raw, out);
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

int fc_redis_set_sentinels(fc_redis *r, const char *sentinels, const char *master, char *err, size_t errlen) {
    (void)r;
    (void)master;
    if (!sentinels || !*sentinels) return FC_OK;
    snprintf(err, errlen, "Redis Sentinel is not supported yet");
    return FC_EINVAL;
}
