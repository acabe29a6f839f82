/* Unit tests of the Redis client: URL redaction, which must hide exactly what the connector
 * would send to AUTH; the AUTH a URL's userinfo makes (user and password, or password alone);
 * error text without the password; the sentinel list's parser; a server that refuses AUTH,
 * sentinels naming a primary, a replica or nothing, and a demoted primary answering READONLY,
 * through tiny fake servers on loopback ports (one thread each, bounded in connections and
 * time), and the limiter's fallback over them. No Redis needed. */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_limiter.h"
#include "fc_log.h"
#include "fc_redis.h"

/* redacts checks that url redacts to want with return code rc. */
static void redacts(const char *url, int rc, const char *want) {
    char out[512];
    memset(out, 'x', sizeof(out));
    assert_int_equal(fc_redis_url_redact(url, out, sizeof(out)), rc);
    if (strcmp(out, want) != 0) fail_msg("'%s' redacted to '%s', expected '%s'", url ? url : "(null)", out, want);
}

static void test_redact_password(void **state) {
    (void)state;
    redacts("redis://127.0.0.1:6379/0", FC_OK, "redis://127.0.0.1:6379/0");
    redacts("redis://:sec@host", FC_OK, "redis://:***@host");
    redacts("redis://:sec@host:6380/2", FC_OK, "redis://:***@host:6380/2");
    redacts("redis://user:sec@host", FC_OK, "redis://user:***@host");
    /* No ':' in the userinfo: all of it is the password (sent to AUTH). */
    redacts("redis://sec@host", FC_OK, "redis://***@host");
    redacts("redis://@host", FC_OK, "redis://@host");
    /* The userinfo ends at the last '@'; a password may hold '@', '/' and ':'. */
    redacts("redis://u:sec@ret@host:6379/0", FC_OK, "redis://u:***@host:6379/0");
    redacts("redis://:pa/ss@host", FC_OK, "redis://:***@host");
    redacts("redis://:a:b/c@d@127.0.0.1/1", FC_OK, "redis://:***@127.0.0.1/1");
}

