/* Unit tests of the Redis client: URL redaction, which must hide exactly what the connector
 * would send to AUTH; error text without the password; a server that refuses AUTH, through a
 * tiny fake server on a loopback port (one thread, bounded in connections and time), and the
 * limiter's fallback over it. No Redis needed. */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
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
    if (strcmp(out, want) != 0) fail_msg("'%s' redacted to '%s', expected '%s'", url, out, want);
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

int main(void) {
    fc_log_setup(FC_LOG_OFF, FC_LOG_TEXT, "test_redis");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_password),
        cmocka_unit_test(test_redact_unparsable),
        cmocka_unit_test(test_redact_agrees_with_connector),
        cmocka_unit_test(test_errstr_scrubs_password),
        cmocka_unit_test(test_auth_refused_at_connect),
        cmocka_unit_test(test_read_only_answers_are_not_recovery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
