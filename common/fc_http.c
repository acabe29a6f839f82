/* HTTP client over libcurl's multi interface, driven by its socket API: curl tells us which
 * sockets to watch (an epoll set), we ask it when its next timeout falls, and we hand it only
 * the sockets that are ready. curl_multi_perform would instead visit every transfer on every
 * wake-up, each with its own poll() of its socket.
 *
 * The transfers are spread over several multi handles (shards) of at most FC_HTTP_SHARD transfers
 * each. libcurl 7.88 does work linear in the connections of its multi handle on every request: it
 * walks the host's connections for an idle one to reuse, and on removing a finished transfer it
 * walks the whole connection cache (the connect-only check). At 4,096 calls in flight on one
 * handle those walks took about a fifth of the worker's CPU; a shard keeps them to its own few
 * dozen connections. The shards share one DNS cache and TLS session cache (a curl share handle,
 * used from this one thread only) and one epoll set, whose events carry the shard's number. */
#include "fc_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "fc_buf.h"
#include "fc_error.h"

/* Transfers per multi handle: each shard keeps at most this many connections busy. */
#define FC_HTTP_SHARD 64

typedef struct transfer {
    CURL *easy;
    fc_buf response;
    void *ud;
    int shard;                    /* index of its multi handle in fc_http.shards, for good */
    int active;
    int too_big;                  /* the body passed max_body: on_data refused it */
    size_t max_body;              /* bytes, 0 = no cap (fc_http_conf.max_body_bytes) */
    char errbuf[CURL_ERROR_SIZE];
    struct transfer *next_free;
    struct transfer *next_all;    /* every transfer ever created */
} transfer;

typedef struct shard {
    CURLM *multi;
    struct fc_http *h;
    int index;
    int running;                  /* its transfers in flight */
} shard;

struct fc_http {
    shard *shards;                /* grown as transfers are created, FC_HTTP_SHARD transfers each */
    int nshards;
    int ntransfers;               /* transfers created: transfer i belongs to shard i / FC_HTTP_SHARD */
    int next_shard;               /* fc_http_next looks for finished transfers from here */
    CURLSH *share;                /* DNS and TLS sessions, shared by the shards */
    int epfd;                     /* the sockets curl asked us to watch */
    int dispatching;              /* inside the loop handing epoll events to curl */
    int nremoved;                 /* sockets curl let go of during that loop, */
    curl_socket_t removed[16];    /* whose events left in the batch are stale */
    char *proxy_http, *proxy_https, *no_proxy; /* from the environment, read once */
    struct curl_slist *headers;
    char *user_agent;
    char *ca_file;                /* NULL = libcurl's default bundle */
    long timeout_ms, connect_timeout_ms;
    size_t max_body;              /* bytes, 0 = no cap */
    transfer *free_list;
    transfer *all;
    int running;
    transfer *last_done;          /* returned by fc_http_next; recycled on the next call */
};

/* on_socket is curl's CURLMOPT_SOCKETFUNCTION: keep the epoll set in step with what it wants. An
 * event carries the socket and its shard's number. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    shard *sh = userp;
    fc_http *h = sh->h;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL); /* fails harmlessly if already closed */
        if (h->dispatching && h->nremoved < (int)(sizeof(h->removed) / sizeof(h->removed[0])))
            h->removed[h->nremoved++] = s;
        else if (h->dispatching)
            h->nremoved = -1; /* too many to track: drop the rest of the batch (epoll reports again) */
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    ev.data.u64 = (uint64_t)(uint32_t)sh->index << 32 | (uint32_t)s;
    /* socketp is what curl_multi_assign left on the socket: set once it is in the epoll set (curl forgets it
     * with the socket on CURL_POLL_REMOVE), so that a new socket costs one epoll_ctl, not a failed MOD first. */
    if (socketp && epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev) == 0) return 0;
    if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && (errno != EEXIST || epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev) != 0))
        return -1;
    curl_multi_assign(sh->multi, s, sh);
    return 0;
}