static void test_redact_unparsable(void **state) {
    (void)state;
    /* Whatever fc_redis_new refuses gives the placeholder, never a piece of the URL. */
    const char *bad[] = {"http://:sec@host", ":sec@host", "redis://:sec@", "redis://:sec@host:99999",
                         "redis://:sec@host:12x", "redis://:sec@host/16", "redis://:sec@host/x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redacts(bad[i], FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
        char err[128];
        assert_null(fc_redis_new(bad[i], 100, err, sizeof(err)));
        assert_null(strstr(err, "sec"));
    }
    redacts(NULL, FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
    char long_pw[600] = "redis://:";
    memset(long_pw + 9, 'p', 300);
    strcpy(long_pw + 309, "@host");
    redacts(long_pw, FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
}

static void test_redact_agrees_with_connector(void **state) {
    (void)state;
    /* The URLs that redact fine are the URLs the connector accepts. */
    const char *good[] = {"redis://h", "redis://u:p@ss@h:1/15", "redis://:p/w@h/", "redis://h:6379"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char err[128], out[256];
        fc_redis *r = fc_redis_new(good[i], 100, err, sizeof(err));
        assert_non_null(r);
        fc_redis_free(r);
        assert_int_equal(fc_redis_url_redact(good[i], out, sizeof(out)), FC_OK);
    }
    /* A short buffer truncates, and still holds no password. */
    char small[12];
    assert_int_equal(fc_redis_url_redact("redis://:secret@h", small, sizeof(small)), FC_OK);
    assert_string_equal(small, "redis://:**");
    assert_int_equal(fc_redis_url_redact("redis://:secret@h", small, 0), FC_OK);
}

/* ---- Error text never holds the password ----------------------------------------- */

#define PW "hunter2-not-for-logs"

static int echo_password(void *arg, const char *cmd, char *text, size_t textlen) {
    (void)cmd;
    snprintf(text, textlen, "%s", (const char *)arg);
    return FC_EREDIS;
}

static void test_errstr_scrubs_password(void **state) {
    (void)state;
    char err[128];
    fc_redis *r = fc_redis_new("redis://:" PW "@127.0.0.1:1", 100, err, sizeof(err));
    assert_non_null(r);
    /* What Redis answers when AUTH was renamed away: it echoes the arguments. */
    const char *echo = "ERR unknown command 'AUTH', with args beginning with: '" PW "' ";
    fc_redis_set_fault(r, echo_password, (void *)echo);
    fc_reply rep;
    assert_int_equal(fc_redis_cmd(r, &rep, "AUTH %s", PW), FC_EREDIS);
    assert_string_equal(fc_redis_errstr(r), "ERR unknown command 'AUTH', with args beginning with: '***' ");
    assert_int_equal(rep.type, FC_REPLY_ERROR);
    assert_string_equal(rep.str, fc_redis_errstr(r));
    fc_reply_free(&rep);
    /* Redis cuts echoed arguments at 128 characters: a long password's head goes too. */
    const char *cut = "ERR unknown command 'AUTH', with args beginning with: 'hunter2-no'";
    fc_redis_set_fault(r, echo_password, (void *)cut);
    const char *argv[] = {"AUTH", PW};
    assert_int_equal(fc_redis_command(r, NULL, 2, argv, NULL), FC_EREDIS);
    assert_null(strstr(fc_redis_errstr(r), "hunter2"));
    /* NOSCRIPT is told apart; other text is kept. */
    fc_redis_set_fault(r, echo_password, (void *)"NOSCRIPT No matching script.");
    assert_int_equal(fc_redis_cmd(r, NULL, "EVALSHA x 0"), FC_ENOSCRIPT);
    fc_redis_set_fault(r, NULL, NULL);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_ECONN); /* port 1: refused */
    assert_null(strstr(fc_redis_errstr(r), "hunter2"));
    fc_redis_free(r);
}

/* ---- A fake server that refuses AUTH ------------------------------------------------ */

/* The fake answers each request (one read: the client waits for each reply) with what answer
 * makes of it, until the client closes or is idle for 2 s. It serves at most 50 connections and
 * gives up after 10 s without one. */
typedef const char *(*fake_answer_fn)(const char *request);

typedef struct fake_server {
    int fd;
    int port;
    fake_answer_fn answer;
    int connections, requests;
    char first_request[512]; /* NUL-terminated start of the first request */
    char all[4096];          /* every request, one after the other, NUL-terminated (cut when full) */
    pthread_t thread;
} fake_server;

static void fake_converse(fake_server *f, int c) {
    for (int n = 0; n < 1000; n++) {
        struct pollfd q = {c, POLLIN, 0};
        char buf[512];
        ssize_t got = poll(&q, 1, 2000) > 0 ? read(c, buf, sizeof(buf) - 1) : -1;
        if (got <= 0) return;
        buf[got] = '\0';
        if (f->requests++ == 0) memcpy(f->first_request, buf, (size_t)got + 1);
        size_t used = strlen(f->all);
        snprintf(f->all + used, sizeof(f->all) - used, "%s", buf);
        const char *reply = f->answer(buf);
        ssize_t w = write(c, reply, strlen(reply));
        (void)w;
    }
}

static void *fake_serve(void *arg) {
    fake_server *f = arg;
    for (int n = 0; n < 50; n++) {
        struct pollfd p = {f->fd, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0) break;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) break;
        f->connections++;
        fake_converse(f, c);
        close(c);
    }
    return NULL;
}

static void fake_start(fake_server *f, fake_answer_fn answer) {
    memset(f, 0, sizeof(*f));
    f->answer = answer;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->fd, 8), 0);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_serve, f), 0);
}

