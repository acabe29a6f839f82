/* Tests of the HTTP client against real sockets on loopback: a server thread that answers with
 * a canned response, and a listener that never answers (the request must time out even when
 * nothing else is going on). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_http.h"

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* listen_loopback opens a listening socket on 127.0.0.1 and an ephemeral port. */
static int listen_loopback(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 256), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct server {
    int fd;
    int requests;         /* answered on one kept-alive connection */
    const char *response; /* the answer to each, whole; NULL: a 429 with Retry-After: 3 */
    int delay_ms;         /* before each answer */
    char first_request[4096];
} server;

/* read_request reads one request from c into buf (NUL-terminated): the headers, then Content-Length bytes of
 * body. Returns a pointer to the body in buf, or NULL if the connection ended first. */
static char *read_request(int c, char *buf, size_t size) {
    size_t n = 0;
    char *end = NULL;
    long body = -1;
    buf[0] = '\0';
    while (n < size - 1) {
        ssize_t r = read(c, buf + n, size - 1 - n);
        if (r <= 0) return NULL;
        n += (size_t)r;
        buf[n] = '\0';
        if (!end && (end = strstr(buf, "\r\n\r\n"))) {
            char *cl = strstr(buf, "Content-Length: ");
            body = cl ? strtol(cl + 16, NULL, 10) : 0;
        }
        if (end && (long)(n - (size_t)(end + 4 - buf)) >= body) return end + 4;
    }
    return NULL;
}

/* serve accepts one connection and answers `requests` requests on it with s->response (default: a 429 and a
 * small body). */
static void *serve(void *arg) {
    server *s = arg;
    int c = accept(s->fd, NULL, NULL);
    for (int i = 0; c >= 0 && i < s->requests; i++) {
        char buf[4096];
        read_request(c, buf, sizeof(buf));
        if (i == 0) snprintf(s->first_request, sizeof(s->first_request), "%s", buf);
        if (s->delay_ms) poll(NULL, 0, s->delay_ms);
        const char *resp = s->response ? s->response
                                       : "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Type: "
                                         "application/json\r\nContent-Length: 16\r\n\r\n{\"error\":\"slow\"}";
        if (write(c, resp, strlen(resp)) < 0) break;
    }
    if (c >= 0) close(c);
    return NULL;
}

/* run waits for one finished request, at most limit_ms; returns 1 with *d filled, else 0. */
static int run(fc_http *h, fc_http_done *d, long long limit_ms) {
    long long until = now_ms() + limit_ms;
    assert_int_equal(fc_http_kick(h), FC_OK);
    while (now_ms() < until) {
        if (fc_http_next(h, d)) return 1;
        assert_int_equal(fc_http_wait(h, NULL, 0, 1000), FC_OK);
    }
    return 0;
}

static void test_answer_and_keepalive(void **state) {
    int port;
    server s = {.fd = listen_loopback(&port), .requests = 3};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, serve, &s), 0);
    fc_http_conf conf = {.bearer = "sk-test", .user_agent = "ua-test", .timeout_ms = 5000, .connect_timeout_ms = 2000};
    fc_http *h = fc_http_new(&conf);
    assert_non_null(h);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    for (int i = 0; i < 3; i++) { /* one after the other: all three must reuse the one connection */
        int tag = i;
        fc_http_done d;
        assert_int_equal(fc_http_post(h, url, "{\"a\":1}", 7, &tag), FC_OK);
        assert_int_equal(fc_http_running(h), 1);
        assert_true(run(h, &d, 5000));
        assert_ptr_equal(d.ud, &tag);
        assert_int_equal(d.err, 0);
        assert_int_equal(d.status, 429);
        assert_int_equal(d.retry_after_s, 3);
        assert_int_equal(d.len, 16);
        assert_memory_equal(d.body, "{\"error\":\"slow\"}", 16);
        assert_int_equal(fc_http_running(h), 0);
    }
    pthread_join(t, NULL);
    assert_non_null(strstr(s.first_request, "POST /v1/chat/completions HTTP/1.1\r\n"));
    assert_non_null(strstr(s.first_request, "Authorization: Bearer sk-test\r\n"));
    assert_non_null(strstr(s.first_request, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(s.first_request, "\r\n\r\n{\"a\":1}"));
    fc_http_free(h);
    close(s.fd);
}