/* on_data is curl's CURLOPT_WRITEFUNCTION: it keeps the body, up to max_body bytes. Past that it
 * returns a short count, which makes curl abort the transfer (CURLE_WRITE_ERROR, seen as too_big). */
static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    transfer *t = ud;
    size_t bytes = size * n;
    if (t->max_body && bytes > t->max_body - t->response.len) {
        t->too_big = 1;
        return 0;
    }
    return fc_buf_append(&t->response, p, bytes) == FC_OK ? bytes : 0;
}

/* env_dup returns a copy of the first of two environment variables that is set, or NULL. */
static char *env_dup(const char *lower, const char *upper) {
    const char *v = getenv(lower);
    if (!v || !*v) v = upper ? getenv(upper) : NULL;
    return v && *v ? strdup(v) : NULL;
}

/* read_proxy_env reads the standard proxy variables once, as libcurl would on every request
 * (its per-request lookup showed in profiles); the behaviour is the same. */
static void read_proxy_env(fc_http *h) {
    char *all = env_dup("all_proxy", "ALL_PROXY");
    h->proxy_http = env_dup("http_proxy", NULL); /* HTTP_PROXY is ignored, as libcurl does */
    h->proxy_https = env_dup("https_proxy", "HTTPS_PROXY");
    h->no_proxy = env_dup("no_proxy", "NO_PROXY");
    if (!h->proxy_http && all) h->proxy_http = strdup(all);
    if (!h->proxy_https && all) h->proxy_https = strdup(all);
    free(all);
}

fc_http *fc_http_new(const fc_http_conf *c) {
    fc_http *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->share = curl_share_init();
    h->user_agent = strdup(c->user_agent ? c->user_agent : "flashcard-worker");
    h->timeout_ms = c->timeout_ms;
    h->connect_timeout_ms = c->connect_timeout_ms;
    h->max_body = c->max_body_bytes;
    h->ca_file = c->ca_file && *c->ca_file ? strdup(c->ca_file) : NULL;
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    h->headers = curl_slist_append(h->headers, "Expect:");
    char line[8192];
    if (c->bearer && *c->bearer) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", c->bearer);
        h->headers = curl_slist_append(h->headers, line);
        memset(line, 0, sizeof(line));
    }
    if (c->referer) {
        snprintf(line, sizeof(line), "HTTP-Referer: %s", c->referer);
        h->headers = curl_slist_append(h->headers, line);
    }
    if (c->title) {
        snprintf(line, sizeof(line), "X-Title: %s", c->title);
        h->headers = curl_slist_append(h->headers, line);
    }
    if (h->epfd < 0 || !h->share || !h->user_agent || !h->headers) {
        fc_http_free(h);
        return NULL;
    }
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

    read_proxy_env(h);
    return h;
}

static void transfer_free(transfer *t) {
    if (!t) return;
    if (t->easy) curl_easy_cleanup(t->easy);
    fc_buf_free(&t->response);
    free(t);
}

void fc_http_free(fc_http *h) {
    if (!h) return;
    fc_http_cancel_all(h, NULL, NULL);
    while (h->all) {
        transfer *t = h->all;
        h->all = t->next_all;
        transfer_free(t);
    }
    for (int i = 0; i < h->nshards; i++) curl_multi_cleanup(h->shards[i].multi);
    free(h->shards);
    if (h->share) curl_share_cleanup(h->share);
    if (h->epfd >= 0) close(h->epfd);
    if (h->headers) {
        /* The Authorization line holds the key: wipe it before freeing. */
        for (struct curl_slist *s = h->headers; s; s = s->next) memset(s->data, 0, strlen(s->data));
        curl_slist_free_all(h->headers);
    }
    free(h->user_agent);
    free(h->ca_file);
    free(h->proxy_http);
    free(h->proxy_https);
    free(h->no_proxy);
    free(h);
}