/* fake_client starts f answering with answer and returns a client of it (password "" for none). */
static fc_redis *fake_client(fake_server *f, fake_answer_fn answer, const char *password) {
    fake_start(f, answer);
    char url[128], err[128];
    snprintf(url, sizeof(url), "redis://%s%s%s127.0.0.1:%d/0", *password ? ":" : "", password, *password ? "@" : "",
             f->port);
    fc_redis *r = fc_redis_new(url, 1000, err, sizeof(err));
    assert_non_null(r);
    return r;
}

static void fake_stop(fake_server *f) {
    shutdown(f->fd, SHUT_RDWR); /* wakes the poll */
    pthread_join(f->thread, NULL);
    close(f->fd);
}

static int64_t clock_now = 1000000000;
static int64_t test_clock(void *arg) {
    (void)arg;
    return clock_now;
}

/* limiter_over returns a limiter (1 call/s, burst 2) over r on the test clock. */
static fc_limiter *limiter_over(fc_redis *r, int fallback) {
    fc_limiter_conf c = {.prefix = "t", .api = "a", .calls = {1, 2}, .fallback = fallback};
    fc_limiter *l = fc_limiter_new(r, &c);
    assert_non_null(l);
    fc_limiter_set_clock(l, test_clock, NULL);
    return l;
}

static const char *wrongpass(const char *request) {
    (void)request;
    return "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
}

static void test_auth_refused_at_connect(void **state) {
    (void)state;
    fake_server f;
    fc_redis *r = fake_client(&f, wrongpass, PW);
    fc_reply rep;
    assert_int_equal(fc_redis_cmd(r, &rep, "PING"), FC_EREDIS);
    assert_string_equal(fc_redis_errstr(r), "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.");
    assert_int_equal(rep.type, FC_REPLY_NIL); /* nothing answered the command itself */
    /* A limiter over it: no grant from Redis; the fallback decides, and AUTH is tried again
     * (a reconnect) once the backoff ends. */
    fc_limiter *l = limiter_over(r, FC_LIMITER_PAUSE);
    long wait;
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(wait, 100);
    fc_limiter_free(l);
    l = limiter_over(r, FC_LIMITER_LOCAL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_OK); /* the burst of 2, locally */
        assert_int_equal(wait, 0);
    }
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_OK);
    assert_int_equal(wait, 1000); /* then 1/s */
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.local_grants, 3);
    fc_limiter_free(l);
    fc_redis_free(r);
    fake_stop(&f);
    assert_int_equal(f.connections, 3); /* one per attempt: each found AUTH refused */
    assert_non_null(strstr(f.first_request, "AUTH"));
}

/* oom answers like a Redis at maxmemory with noeviction: the script's read-only modes ('q'
 * pause query, 'u' usage) run, every other command that writes is refused. */
static const char *oom(const char *request) {
    if (strstr(request, "\r\nq\r\n") || strstr(request, "\r\nu\r\n")) return "*2\r\n:0\r\n:0\r\n";
    return "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
}

static void test_read_only_answers_are_not_recovery(void **state) {
    (void)state;
    fake_server f;
    fc_redis *r = fake_client(&f, oom, "");
    fc_limiter *l = limiter_over(r, FC_LIMITER_PAUSE);
    long wait;
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(wait, 100);
    /* The pause query still answers; that does not make Redis able to grant again. */
    clock_now += 100000;
    assert_int_equal(fc_limiter_pause_left_us(l, 1), 0);
    double usage;
    assert_int_equal(fc_limiter_usage(l, &usage), FC_OK);
    /* So the backoff goes on doubling (it would restart at 100 ms after a recovery). */
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(wait, 200);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.redis_failures, 2);
    fc_limiter_free(l);
    fc_redis_free(r);
    fake_stop(&f);
    assert_int_equal(f.connections, 1);
    assert_int_equal(f.requests, 4);
}

/* ---- The AUTH a URL makes ------------------------------------------------------------- */

static const char *ok_to_all(const char *request) {
    return strstr(request, "PING") ? "+PONG\r\n" : "+OK\r\n";
}