/* A request to a server that never answers ends with FC_ETIMEOUT after about timeout_ms, although
 * no other transfer or descriptor wakes the loop. */
static void test_timeout_alone(void **state) {
    int port, fd = listen_loopback(&port);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 300, .connect_timeout_ms = 300};
    fc_http *h = fc_http_new(&conf);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
    int tag;
    fc_http_done d;
    long long t0 = now_ms();
    assert_int_equal(fc_http_post(h, url, "{}", 2, &tag), FC_OK);
    assert_true(run(h, &d, 10000));
    long long took = now_ms() - t0;
    assert_int_equal(d.err, FC_ETIMEOUT);
    assert_int_equal(d.status, 0);
    assert_true(d.rl_limit_requests == -1 && d.rl_remaining_requests == -1 && d.rl_reset_requests_ms == -1);
    assert_true(d.rl_limit_tokens == -1 && d.rl_remaining_tokens == -1 && d.rl_reset_tokens_ms == -1);
    assert_true(d.error[0] != '\0');
    if (took < 250 || took > 5000) fail_msg("timed out after %lld ms, API timeout 300 ms", took);
    fc_http_free(h);
    close(fd);
}

/* An answer that takes most of the timeout, with not a byte before it (a chat completion that is not streamed),
 * is taken: nothing but the timeout ends a call. (A byte-rate limit over half the timeout, as the client once
 * had, failed it after about 16 s: "Operation too slow".) */
static void test_slow_answer(void **state) {
    int port;
    server s = {.fd = listen_loopback(&port), .requests = 1, .delay_ms = 17000,
                .response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, serve, &s), 0);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 20000, .connect_timeout_ms = 2000};
    fc_http *h = fc_http_new(&conf);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
    int tag;
    fc_http_done d;
    assert_int_equal(fc_http_post(h, url, "{}", 2, &tag), FC_OK);
    assert_true(run(h, &d, 25000));
    if (d.err) fail_msg("a 17 s answer under a 20 s timeout failed: %s", d.error);
    assert_int_equal(d.status, 200);
    assert_true(d.elapsed_ms >= 16900);
    pthread_join(t, NULL);
    fc_http_free(h);
    close(s.fd);
}

/* A cancelled request never comes back from fc_http_next, and the client stays usable. */
static void test_cancel(void **state) {
    int port, fd = listen_loopback(&port);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 5000, .connect_timeout_ms = 1000};
    fc_http *h = fc_http_new(&conf);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
    int a, b;
    fc_http_done d;
    assert_int_equal(fc_http_post(h, url, "{}", 2, &a), FC_OK);
    assert_int_equal(fc_http_post(h, url, "{}", 2, &b), FC_OK);
    assert_int_equal(fc_http_kick(h), FC_OK);
    assert_int_equal(fc_http_wait(h, NULL, 0, 50), FC_OK);
    fc_http_cancel(h, &a);
    assert_int_equal(fc_http_running(h), 1);
    fc_http_cancel(h, &b);
    assert_int_equal(fc_http_running(h), 0);
    assert_int_equal(fc_http_wait(h, NULL, 0, 50), FC_OK);
    assert_false(fc_http_next(h, &d));
    fc_http_free(h);
    close(fd);
}

/* ---- many requests in flight at once ---- */

#define MANY 200  /* more than three shards' worth of transfers (FC_HTTP_SHARD is 64) */
#define ROUNDS 2

typedef struct echo {
    int fd;
    int accepted;          /* connections, over every round */
    int conn[MANY + 8];
    char req[MANY + 8][512];
    size_t got[MANY + 8];
} echo;

