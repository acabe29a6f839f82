/* The RabbitMQ management API (GET /api/queues/<vhost>), for the queue depths `status` shows: the
 * base URL is RABBITMQ_MANAGEMENT_URL or http://<host of the first AMQP_URL>:15672, the credentials
 * those of the management URL, else of the AMQP URL. The password goes to libcurl only. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fc_buf.h"
#include "fc_error.h"

#define MGMT_PORT 15672
#define MGMT_TIMEOUT_MS 5000L
#define MGMT_CONNECT_TIMEOUT_MS 2000L
#define MGMT_MAX_BYTES (64L << 20)

typedef struct endpoint {
    char base[512];      /* scheme://host:port[/path], no credentials, no trailing '/' */
    char vhost[256];     /* the AMQP URL's vhost, percent-encoded as in the URL */
    char *user, *pass;   /* owned, URL-decoded; pass wiped on free */
} endpoint;

static void wipe_free(char *s) {
    if (s) memset(s, 0, strlen(s));
    curl_free(s);
}

static void endpoint_free(endpoint *e) {
    wipe_free(e->user);
    wipe_free(e->pass);
    e->user = e->pass = NULL;
}

/* first_url copies the first URL of a comma-separated list (caller wipes and frees). */
static char *first_url(const char *list) {
    list += strspn(list, " ,");
    size_t n = strcspn(list, ",");
    while (n && list[n - 1] == ' ') n--;
    return strndup(list, n);
}

/* part returns a URL part (curl_free it), or NULL when absent. */
static char *part(CURLU *u, CURLUPart what, unsigned flags) {
    char *s = NULL;
    return curl_url_get(u, what, &s, flags) == CURLUE_OK ? s : NULL;
}

/* from_amqp reads host, vhost and credentials of the first AMQP URL into e (guest/guest and vhost "/"
 * when absent, as the AMQP client takes them). */
static int from_amqp(endpoint *e, const char *amqp_urls) {
    char *url = first_url(amqp_urls);
    CURLU *u = curl_url();
    int rc = url && u && curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK ? FC_OK
                                                                                                      : FC_EINVAL;
    char *host = rc == FC_OK ? part(u, CURLUPART_HOST, 0) : NULL, *path = rc == FC_OK ? part(u, CURLUPART_PATH, 0) : NULL;
    if (rc == FC_OK && host) {
        snprintf(e->base, sizeof(e->base), "http://%s:%d", host, MGMT_PORT);
        const char *v = path && path[0] == '/' ? path + 1 : path ? path : "";
        snprintf(e->vhost, sizeof(e->vhost), "%s", *v ? v : "%2F");
        e->user = part(u, CURLUPART_USER, CURLU_URLDECODE);
        e->pass = part(u, CURLUPART_PASSWORD, CURLU_URLDECODE);
    } else {
        rc = FC_EINVAL;
    }
    curl_free(host);
    curl_free(path);
    curl_url_cleanup(u);
    if (url) memset(url, 0, strlen(url));
    free(url);
    return rc;
}