/* first_request_for returns what a client of url (its "%d" the fake's port) sends first, and the
 * number of requests a PING costs on a fresh connection. */
static void auth_for(const char *url_fmt, const char *want_first, int want_requests) {
    fake_server f;
    fake_start(&f, ok_to_all);
    char url[128], err[128];
    snprintf(url, sizeof(url), url_fmt, f.port);
    fc_redis *r = fc_redis_new(url, 1000, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    fc_redis_free(r);
    fake_stop(&f);
    if (strcmp(f.first_request, want_first) != 0) fail_msg("%s sent first '%s'", url_fmt, f.first_request);
    assert_int_equal(f.requests, want_requests);
}

static void test_auth_user_and_password(void **state) {
    (void)state;
    /* An ACL user: AUTH user password (Redis 6+). */
    auth_for("redis://fcuser:pw@127.0.0.1:%d/0", "*3\r\n$4\r\nAUTH\r\n$6\r\nfcuser\r\n$2\r\npw\r\n", 2);
    /* requirepass: AUTH password, with or without the ':'. */
    auth_for("redis://:pw@127.0.0.1:%d", "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", 2);
    auth_for("redis://pw@127.0.0.1:%d", "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", 2);
    /* The password is what follows the first ':' up to the last '@'. */
    auth_for("redis://u:p:w@x@127.0.0.1:%d", "*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$5\r\np:w@x\r\n", 2);
    /* A user with an empty password (an ACL user with nopass) still authenticates as that user. */
    auth_for("redis://fcuser:@127.0.0.1:%d", "*3\r\n$4\r\nAUTH\r\n$6\r\nfcuser\r\n$0\r\n\r\n", 2);
    /* No userinfo, or an empty one: no AUTH. A db other than 0 adds SELECT. */
    auth_for("redis://127.0.0.1:%d/0", "*1\r\n$4\r\nPING\r\n", 1);
    auth_for("redis://@127.0.0.1:%d", "*1\r\n$4\r\nPING\r\n", 1);
    auth_for("redis://u:pw@127.0.0.1:%d/3", "*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw\r\n", 3);
}

static void test_user_in_url(void **state) {
    (void)state;
    /* The user stays visible in redacted URLs; only the password is hidden. */
    redacts("redis://fcuser:pw@h:6380/2", FC_OK, "redis://fcuser:***@h:6380/2");
    redacts("redis://fcuser:@h", FC_OK, "redis://fcuser:@h");
    char url[300] = "redis://", err[128];
    memset(url + 8, 'u', 200);
    strcpy(url + 208, ":pw@h");
    assert_null(fc_redis_new(url, 100, err, sizeof(err)));
    assert_string_equal(err, "user name too long (max 127 bytes)");
    redacts(url, FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
}

/* ---- The sentinel list ------------------------------------------------------------- */

/* sentinels_refused checks that list (with master) is refused with an error containing want. */
static void sentinels_refused(const char *list, const char *master, const char *want) {
    char err[200] = "", e2[128];
    fc_redis *r = fc_redis_new("redis://127.0.0.1:1", 100, e2, sizeof(e2));
    assert_non_null(r);
    assert_int_equal(fc_redis_set_sentinels(r, list, master, err, sizeof(err)), FC_EINVAL);
    if (!strstr(err, want)) fail_msg("'%s' refused with '%s', expected '%s'", list, err, want);
    fc_redis_free(r);
}

static void test_sentinel_list(void **state) {
    (void)state;
    char err[200];
    fc_redis *r = fc_redis_new("redis://:pw@127.0.0.1:1/2", 100, err, sizeof(err));
    assert_non_null(r);
    const char *good[] = {"127.0.0.1:26379", " a:1 , b.example:2,c:65535 ", "[::1]:26379,h:1", NULL, ""};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (fc_redis_set_sentinels(r, good[i], "mymaster", err, sizeof(err)) != FC_OK)
            fail_msg("'%s' refused: %s", good[i] ? good[i] : "(null)", err);
    fc_redis_free(r);

    sentinels_refused("a:1,,b:2", "m", "entry 2 is empty");
    sentinels_refused("a:1,", "m", "entry 2 is empty");
    sentinels_refused(" ", "m", "entry 1 is empty");
    sentinels_refused("sentinel-a", "m", "entry 1 'sentinel-a' has no port (want host:port)");
    sentinels_refused("a:1, b", "m", "entry 2 'b' has no port");
    sentinels_refused("a:0", "m", "entry 1 'a:0': port must be a number 1..65535");
    sentinels_refused("a:65536", "m", "port must be a number 1..65535");
    sentinels_refused("a:26379x", "m", "entry 1 'a:26379x': port must be");
    sentinels_refused("a:", "m", "entry 1 'a:': port must be");
    sentinels_refused("a:-1", "m", "port must be");
    sentinels_refused(":26379", "m", "entry 1 ':26379': missing or too long host");
    sentinels_refused("[]:26379", "m", "missing or too long host");
    sentinels_refused("::1:26379", "m", "entry 1 '::1:26379': more than one ':' (want host:port, IPv6 as [addr]:port)");
    sentinels_refused("[::1]26379", "m", "has no port");
    sentinels_refused("a:1;b:2", "m", "entry 1 'a:1;b:2': more than one ':'");
    sentinels_refused("a:1 b:2", "m", "more than one ':'");
    sentinels_refused("a:1 ,b:x", "m", "entry 2 'b:x': port must be");
    char many[400] = "";
    for (int i = 0; i < FC_REDIS_SENTINELS_MAX + 1; i++) strcat(many, i ? ",h:1" : "h:1");
    sentinels_refused(many, "m", "more than 16 sentinels");
    sentinels_refused("a:1", "", "master name (REDIS_SENTINEL_MASTER) is empty");
    sentinels_refused("a:1", NULL, "master name (REDIS_SENTINEL_MASTER) is empty");
    sentinels_refused("a:1", "my master", "space or control character");
    char long_master[200];
    memset(long_master, 'm', sizeof(long_master) - 1);
    long_master[sizeof(long_master) - 1] = '\0';
    sentinels_refused("a:1", long_master, "over 127 bytes");
}

/* ---- Sentinels naming the primary ---------------------------------------------------- */

/* What the fakes answer, set by each test before the client asks (then read by the fakes' threads). */
static _Atomic int primary_port;   /* the port the fake sentinel names */
static _Atomic int primary_role;   /* 0 master, 1 slave */
static _Atomic int sentinel_mode;  /* 0 names the primary, 1 knows no such master, 2 wants AUTH first */
static _Atomic int sentinel_authed;
static _Atomic int readonly_sets;  /* the primary answers SET with READONLY */

static const char *fake_sentinel(const char *request) {
    static _Thread_local char buf[128];
    if (strstr(request, "AUTH")) {
        sentinel_authed = 1;
        return "+OK\r\n";
    }
    if (!strstr(request, "get-master-addr-by-name") || !strstr(request, "mymaster")) return "-ERR unexpected\r\n";
    if (sentinel_mode == 1) return "*-1\r\n";
    if (sentinel_mode == 2 && !sentinel_authed) return "-NOAUTH Authentication required.\r\n";
    char port[8];
    int n = snprintf(port, sizeof(port), "%d", (int)primary_port);
    snprintf(buf, sizeof(buf), "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n", n, port);
    return buf;
}

static const char *fake_node(const char *request) {
    if (strstr(request, "ROLE"))
        return primary_role ? "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n"
                            : "*3\r\n$6\r\nmaster\r\n:10\r\n*0\r\n";
    if (strstr(request, "SET") && readonly_sets) return "-READONLY You can't write against a read only replica.\r\n";
    return ok_to_all(request);
}

/* sentinel_client returns a client of url_fmt (its "%d" port 1: the URL's address is unused)
 * following the sentinels at 127.0.0.1:1 (nothing there) and the fake s. */
static fc_redis *sentinel_client(const char *url_fmt, const fake_server *s) {
    char url[128], list[64], err[128];
    snprintf(url, sizeof(url), url_fmt, 1);
    snprintf(list, sizeof(list), "127.0.0.1:1,127.0.0.1:%d", s->port);
    fc_redis *r = fc_redis_new(url, 1000, err, sizeof(err));
    assert_non_null(r);
    assert_int_equal(fc_redis_set_sentinels(r, list, "mymaster", err, sizeof(err)), FC_OK);
    return r;
}

static void test_sentinel_names_primary(void **state) {
    (void)state;
    fake_server s, p;
    fake_start(&p, fake_node);
    fake_start(&s, fake_sentinel);
    primary_port = p.port;
    primary_role = 0;
    sentinel_mode = 0;
    readonly_sets = 0;
    fc_redis *r = sentinel_client("redis://fcuser:" PW "@127.0.0.1:%d/2", &s);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    assert_string_equal(s.first_request, "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n");
    /* At the primary: AUTH as the URL's user, SELECT the URL's db, ROLE, then the command. */
    assert_non_null(strstr(p.all, "AUTH\r\n$6\r\nfcuser\r\n"));
    assert_non_null(strstr(p.all, "SELECT\r\n$1\r\n2\r\n"));
    assert_non_null(strstr(p.all, "ROLE"));
    assert_int_equal(p.requests, 4);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK); /* the connection is kept */
    assert_int_equal(s.connections, 1);

    /* A failover demoted it: READONLY drops the connection, the next command asks again. */
    readonly_sets = 1;
    fc_reply rep;
    assert_int_equal(fc_redis_cmd(r, &rep, "SET k v"), FC_EREDIS);
    assert_int_equal(rep.type, FC_REPLY_ERROR);
    assert_string_equal(fc_redis_errstr(r), "READONLY You can't write against a read only replica.");
    fc_reply_free(&rep);
    readonly_sets = 0;
    assert_int_equal(fc_redis_cmd(r, NULL, "SET k v"), FC_OK);
    assert_int_equal(s.connections, 2);
    assert_int_equal(p.connections, 2);
    /* The same through the fault seam: an injected READONLY drops the connection too. */
    fc_redis_set_fault(r, echo_password, (void *)"READONLY You can't write against a read only replica.");
    assert_int_equal(fc_redis_cmd(r, NULL, "SET k v"), FC_EREDIS);
    fc_redis_set_fault(r, NULL, NULL);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    assert_int_equal(s.connections, 3);
    assert_null(strstr(fc_redis_errstr(r), PW));
    fc_redis_free(r);
    fake_stop(&s);
    fake_stop(&p);
}

static void test_sentinel_moved_primary(void **state) {
    (void)state;
    fake_server s, a, b;
    fake_start(&a, fake_node);
    fake_start(&b, fake_node);
    fake_start(&s, fake_sentinel);
    primary_port = a.port;
    primary_role = 0;
    sentinel_mode = 0;
    readonly_sets = 0;
    fc_redis *r = sentinel_client("redis://:" PW "@127.0.0.1:%d", &s);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    /* A switchover: the sentinel names b, a still answers as a primary. Within the check period
     * the client stays; after it, one question to the sentinel moves it to b. */
    primary_port = b.port;
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    assert_int_equal(s.connections, 1);
    usleep((FC_REDIS_SENTINEL_CHECK_MS + 50) * 1000);
    assert_int_equal(fc_redis_cmd(r, NULL, "SET k v"), FC_OK);
    assert_int_equal(s.connections, 3); /* the check, then the reconnect asks the sentinels */
    assert_int_equal(b.connections, 1);
    assert_non_null(strstr(b.all, "SET"));
    assert_null(strstr(a.all, "SET"));
    /* Sentinels gone: the connection to the primary is kept, and the last error is not theirs. */
    fake_stop(&s);
    char before[256];
    snprintf(before, sizeof(before), "%s", fc_redis_errstr(r));
    usleep((FC_REDIS_SENTINEL_CHECK_MS + 50) * 1000);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    assert_string_equal(fc_redis_errstr(r), before);
    assert_int_equal(b.connections, 1);
    fc_redis_free(r);
    fake_stop(&a);
    fake_stop(&b);
}

static void test_sentinel_wants_auth(void **state) {
    (void)state;
    fake_server s, p;
    fake_start(&p, fake_node);
    fake_start(&s, fake_sentinel);
    primary_port = p.port;
    primary_role = 0;
    sentinel_mode = 2;
    sentinel_authed = 0;
    fc_redis *r = sentinel_client("redis://:" PW "@127.0.0.1:%d", &s);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_OK);
    assert_non_null(strstr(s.all, "AUTH\r\n$20\r\n" PW));
    assert_int_equal(s.requests, 3); /* refused, AUTH, asked again */
    fc_redis_free(r);
    fake_stop(&s);
    fake_stop(&p);
}