/* echo_rounds holds every request until MANY are in, then answers each on its own connection with the body it
 * brought; ROUNDS times. The client must have MANY requests in flight at once, on MANY connections. */
static void *echo_rounds(void *arg) {
    echo *e = arg;
    for (int round = 0; round < ROUNDS; round++) {
        int pending = 0;
        long long until = now_ms() + 10000;
        for (int i = 0; i < e->accepted; i++) e->got[i] = 0;
        while (pending < MANY && now_ms() < until) {
            struct pollfd p[MANY + 9];
            int n = 0;
            p[n++] = (struct pollfd){.fd = e->fd, .events = POLLIN};
            for (int i = 0; i < e->accepted; i++) p[n++] = (struct pollfd){.fd = e->conn[i], .events = POLLIN};
            if (poll(p, (nfds_t)n, 1000) <= 0) continue;
            if ((p[0].revents & POLLIN) && e->accepted < MANY + 8) e->conn[e->accepted++] = accept(e->fd, NULL, NULL);
            for (int i = 0; i + 1 < n; i++) {
                if (!(p[i + 1].revents & POLLIN)) continue;
                ssize_t r = read(e->conn[i], e->req[i] + e->got[i], sizeof(e->req[i]) - 1 - e->got[i]);
                if (r <= 0) { /* closed by the client: polled no more */
                    close(e->conn[i]);
                    e->conn[i] = -1;
                    continue;
                }
                e->got[i] += (size_t)r;
                e->req[i][e->got[i]] = '\0';
                char *end = strstr(e->req[i], "\r\n\r\n"), *cl = strstr(e->req[i], "Content-Length: ");
                if (end && cl && strlen(end + 4) == (size_t)strtol(cl + 16, NULL, 10)) pending++;
            }
        }
        for (int i = 0; i < e->accepted; i++) {
            char *end = e->got[i] ? strstr(e->req[i], "\r\n\r\n") : NULL;
            if (!end) continue;
            char resp[700];
            int n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(end + 4),
                             end + 4);
            if (write(e->conn[i], resp, (size_t)n) != n) break;
        }
    }
    return NULL;
}

/* MANY requests in flight at once, spread over several multi handles, each come back once with its own answer;
 * the second round reuses the first round's connections. */
static void test_many_in_flight(void **state) {
    static echo e;
    memset(&e, 0, sizeof(e));
    int port;
    e.fd = listen_loopback(&port);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, echo_rounds, &e), 0);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 15000, .connect_timeout_ms = 5000};
    fc_http *h = fc_http_new(&conf);
    assert_non_null(h);
    char url[64];
    static char body[MANY][32]; /* borrowed by fc_http_post until the answer */
    static int seen[MANY];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    for (int round = 0; round < ROUNDS; round++) {
        memset(seen, 0, sizeof(seen));
        for (int i = 0; i < MANY; i++) {
            int len = snprintf(body[i], sizeof(body[i]), "{\"round\":%d,\"i\":%d}", round, i);
            assert_int_equal(fc_http_post(h, url, body[i], (size_t)len, &seen[i]), FC_OK);
        }
        assert_int_equal(fc_http_running(h), MANY);
        for (int left = MANY; left > 0; left--) {
            fc_http_done d;
            assert_true(run(h, &d, 15000));
            int i = (int)((int *)d.ud - seen);
            assert_true(i >= 0 && i < MANY);
            assert_int_equal(seen[i]++, 0);
            assert_int_equal(d.err, 0);
            assert_int_equal(d.status, 200);
            assert_int_equal(d.len, strlen(body[i]));
            assert_memory_equal(d.body, body[i], d.len);
        }
        assert_int_equal(fc_http_running(h), 0);
    }
    pthread_join(t, NULL);
    assert_int_equal(e.accepted, MANY); /* the second round opened no connection */
    for (int i = 0; i < e.accepted; i++)
        if (e.conn[i] >= 0) close(e.conn[i]);
    fc_http_free(h);
    close(e.fd);
}