/* setup_easy applies the options that do not change between requests. */
static void setup_easy(fc_http *h, transfer *t) {
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, h->share);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    /* No low-speed limit (CURLOPT_LOW_SPEED_*): a chat completion that is not streamed sends nothing until it is
     * written, so a byte-rate check would fail slow answers before API_TIMEOUT; and it makes curl wake every
     * transfer once a second (a poll and a state-machine run for each call in flight). */
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    /* curl allocates the receive buffer for each transfer, for as long as it runs, and there is one transfer per
     * call in flight: 16 KiB (libcurl's default) is 64 MiB at 4,096 calls, 8 KiB was still a quarter of the
     * worker's memory. 2 KiB reads an answer of a few KiB in a few reads of one wake-up. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 2048L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOPROXY, h->no_proxy);
    /* A Content-Length above the cap is refused before any of the body is read (CURLE_FILESIZE_EXCEEDED);
     * a body without one is cut off by on_data. */
    t->max_body = h->max_body;
    if (h->max_body) curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max_body);
}

/* add_shard makes the next multi handle. Returns 0 or FC_ENOMEM. */
static int add_shard(fc_http *h) {
    shard *v = realloc(h->shards, (size_t)(h->nshards + 1) * sizeof(*v));
    if (!v) return FC_ENOMEM;
    h->shards = v;
    shard *sh = &v[h->nshards];
    *sh = (shard){.multi = curl_multi_init(), .h = h, .index = h->nshards};
    if (!sh->multi) return FC_ENOMEM;
    curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    /* curl's default keeps 4 idle connections per transfer still in the handle: a shard whose calls all ended
     * together (a lull, a burst of failures) would close all but a few, and the next calls would connect anew. */
    curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)FC_HTTP_SHARD);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    h->nshards++;
    for (int i = 0; i < h->nshards; i++) /* realloc may have moved them */
        curl_multi_setopt(v[i].multi, CURLMOPT_SOCKETDATA, &v[i]);
    return FC_OK;
}

static transfer *get_transfer(fc_http *h) {
    transfer *t = h->free_list;
    if (t) {
        h->free_list = t->next_free;
        return t;
    }
    if (h->ntransfers / FC_HTTP_SHARD >= h->nshards && add_shard(h) != FC_OK) return NULL;
    t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return NULL;
    }
    t->shard = h->ntransfers++ / FC_HTTP_SHARD;
    setup_easy(h, t);
    t->next_all = h->all;
    h->all = t;
    return t;
}

static void recycle(fc_http *h, transfer *t) {
    fc_buf_reset(&t->response);
    t->active = 0;
    t->too_big = 0;
    t->ud = NULL;
    t->next_free = h->free_list;
    h->free_list = t;
}

/* release_done recycles the transfer fc_http_next last handed back: its body is the caller's no more. */
static void release_done(fc_http *h) {
    if (!h->last_done) return;
    recycle(h, h->last_done);
    h->last_done = NULL;
}

int fc_http_post(fc_http *h, const char *url, const char *body, size_t len, void *ud) {
    release_done(h); /* first, so that a new call takes its transfer, in its shard, and its idle connection */
    transfer *t = get_transfer(h);
    if (!t) return FC_ENOMEM;
    t->errbuf[0] = '\0';
    t->ud = ud;
    curl_easy_setopt(t->easy, CURLOPT_URL, url);
    const char *proxy = strncmp(url, "https:", 6) == 0 ? h->proxy_https : h->proxy_http;
    curl_easy_setopt(t->easy, CURLOPT_PROXY, proxy ? proxy : "");
    /* Borrowed, not copied (CURLOPT_COPYPOSTFIELDS would copy): curl may send it again, on a new connection,
     * when a reused one turns out closed. */
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long)len);
    if (curl_multi_add_handle(h->shards[t->shard].multi, t->easy) != CURLM_OK) {
        recycle(h, t);
        return FC_EIO;
    }
    t->active = 1;
    h->running++;
    h->shards[t->shard].running++;
    return FC_OK;
}