static void test_sentinel_finds_no_primary(void **state) {
    (void)state;
    fake_server s, p;
    fake_start(&p, fake_node);
    fake_start(&s, fake_sentinel);
    /* The node named answers ROLE as a replica (the sentinel's view is stale): not used. */
    primary_port = p.port;
    primary_role = 1;
    sentinel_mode = 0;
    fc_redis *r = sentinel_client("redis://:" PW "@127.0.0.1:%d", &s);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_ECONN);
    char want[200];
    snprintf(want, sizeof(want),
             "no redis primary 'mymaster' from 2 sentinels; last: redis 127.0.0.1:%d, named by sentinel "
             "127.0.0.1:%d, is not a primary (ROLE slave)",
             p.port, s.port);
    assert_string_equal(fc_redis_errstr(r), want);
    assert_null(strstr(p.all, "PING"));
    /* Both sentinels name a primary that is gone (before the failover): tried once, and said. */
    char list[64], err[128];
    primary_port = 1;
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", s.port, s.port);
    assert_int_equal(fc_redis_set_sentinels(r, list, "mymaster", err, sizeof(err)), FC_OK);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_ECONN);
    assert_string_equal(fc_redis_errstr(r),
                        "no redis primary 'mymaster' from 2 sentinels; last: cannot connect to redis 127.0.0.1:1: "
                        "Connection refused");
    /* A sentinel that knows no such master; then none reachable. */
    sentinel_mode = 1;
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_ECONN);
    snprintf(want, sizeof(want), "sentinel 127.0.0.1:%d knows no master named 'mymaster'", s.port);
    assert_non_null(strstr(fc_redis_errstr(r), want));
    fake_stop(&s);
    assert_int_equal(fc_redis_cmd(r, NULL, "PING"), FC_ECONN);
    assert_non_null(strstr(fc_redis_errstr(r), "no redis primary 'mymaster' from 2 sentinels; last: sentinel 127.0.0.1:"));
    assert_null(strstr(fc_redis_errstr(r), PW));
    fc_redis_free(r);
    fake_stop(&p);
}

int main(void) {
    fc_log_setup(FC_LOG_OFF, FC_LOG_TEXT, "test_redis");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_password),
        cmocka_unit_test(test_redact_unparsable),
        cmocka_unit_test(test_redact_agrees_with_connector),
        cmocka_unit_test(test_errstr_scrubs_password),
        cmocka_unit_test(test_auth_refused_at_connect),
        cmocka_unit_test(test_read_only_answers_are_not_recovery),
        cmocka_unit_test(test_auth_user_and_password),
        cmocka_unit_test(test_user_in_url),
        cmocka_unit_test(test_sentinel_list),
        cmocka_unit_test(test_sentinel_names_primary),
        cmocka_unit_test(test_sentinel_moved_primary),
        cmocka_unit_test(test_sentinel_wants_auth),
        cmocka_unit_test(test_sentinel_finds_no_primary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