/* ---- the cap on answer sizes ---- */

#define CAP (64 * 1024) /* bytes: several reads and writes of the body */

/* answer_body sends one answer as the request body asks: "<status> <bytes> <chunked 0|1>", then closes. The
 * body is sent in 4 KiB writes, so the client sees it in pieces. */
static void *answer_body(void *arg) {
    int c = (int)(intptr_t)arg, status = 0, chunked = 0;
    long bytes = 0;
    char req[4096], head[256], piece[4096 + 16];
    const char *body = read_request(c, req, sizeof(req));
    if (body && sscanf(body, "%d %ld %d", &status, &bytes, &chunked) == 3) {
        int n = chunked ? snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n"
                                                       "Connection: close\r\n\r\n", status)
                        : snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %ld\r\n"
                                                       "Connection: close\r\n\r\n", status, bytes);
        int ok = send(c, head, (size_t)n, MSG_NOSIGNAL) == n;
        for (long sent = 0; ok && sent < bytes; sent += 4096) { /* the client may hang up: then stop */
            long k = bytes - sent < 4096 ? bytes - sent : 4096;
            n = chunked ? snprintf(piece, sizeof(piece), "%lx\r\n", k) : 0;
            memset(piece + n, 'a', (size_t)k);
            n += (int)k + (chunked ? snprintf(piece + n + k, 3, "\r\n") : 0);
            ok = send(c, piece, (size_t)n, MSG_NOSIGNAL) == n;
        }
        if (ok && chunked) send(c, "0\r\n\r\n", 5, MSG_NOSIGNAL);
    }
    close(c);
    return NULL;
}

typedef struct acceptor {
    int fd;
    int connections; /* to accept, each answered by a thread of its own */
} acceptor;

/* accept_all accepts `connections` connections (waiting at most 5 s for each) and answers them at once. */
static void *accept_all(void *arg) {
    acceptor *a = arg;
    pthread_t th[16];
    int n = 0;
    while (n < a->connections && n < 16) {
        struct pollfd p = {.fd = a->fd, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1) break;
        int c = accept(a->fd, NULL, NULL);
        if (c < 0 || pthread_create(&th[n], NULL, answer_body, (void *)(intptr_t)c) != 0) break;
        n++;
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    return NULL;
}

typedef struct ask {
    int status;
    long bytes;
    int chunked;
    fc_http_done got; /* filled when it finishes */
    char body_head[8];
    int done;
} ask;

/* run_asks starts every ask at once on a client capped at cap bytes and waits until all have finished. */
static void run_asks(ask *asks, int n, size_t cap) {
    int port;
    acceptor a = {.fd = listen_loopback(&port), .connections = n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, accept_all, &a), 0);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 10000, .connect_timeout_ms = 2000,
                         .max_body_bytes = cap};
    fc_http *h = fc_http_new(&conf);
    assert_non_null(h);
    char url[64], body[16][64]; /* each body stays until its answer: fc_http_post borrows it */
    assert_true(n <= 16);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    for (int i = 0; i < n; i++) {
        int len = snprintf(body[i], sizeof(body[i]), "%d %ld %d", asks[i].status, asks[i].bytes, asks[i].chunked);
        assert_int_equal(fc_http_post(h, url, body[i], (size_t)len, &asks[i]), FC_OK);
    }
    assert_int_equal(fc_http_running(h), n);
    for (int left = n; left > 0; left--) {
        fc_http_done d;
        assert_true(run(h, &d, 10000));
        ask *k = d.ud;
        assert_false(k->done);
        k->done = 1;
        k->got = d;
        memcpy(k->body_head, d.body, d.len < sizeof(k->body_head) ? d.len : sizeof(k->body_head));
        k->got.body = NULL; /* borrowed: gone at the next fc_http_next */
    }
    assert_int_equal(fc_http_running(h), 0);
    fc_http_free(h);
    pthread_join(t, NULL);
    close(a.fd);
}