/* forget takes t, active, out of its multi handle and the counts of transfers in flight. */
static void forget(fc_http *h, transfer *t) {
    curl_multi_remove_handle(h->shards[t->shard].multi, t->easy);
    h->running--;
    h->shards[t->shard].running--;
}

/* run_timeout lets curl handle its due timeouts, which include starting newly added transfers, in every shard
 * with transfers in flight (an idle one has no timer that matters). curl_multi_timeout is asked each time rather
 * than trusting a CURLMOPT_TIMERFUNCTION copy: curl skips that callback when its next deadline is unchanged, so
 * a copy cleared by a call made a fraction of a millisecond early would lose the deadline (and with it
 * API_TIMEOUT). */
static int run_timeout(fc_http *h) {
    long ms;
    int still, rc = FC_OK;
    for (int i = 0; i < h->nshards; i++) {
        CURLM *m = h->shards[i].multi;
        if (h->shards[i].running == 0 || curl_multi_timeout(m, &ms) != CURLM_OK || ms != 0) continue;
        if (curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &still) != CURLM_OK) rc = FC_EIO;
    }
    return rc;
}

/* next_timeout returns the earliest of the shards' next timeouts in ms, -1 for none. */
static long next_timeout(fc_http *h) {
    long best = -1, ms;
    for (int i = 0; i < h->nshards; i++)
        if (h->shards[i].running > 0 && curl_multi_timeout(h->shards[i].multi, &ms) == CURLM_OK && ms >= 0 &&
            (best < 0 || ms < best))
            best = ms;
    return best;
}

static int was_removed(const fc_http *h, int fd) {
    for (int i = 0; i < h->nremoved; i++)
        if (h->removed[i] == fd) return 1;
    return 0;
}

