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
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct server {
    int fd;
    int requests; /* answered on one kept-alive connection */
    char first_request[4096];
} server;

/* serve accepts one connection and answers `requests` requests on it with a 429 and a small body. */
static void *serve(void *arg) {
    server *s = arg;
    int c = accept(s->fd, NULL, NULL);
    for (int i = 0; c >= 0 && i < s->requests; i++) {
        char buf[4096];
        size_t n = 0;
        char *end = NULL;
        long body = -1;
        while (n < sizeof(buf) - 1) { /* read the headers, then Content-Length bytes of body */
            ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
            buf[n] = '\0';
            if (!end && (end = strstr(buf, "\r\n\r\n"))) {
                char *cl = strstr(buf, "Content-Length: ");
                body = cl ? strtol(cl + 16, NULL, 10) : 0;
            }
            if (end && (long)(n - (size_t)(end + 4 - buf)) >= body) break;
        }
        if (i == 0) snprintf(s->first_request, sizeof(s->first_request), "%s", buf);
        const char *resp = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Type: application/json\r\n"
                           "Content-Length: 16\r\n\r\n{\"error\":\"slow\"}";
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
    assert_true(d.error[0] != '\0');
    if (took < 250 || took > 5000) fail_msg("timed out after %lld ms, API timeout 300 ms", took);
    fc_http_free(h);
    close(fd);
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

int main(void) {
    fc_http_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_and_keepalive),
        cmocka_unit_test(test_timeout_alone),
        cmocka_unit_test(test_cancel),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fc_http_global_cleanup();
    return rc;
}