/* from_setting replaces the base (and the credentials, if it carries some) with RABBITMQ_MANAGEMENT_URL's. */
static int from_setting(endpoint *e, const char *mgmt_url) {
    CURLU *u = curl_url();
    if (!u || curl_url_set(u, CURLUPART_URL, mgmt_url, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        return FC_EINVAL;
    }
    char *user = part(u, CURLUPART_USER, CURLU_URLDECODE), *pass = part(u, CURLUPART_PASSWORD, CURLU_URLDECODE);
    if (user || pass) {
        endpoint_free(e);
        e->user = user;
        e->pass = pass;
    }
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    char *base = part(u, CURLUPART_URL, 0);
    int rc = base ? FC_OK : FC_EINVAL;
    if (base) {
        size_t n = strlen(base);
        while (n && base[n - 1] == '/') n--;
        if (n >= 4 && strncmp(base + n - 4, "/api", 4) == 0) n -= 4;
        snprintf(e->base, sizeof(e->base), "%.*s", (int)n, base);
    }
    curl_free(base);
    curl_url_cleanup(u);
    return rc;
}

static int endpoint_init(endpoint *e, const fc_config *cfg) {
    memset(e, 0, sizeof(*e));
    int rc = from_amqp(e, cfg->amqp_url);
    if (rc == FC_OK && cfg->mgmt_url) rc = from_setting(e, cfg->mgmt_url);
    if (rc != FC_OK) endpoint_free(e);
    return rc;
}

int mgmt_location(const fc_config *cfg, char *out, size_t outlen) {
    endpoint e;
    int rc = endpoint_init(&e, cfg);
    snprintf(out, outlen, "%s", rc == FC_OK ? e.base : "(unparsable URL)");
    endpoint_free(&e);
    return rc;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    fc_buf *b = ud;
    if (b->len + size * n > (size_t)MGMT_MAX_BYTES) return 0;
    return fc_buf_append(b, p, size * n) == FC_OK ? size * n : 0;
}

/* get fetches base + path into body: 0, FC_ECONN (no answer), FC_EACCESS (401/403) or FC_EPARSE
 * (another status), with why. */
static int get(const endpoint *e, const char *path, fc_buf *body, char *why, size_t whylen) {
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", e->base, path);
    CURL *c = curl_easy_init();
    if (!c) return FC_ENOMEM;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERNAME, e->user ? e->user : "guest");
    curl_easy_setopt(c, CURLOPT_PASSWORD, e->pass ? e->pass : "guest");
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, MGMT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, MGMT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "flashcard-admin/" FC_VERSION);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s: %s", e->base, curl_easy_strerror(cc));
        return FC_ECONN;
    }
    if (status == 401 || status == 403) {
        snprintf(why, whylen, "%s refused the credentials (HTTP %ld; the user needs the monitoring tag)", e->base,
                 status);
        return FC_EACCESS;
    }
    if (status != 200) {
        snprintf(why, whylen, "%s answered HTTP %ld", e->base, status);
        return FC_EPARSE;
    }
    return FC_OK;
}

static long member_long(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int)) return -1;
    return (long)json_object_get_int64(v);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const queue_row *)a)->name, ((const queue_row *)b)->name);
}

/* pick keeps the queues of arr whose names start with prefix. */
static int pick(json_object *arr, const char *prefix, queue_row **rows, size_t *n) {
    size_t len = json_object_array_length(arr), plen = strlen(prefix);
    *rows = calloc(len ? len : 1, sizeof(**rows));
    if (!*rows) return FC_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        json_object *q = json_object_array_get_idx(arr, i), *name;
        if (!json_object_object_get_ex(q, "name", &name) || !json_object_is_type(name, json_type_string)) continue;
        const char *s = json_object_get_string(name);
        if (strncmp(s, prefix, plen) != 0 || s[plen] != '.') continue;
        queue_row *r = &(*rows)[(*n)++];
        snprintf(r->name, sizeof(r->name), "%s", s);
        r->ready = member_long(q, "messages_ready");
        r->unacked = member_long(q, "messages_unacknowledged");
        r->consumers = member_long(q, "consumers");
    }
    qsort(*rows, *n, sizeof(**rows), by_name);
    return FC_OK;
}

int mgmt_queues(const fc_config *cfg, queue_row **rows, size_t *n, char *why, size_t whylen) {
    endpoint e;
    *rows = NULL;
    *n = 0;
    if (endpoint_init(&e, cfg) != FC_OK) {
        snprintf(why, whylen, "RABBITMQ_MANAGEMENT_URL or AMQP_URL does not parse as a URL");
        return FC_EINVAL;
    }
    char path[400];
    snprintf(path, sizeof(path), "/api/queues/%s?columns=name,messages_ready,messages_unacknowledged,consumers",
             e.vhost);
    fc_buf body = {0};
    int rc = get(&e, path, &body, why, whylen);
    endpoint_free(&e);
    json_object *arr = rc == FC_OK && body.data ? json_tokener_parse(body.data) : NULL;
    if (rc == FC_OK && !json_object_is_type(arr, json_type_array)) {
        snprintf(why, whylen, "the management API's answer is not a list of queues");
        rc = FC_EPARSE;
    }
    if (rc == FC_OK) rc = pick(arr, cfg->queue_prefix, rows, n);
    json_object_put(arr);
    fc_buf_free(&body);
    return rc;
}
