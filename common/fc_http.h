/* HTTP client: the one module that speaks libcurl. Many POSTs in flight from one thread
 * through the multi interface, with connection reuse, timeouts and stall detection. */
#ifndef FC_HTTP_H
#define FC_HTTP_H

#include <stddef.h>

#include "fc_buf.h"

typedef struct fc_http fc_http;

typedef struct fc_http_conf {
    const char *bearer;         /* Authorization: Bearer <bearer>; secret, never logged */
    const char *referer;        /* HTTP-Referer header, NULL = none */
    const char *title;          /* X-Title header, NULL = none */
    const char *user_agent;
    long timeout_ms;            /* total per request */
    long connect_timeout_ms;
    size_t max_body_bytes;      /* largest response body accepted, bytes; 0 = no cap. A larger one fails the
                                 * request with FC_ETOOBIG (see fc_http_done), refused at its Content-Length
                                 * when it announces one, else cut off as soon as it passes the cap */
    const char *ca_file;        /* CA certificates (PEM) verifying https:// servers; NULL = the system's bundle */
} fc_http_conf;

typedef struct fc_pollfd {
    int fd;
    int readable;               /* set by fc_http_wait */
} fc_pollfd;

/* A finished request. body is borrowed until the next fc_http_next or fc_http_post; never NULL. */
typedef struct fc_http_done {
    void *ud;
    int status;                 /* HTTP status; 0 after FC_ETIMEOUT or FC_ECONN */
    int err;                    /* 0, FC_ETIMEOUT or FC_ECONN (transport failure), or FC_ETOOBIG: the body
                                 * passed max_body_bytes, status is the one received and there is no body */
    const char *body;           /* the response body, len bytes ("" with len 0 after FC_ETOOBIG) */
    size_t len;
    long retry_after_s;         /* Retry-After in seconds, 0 if absent */
    double elapsed_ms;
    char error[200];            /* error text ("" if none), e.g. "answer larger than 1048576 bytes" */
    /* The provider's rate-limit headers of this answer, 2xx or error (OpenAI's x-ratelimit-* names, any case):
     * limits and remaining counts as sent, reset times in ms (see fc_http_duration_parse). Each is -1 when its
     * header is absent or unreadable, and all are -1 after a transport failure (FC_ETIMEOUT, FC_ECONN). */
    double rl_limit_requests, rl_remaining_requests, rl_reset_requests_ms;
    double rl_limit_tokens, rl_remaining_tokens, rl_reset_tokens_ms;
} fc_http_done;

/* fc_http_global_init/cleanup wrap libcurl's process-wide setup: call once from main. */
void fc_http_global_init(void);
void fc_http_global_cleanup(void);

/* fc_http_new copies conf; NULL on failure. */
fc_http *fc_http_new(const fc_http_conf *conf);
void fc_http_free(fc_http *h);

/* fc_http_post starts a POST of a JSON body to url; ud comes back in fc_http_done. body is borrowed, not copied:
 * it must stay as it is until fc_http_next hands this request back or it is cancelled. */
int fc_http_post(fc_http *h, const char *url, const char *body, size_t len, void *ud);

/* fc_http_wait sleeps until a transfer progresses, one of fds is readable, or timeout_ms
 * passes, then drives the transfers. Returns 0 or FC_EIO. */
int fc_http_wait(fc_http *h, fc_pollfd *fds, int nfds, int timeout_ms);

/* fc_http_kick drives the transfers without waiting: new requests go out at once instead of
 * after the next wait. Returns 0 or FC_EIO. */
int fc_http_kick(fc_http *h);

/* fc_http_next pops one finished request into *d; returns 1 if it did, 0 if none. */
int fc_http_next(fc_http *h, fc_http_done *d);

/* fc_http_running returns the number of requests in flight. */
int fc_http_running(const fc_http *h);

/* fc_http_cancel aborts the request in flight whose ud is ud, if any. */
void fc_http_cancel(fc_http *h, void *ud);

/* fc_http_cancel_all aborts every request in flight, calling cb(ud) for each. */
void fc_http_cancel_all(fc_http *h, void (*cb)(void *ud, void *arg), void *arg);

/* The longest Retry-After taken from an answer, in seconds (a day): a larger one, or a date further ahead, is
 * cut to this, so that no arithmetic on it (seconds * 1000) can overflow. */
#define FC_HTTP_RETRY_AFTER_MAX_S 86400L

/* fc_http_retry_after_parse reads the value of a Retry-After header (value[0..len), any bytes, need not be
 * NUL-terminated; spaces and tabs around it ignored): delay-seconds (digits; a fraction such as "1.5" is
 * cut to whole seconds) or an HTTP-date, which counts from now_s (unix seconds). Returns 0 with *seconds in
 * 0..FC_HTTP_RETRY_AFTER_MAX_S (a date in the past gives 0), or FC_EPARSE with *seconds 0. */
int fc_http_retry_after_parse(const char *value, size_t len, long long now_s, long *seconds);

/* The longest duration taken from a rate-limit reset header, in ms (a day); a longer one is cut to this. */
#define FC_HTTP_DURATION_MAX_MS 86400000.0

/* fc_http_duration_parse reads a duration as OpenAI sends it in x-ratelimit-reset-* (value[0..len), any bytes,
 * need not be NUL-terminated; spaces and tabs around it ignored): components of digits, an optional fraction
 * and a unit, the units h, m, s, ms each at most once and in that order ("20ms", "1s", "0.5s", "6m0s",
 * "1h2m3s", "41.724s"), or a plain number of seconds ("2", "0.25"). No sign, exponent or other unit. Returns 0
 * with *ms in 0..FC_HTTP_DURATION_MAX_MS (a longer duration is cut to it), or FC_EPARSE with *ms -1. */
int fc_http_duration_parse(const char *value, size_t len, double *ms);

/* ---- one-off requests, for operator tools (never inside the worker's loop: it blocks) ---- */

/* fc_http_get fetches url with basic authentication (user NULL: none), at most timeout_ms, the
 * body capped at max_bytes. Returns 0 with *status (any HTTP status) and the body appended to
 * *body, or FC_ECONN (no answer; why says what, without the password), FC_ETOOBIG, FC_ENOMEM. */
int fc_http_get(const char *url, const char *user, const char *password, long timeout_ms, size_t max_bytes,
                const char *user_agent, long *status, fc_buf *body, char *why, size_t whylen);

/* A URL in pieces, URL-decoded where it says so. NULL for a piece that is absent. */
typedef struct fc_url {
    char *host;
    char *path;                 /* as written (percent-encoded), "/" when absent */
    char *user, *password;      /* decoded */
    char *base;                 /* the URL without credentials, query or fragment */
} fc_url;

/* fc_url_parse splits url (any scheme, e.g. amqp://) into u: 0, FC_EINVAL, or FC_ENOMEM.
 * Free with fc_url_free, which also wipes the password. */
int fc_url_parse(const char *url, fc_url *u);
void fc_url_free(fc_url *u);

#endif