/* An answer of cap + 1 bytes fails with FC_ETOOBIG and the status received, whether its Content-Length gave it
 * away or it came chunked; one of exactly cap bytes arrives whole, and so do the others in flight meanwhile. */
static void test_body_cap(void **state) {
    ask asks[] = {
        {.status = 200, .bytes = CAP + 1},              /* refused at its Content-Length */
        {.status = 503, .bytes = CAP + 1, .chunked = 1}, /* cut off while it arrives */
        {.status = 200, .bytes = 10 * CAP, .chunked = 1},
        {.status = 200, .bytes = CAP},
        {.status = 200, .bytes = CAP, .chunked = 1},
        {.status = 200, .bytes = 5},
        {.status = 500, .bytes = 100},
    };
    int n = (int)(sizeof(asks) / sizeof(asks[0]));
    run_asks(asks, n, CAP);
    for (int i = 0; i < n; i++) {
        const fc_http_done *d = &asks[i].got;
        assert_true(asks[i].done);
        assert_int_equal(d->status, asks[i].status);
        if (asks[i].bytes > CAP) {
            assert_int_equal(d->err, FC_ETOOBIG);
            assert_int_equal(d->len, 0);
            assert_non_null(strstr(d->error, "answer larger than 65536 bytes"));
        } else {
            assert_int_equal(d->err, 0);
            assert_int_equal(d->len, asks[i].bytes);
            assert_memory_equal(asks[i].body_head, "aaaaa", 5);
            assert_string_equal(d->error, "");
        }
    }
    assert_non_null(strstr(asks[0].got.error, "(announced by its Content-Length)"));
    assert_null(strstr(asks[1].got.error, "announced"));
}

/* Without a cap (0, the default) any size is read. */
static void test_body_uncapped(void **state) {
    ask asks[] = {{.status = 200, .bytes = 4 * CAP}, {.status = 200, .bytes = 4 * CAP + 1, .chunked = 1}};
    run_asks(asks, 2, 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(asks[i].got.err, 0);
        assert_int_equal(asks[i].got.status, 200);
        assert_int_equal(asks[i].got.len, asks[i].bytes);
    }
}

/* fc_http_retry_after_parse: delay-seconds and HTTP-dates, capped at a day. libcurl's CURLINFO_RETRY_AFTER, used
 * before, passed "9223372036854775807" on as it was, and the worker's seconds * 1000 overflowed (found by
 * tests/fuzz/fuzz_retry_after.c; regressions/retry_after/libcurl_passed_2e63_on). */