int fc_http_wait(fc_http *h, fc_pollfd *fds, int nfds, int timeout_ms) {
    struct pollfd p[9];
    if (nfds > 8) return FC_EINVAL;
    long curl_ms = next_timeout(h);
    if (curl_ms >= 0 && (timeout_ms < 0 || curl_ms < timeout_ms)) timeout_ms = (int)curl_ms;
    p[0] = (struct pollfd){.fd = h->epfd, .events = POLLIN};
    for (int i = 0; i < nfds; i++) p[i + 1] = (struct pollfd){.fd = fds[i].fd, .events = POLLIN};
    if (poll(p, (nfds_t)nfds + 1, timeout_ms) < 0 && errno != EINTR) return FC_EIO;
    for (int i = 0; i < nfds; i++) fds[i].readable = (p[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    if (p[0].revents & POLLIN) {
        struct epoll_event ev[64];
        int n = epoll_wait(h->epfd, ev, 64, 0), still, rc = FC_OK;
        h->dispatching = 1;
        h->nremoved = 0;
        for (int i = 0; i < n && rc == FC_OK && h->nremoved >= 0; i++) {
            int fd = (int)(uint32_t)ev[i].data.u64, index = (int)(ev[i].data.u64 >> 32);
            if (was_removed(h, fd)) continue; /* closed meanwhile; the number may be reused */
            int mask = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                       (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                       (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            if (curl_multi_socket_action(h->shards[index].multi, fd, mask, &still) != CURLM_OK) rc = FC_EIO;
        }
        h->dispatching = 0;
        if (rc != FC_OK) return rc;
    }
    return run_timeout(h);
}

int fc_http_kick(fc_http *h) { return run_timeout(h); }

/* fill_too_big reports a body over the cap: the status received, no body, and the cap in the error text. */
static void fill_too_big(transfer *t, long status, fc_http_done *d) {
    d->status = (int)status;
    d->err = FC_ETOOBIG;
    d->body = "";
    d->len = 0;
    snprintf(d->error, sizeof(d->error), "answer larger than %zu bytes%s", t->max_body,
             t->too_big ? "" : " (announced by its Content-Length)");
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int fc_http_retry_after_parse(const char *value, size_t len, long long now_s, long *seconds) {
    const char *b = value ? value : "", *e = b + (value ? len : 0);
    *seconds = 0;
    while (b < e && is_ows(*b)) b++;
    while (e > b && is_ows(e[-1])) e--;
    if (b == e) return FC_EPARSE;
    if (*b >= '0' && *b <= '9') { /* delay-seconds, saturating at the cap */
        long v = 0;
        const char *p = b;
        for (; p < e && *p >= '0' && *p <= '9'; p++) v = v >= FC_HTTP_RETRY_AFTER_MAX_S ? v : v * 10 + (*p - '0');
        if (p < e && *p == '.')
            for (p++; p < e && *p >= '0' && *p <= '9';) p++;
        if (p != e) return FC_EPARSE;
        *seconds = v < FC_HTTP_RETRY_AFTER_MAX_S ? v : FC_HTTP_RETRY_AFTER_MAX_S;
        return FC_OK;
    }
    char date[64]; /* an HTTP-date is 29 bytes; curl_getdate needs a C string */
    size_t n = (size_t)(e - b);
    if (n >= sizeof(date) || memchr(b, '\0', n)) return FC_EPARSE;
    memcpy(date, b, n);
    date[n] = '\0';
    time_t when = curl_getdate(date, NULL);
    if (when == -1) return FC_EPARSE;
    long long ahead = (long long)when - now_s;
    *seconds = ahead <= 0 ? 0 : ahead < FC_HTTP_RETRY_AFTER_MAX_S ? (long)ahead : FC_HTTP_RETRY_AFTER_MAX_S;
    return FC_OK;
}

/* retry_after reads the Retry-After header of the last answer of t (0 when absent or unreadable). libcurl's own
 * CURLINFO_RETRY_AFTER is not used: it hands on any number up to 2^63 - 1, which the caller's arithmetic in ms
 * would overflow. */
static long retry_after(transfer *t) {
    struct curl_header *hd = NULL;
    long s = 0;
    if (curl_easy_header(t->easy, "Retry-After", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK && hd && hd->value)
        fc_http_retry_after_parse(hd->value, strlen(hd->value), (long long)time(NULL), &s);
    return s;
}

/* decimal_read reads digits with an optional fraction ("12", "0.25"; not ".5" or "1.") at *p, before e. Returns
 * 0 with the number as *whole + *fnum / *fden (the first 9 fraction digits kept, so that *fnum times a unit in ms
 * stays exact in a double), *p moved past it; -1 when *p holds no such number. *whole is inf past 308 digits. */
static int decimal_read(const char **p, const char *e, double *whole, double *fnum, double *fden) {
    const char *q = *p;
    *whole = 0;
    *fnum = 0;
    *fden = 1;
    if (q == e || *q < '0' || *q > '9') return -1;
    for (; q < e && *q >= '0' && *q <= '9'; q++) *whole = *whole * 10 + (*q - '0');
    if (q < e && *q == '.') {
        if (++q == e || *q < '0' || *q > '9') return -1;
        for (int kept = 0; q < e && *q >= '0' && *q <= '9'; q++, kept++)
            if (kept < 9) *fnum = *fnum * 10 + (*q - '0'), *fden *= 10;
    }
    *p = q;
    return 0;
}

/* duration_unit reads a unit at *p (ms before m); returns its rank, 0 for h to 3 for ms, moving *p past it, or
 * -1. unit_ms gets its length in ms. */
static int duration_unit(const char **p, const char *e, double *unit_ms) {
    static const struct {
        char name[3];
        size_t len;
        double ms;
    } units[] = {{"h", 1, 3600000.0}, {"m", 1, 60000.0}, {"s", 1, 1000.0}, {"ms", 2, 1.0}};
    for (int i = 3; i >= 0; i--) {
        if ((size_t)(e - *p) < units[i].len || memcmp(*p, units[i].name, units[i].len) != 0) continue;
        *p += units[i].len;
        *unit_ms = units[i].ms;
        return i;
    }
    return -1;
}

int fc_http_duration_parse(const char *value, size_t len, double *ms) {
    const char *b = value ? value : "", *e = b + (value ? len : 0);
    double total = 0, whole, fnum, fden, unit;
    int last = -1;
    *ms = -1;
    while (b < e && is_ows(*b)) b++;
    while (e > b && is_ows(e[-1])) e--;
    if (b == e) return FC_EPARSE;
    while (b < e) {
        if (decimal_read(&b, e, &whole, &fnum, &fden) != 0) return FC_EPARSE;
        int rank = 2;
        unit = 1000.0; /* a plain number alone: seconds */
        if (b < e || last >= 0) rank = duration_unit(&b, e, &unit);
        if (rank <= last) return FC_EPARSE; /* no unit, or a unit out of order */
        last = rank;
        total += whole * unit + fnum * unit / fden;
    }
    *ms = total < FC_HTTP_DURATION_MAX_MS ? total : FC_HTTP_DURATION_MAX_MS;
    return FC_OK;
}

/* header_value returns the value of the last answer's header name (case-insensitive), borrowed from curl until
 * the handle's next transfer, or NULL when absent. */
static const char *header_value(transfer *t, const char *name) {
    struct curl_header *hd = NULL;
    if (curl_easy_header(t->easy, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK || !hd) return NULL;
    return hd->value;
}

/* rl_count reads a count header (a non-negative decimal, finite); -1 when absent or anything else. */
static double rl_count(transfer *t, const char *name) {
    const char *b = header_value(t, name), *e;
    double whole, fnum, fden;
    if (!b) return -1;
    for (e = b + strlen(b); e > b && is_ows(e[-1]);) e--;
    while (b < e && is_ows(*b)) b++;
    if (decimal_read(&b, e, &whole, &fnum, &fden) != 0 || b != e || !isfinite(whole)) return -1;
    return whole + fnum / fden;
}

/* rl_duration reads a reset header in ms; -1 when absent or unreadable. */
static double rl_duration(transfer *t, const char *name) {
    const char *v = header_value(t, name);
    double ms = -1;
    if (v) fc_http_duration_parse(v, strlen(v), &ms);
    return ms;
}

/* fill_ratelimit reads the provider's x-ratelimit-* headers into d; after a transport failure (answered is 0)
 * whatever headers came before it do not count, and every field is -1. */
static void fill_ratelimit(transfer *t, int answered, fc_http_done *d) {
    d->rl_limit_requests = answered ? rl_count(t, "x-ratelimit-limit-requests") : -1;
    d->rl_remaining_requests = answered ? rl_count(t, "x-ratelimit-remaining-requests") : -1;
    d->rl_reset_requests_ms = answered ? rl_duration(t, "x-ratelimit-reset-requests") : -1;
    d->rl_limit_tokens = answered ? rl_count(t, "x-ratelimit-limit-tokens") : -1;
    d->rl_remaining_tokens = answered ? rl_count(t, "x-ratelimit-remaining-tokens") : -1;
    d->rl_reset_tokens_ms = answered ? rl_duration(t, "x-ratelimit-reset-tokens") : -1;
}

static void fill_done(transfer *t, CURLcode res, fc_http_done *d) {
    long status = 0;
    curl_off_t total_us = 0;
    memset(d, 0, sizeof(*d));
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    d->ud = t->ud;
    d->retry_after_s = retry_after(t);
    d->elapsed_ms = (double)total_us / 1000.0;
    if (t->too_big || (res == CURLE_FILESIZE_EXCEEDED && t->max_body)) {
        fill_too_big(t, status, d);
        fill_ratelimit(t, 1, d); /* an answer, only too long */
        return;
    }
    fill_ratelimit(t, res == CURLE_OK, d);
    d->status = res == CURLE_OK ? (int)status : 0;
    d->err = res == CURLE_OK ? 0 : res == CURLE_OPERATION_TIMEDOUT ? FC_ETIMEOUT : FC_ECONN;
    d->body = t->response.data ? t->response.data : "";
    d->len = t->response.len;
    if (res != CURLE_OK)
        snprintf(d->error, sizeof(d->error), "%s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(res));
}

int fc_http_next(fc_http *h, fc_http_done *d) {
    release_done(h);
    int left;
    CURLMsg *m;
    for (int n = 0; n < h->nshards; n++, h->next_shard = (h->next_shard + 1) % h->nshards) {
        while ((m = curl_multi_info_read(h->shards[h->next_shard].multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            transfer *t;
            CURLcode res = m->data.result;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            forget(h, t);
            fill_done(t, res, d);
            h->last_done = t;
            return 1;
        }
    }
    return 0;
}

int fc_http_running(const fc_http *h) { return h->running; }

void fc_http_cancel_all(fc_http *h, void (*cb)(void *ud, void *arg), void *arg) {
    for (transfer *t = h->all; t; t = t->next_all) {
        if (!t->active || t == h->last_done) continue;
        forget(h, t);
        void *ud = t->ud;
        recycle(h, t);
        if (cb) cb(ud, arg);
    }
}

void fc_http_cancel(fc_http *h, void *ud) {
    for (transfer *t = h->all; t; t = t->next_all) {
        if (!t->active || t->ud != ud || t == h->last_done) continue;
        forget(h, t);
        recycle(h, t);
        return;
    }
}

void fc_http_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void fc_http_global_cleanup(void) { curl_global_cleanup(); }

/* ---- one-off requests ------------------------------------------------------------ */

typedef struct capped {
    fc_buf *body;
    size_t max, start;
    int too_big;
} capped;

static size_t on_capped(char *p, size_t size, size_t n, void *ud) {
    capped *c = ud;
    size_t bytes = size * n;
    if (c->body->len - c->start + bytes > c->max) {
        c->too_big = 1;
        return 0;
    }
    return fc_buf_append(c->body, p, bytes) == FC_OK ? bytes : 0;
}

int fc_http_get(const char *url, const char *user, const char *password, long timeout_ms, size_t max_bytes,
                const char *user_agent, long *status, fc_buf *body, char *why, size_t whylen) {
    CURL *e = curl_easy_init();
    if (!e) return FC_ENOMEM;
    capped cap = {body, max_bytes, body->len, 0};
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, password ? password : "");
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    }
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_capped);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &cap);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, err);
    if (user_agent) curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent);
    CURLcode cc = curl_easy_perform(e);
    *status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    if (cap.too_big) {
        snprintf(why, whylen, "answer larger than %zu bytes", max_bytes);
        return FC_ETOOBIG;
    }
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", err[0] ? err : curl_easy_strerror(cc));
        return cc == CURLE_OUT_OF_MEMORY ? FC_ENOMEM : FC_ECONN;
    }
    return FC_OK;
}

/* url_part returns a piece of u (curl_free it), or NULL when absent. */
static char *url_part(CURLU *u, CURLUPart what, unsigned flags) {
    char *s = NULL;
    return curl_url_get(u, what, &s, flags) == CURLUE_OK ? s : NULL;
}

int fc_url_parse(const char *url, fc_url *out) {
    memset(out, 0, sizeof(*out));
    CURLU *u = curl_url();
    if (!u) return FC_ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        curl_url_cleanup(u);
        return FC_EINVAL;
    }
    out->host = url_part(u, CURLUPART_HOST, 0);
    out->path = url_part(u, CURLUPART_PATH, 0);
    out->user = url_part(u, CURLUPART_USER, CURLU_URLDECODE);
    out->password = url_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE);
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
    out->base = url_part(u, CURLUPART_URL, 0);
    curl_url_cleanup(u);
    if (!out->host || !out->base) {
        fc_url_free(out);
        return FC_EINVAL;
    }
    return FC_OK;
}

void fc_url_free(fc_url *u) {
    if (u->password) memset(u->password, 0, strlen(u->password));
    curl_free(u->host);
    curl_free(u->path);
    curl_free(u->user);
    curl_free(u->password);
    curl_free(u->base);
    memset(u, 0, sizeof(*u));
}