static void test_retry_after_parse(void **state) {
    static const struct {
        const char *value;
        int rc;
        long seconds;
    } cases[] = {
        {"120", FC_OK, 120},
        {" 7\t", FC_OK, 7},
        {"0", FC_OK, 0},
        {"1.5", FC_OK, 1},
        {"86401", FC_OK, FC_HTTP_RETRY_AFTER_MAX_S},
        {"9223372036854775807", FC_OK, FC_HTTP_RETRY_AFTER_MAX_S},
        {"99999999999999999999999999", FC_OK, FC_HTTP_RETRY_AFTER_MAX_S},
        {"Thu, 01 Jan 2026 00:01:00 GMT", FC_OK, 60},
        {"Wed, 21 Oct 2015 07:28:00 GMT", FC_OK, 0},
        {"Sat, 01 Jan 2028 00:00:00 GMT", FC_OK, FC_HTTP_RETRY_AFTER_MAX_S},
        {"-5", FC_EPARSE, 0},
        {"5s", FC_EPARSE, 0},
        {"", FC_EPARSE, 0},
        {"soon", FC_EPARSE, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long s = -1;
        int rc = fc_http_retry_after_parse(cases[i].value, strlen(cases[i].value), 1767225600LL, &s);
        if (rc != cases[i].rc || s != cases[i].seconds)
            fail_msg("'%s': rc %d, %ld s (expected %d, %ld s)", cases[i].value, rc, s, cases[i].rc, cases[i].seconds);
    }
    long s = -1; /* not NUL-terminated: only len bytes are read */
    assert_int_equal(fc_http_retry_after_parse("12345", 2, 0, &s), FC_OK);
    assert_int_equal(s, 12);
    (void)state;
}

/* fc_http_duration_parse: OpenAI's reset durations and plain seconds, capped at a day; anything else refused. */
static void test_duration_parse(void **state) {
    static const struct {
        const char *value;
        int rc;
        double ms;
    } cases[] = {
        {"1s", FC_OK, 1000},
        {"20ms", FC_OK, 20},
        {"1m30s", FC_OK, 90000},
        {"6m0s", FC_OK, 360000},
        {"1h2m3s", FC_OK, 3723000},
        {"1h", FC_OK, 3600000},
        {"2m", FC_OK, 120000},
        {"0.5s", FC_OK, 500},
        {"1.5s", FC_OK, 1500},
        {"41.724s", FC_OK, 41724},
        {"1.5ms", FC_OK, 1.5},
        {"1m0.25s", FC_OK, 60250},
        {"1s250ms", FC_OK, 1250},
        {"0s", FC_OK, 0},
        {"2", FC_OK, 2000},
        {"0.25", FC_OK, 250},
        {"0", FC_OK, 0},
        {" \t12ms \t", FC_OK, 12},
        {"24h", FC_OK, FC_HTTP_DURATION_MAX_MS},
        {"25h", FC_OK, FC_HTTP_DURATION_MAX_MS},
        {"86401", FC_OK, FC_HTTP_DURATION_MAX_MS},
        {"99999999999999999999999999999h", FC_OK, FC_HTTP_DURATION_MAX_MS},
        {"", FC_EPARSE, -1},
        {"  ", FC_EPARSE, -1},
        {"s", FC_EPARSE, -1},
        {"ms", FC_EPARSE, -1},
        {"-1s", FC_EPARSE, -1},
        {"+1s", FC_EPARSE, -1},
        {"1e3ms", FC_EPARSE, -1},
        {".5s", FC_EPARSE, -1},
        {"1.s", FC_EPARSE, -1},
        {"1.", FC_EPARSE, -1},
        {"1 s", FC_EPARSE, -1},
        {"1s 2ms", FC_EPARSE, -1},
        {"1d", FC_EPARSE, -1},
        {"1us", FC_EPARSE, -1},
        {"1S", FC_EPARSE, -1},
        {"1s1m", FC_EPARSE, -1},  /* out of order */
        {"1s1s", FC_EPARSE, -1},  /* twice */
        {"1m2", FC_EPARSE, -1},   /* a number without its unit after a component */
        {"inf", FC_EPARSE, -1},
        {"nan", FC_EPARSE, -1},
        {"0x10", FC_EPARSE, -1},
        {"soon", FC_EPARSE, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double ms = -2;
        int rc = fc_http_duration_parse(cases[i].value, strlen(cases[i].value), &ms);
        if (rc != cases[i].rc || ms != cases[i].ms)
            fail_msg("'%s': rc %d, %g ms (expected %d, %g ms)", cases[i].value, rc, ms, cases[i].rc, cases[i].ms);
    }
    double ms = -2; /* not NUL-terminated: only len bytes are read */
    assert_int_equal(fc_http_duration_parse("25sX", 3, &ms), FC_OK);
    assert_true(ms == 25000);
    assert_int_equal(fc_http_duration_parse("1s\0", 3, &ms), FC_EPARSE); /* a NUL inside the value */
    assert_true(ms == -1);
    assert_int_equal(fc_http_duration_parse(NULL, 0, &ms), FC_EPARSE);
    (void)state;
}

/* transfer_one posts once to a server answering with response; returns the finished request in *d. */
static void transfer_one(const char *response, fc_http_done *d) {
    int port;
    server s = {.fd = listen_loopback(&port), .requests = 1, .response = response};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, serve, &s), 0);
    fc_http_conf conf = {.user_agent = "ua-test", .timeout_ms = 5000, .connect_timeout_ms = 2000};
    fc_http *h = fc_http_new(&conf);
    assert_non_null(h);
    char url[64];
    int tag;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    assert_int_equal(fc_http_post(h, url, "{}", 2, &tag), FC_OK);
    assert_true(run(h, d, 5000));
    d->body = NULL; /* borrowed: gone with h */
    fc_http_free(h);
    pthread_join(t, NULL);
    close(s.fd);
}

/* The x-ratelimit-* headers of a 200 and of a 429 reach fc_http_done whatever their case; absent or unreadable
 * ones are -1; an answer cut short after its headers is a transport failure, and its headers do not count. */
static void test_ratelimit_headers(void **state) {
    fc_http_done d;
    transfer_one("HTTP/1.1 200 OK\r\nX-RateLimit-Limit-Requests: 30\r\nx-ratelimit-remaining-requests: 29\r\n"
                 "X-RATELIMIT-RESET-REQUESTS: 33ms\r\nx-ratelimit-limit-tokens: 150000000\r\n"
                 "x-ratelimit-remaining-tokens: 149999.5\r\nx-ratelimit-reset-tokens: 6m0s\r\n"
                 "Content-Length: 2\r\n\r\n{}", &d);
    assert_int_equal(d.err, 0);
    assert_int_equal(d.status, 200);
    assert_true(d.rl_limit_requests == 30 && d.rl_remaining_requests == 29 && d.rl_reset_requests_ms == 33);
    assert_true(d.rl_limit_tokens == 150000000 && d.rl_remaining_tokens == 149999.5);
    assert_true(d.rl_reset_tokens_ms == 360000);

    transfer_one("HTTP/1.1 429 Too Many Requests\r\nx-ratelimit-limit-requests: 30\r\n"
                 "x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 1m0.5s\r\n"
                 "x-ratelimit-limit-tokens: -5\r\nx-ratelimit-remaining-tokens: 1e6\r\n"
                 "x-ratelimit-reset-tokens: 5 minutes\r\nContent-Length: 2\r\n\r\n{}", &d);
    assert_int_equal(d.err, 0);
    assert_int_equal(d.status, 429);
    assert_int_equal(d.retry_after_s, 0);
    assert_true(d.rl_limit_requests == 30 && d.rl_remaining_requests == 0 && d.rl_reset_requests_ms == 60500);
    assert_true(d.rl_limit_tokens == -1 && d.rl_remaining_tokens == -1 && d.rl_reset_tokens_ms == -1);

    transfer_one("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", &d);
    assert_int_equal(d.status, 200);
    assert_true(d.rl_limit_requests == -1 && d.rl_remaining_requests == -1 && d.rl_reset_requests_ms == -1);
    assert_true(d.rl_limit_tokens == -1 && d.rl_remaining_tokens == -1 && d.rl_reset_tokens_ms == -1);

    transfer_one("HTTP/1.1 200 OK\r\nx-ratelimit-limit-requests: 30\r\nx-ratelimit-reset-requests: 1s\r\n"
                 "Content-Length: 100\r\n\r\n{\"cut", &d);
    assert_int_equal(d.err, FC_ECONN);
    assert_true(d.rl_limit_requests == -1 && d.rl_reset_requests_ms == -1);
    (void)state;
}

int main(void) {
    fc_http_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_and_keepalive),
        cmocka_unit_test(test_timeout_alone),
        cmocka_unit_test(test_slow_answer),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_body_uncapped),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_ratelimit_headers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fc_http_global_cleanup();
    return rc;
}
