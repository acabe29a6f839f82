/* The RabbitMQ management API (GET /api/queues/<vhost>), for the queue depths `status` shows: the
 * base URL is RABBITMQ_MANAGEMENT_URL or http://<host of the first AMQP_URL>:15672, the credentials
 * those of the management URL, else of the AMQP URL. The password goes to the HTTP client only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fc_buf.h"
#include "fc_error.h"
#include "fc_http.h"

#define MGMT_PORT 15672
#define MGMT_TIMEOUT_MS 5000L
#define MGMT_MAX_BYTES (64L << 20)

typedef struct endpoint {
    char base[512];      /* scheme://host:port[/path], no credentials, no trailing '/' */
    char vhost[256];     /* the AMQP URL's vhost, percent-encoded as in the URL */
    fc_url amqp, mgmt;   /* the credentials come from mgmt when it has some, else from amqp */
} endpoint;

static void endpoint_free(endpoint *e) {
    fc_url_free(&e->amqp);
    fc_url_free(&e->mgmt);
}

/* first_url copies the first URL of a comma-separated list (caller wipes and frees). */
static char *first_url(const char *list) {
    list += strspn(list, " ,");
    size_t n = strcspn(list, ",");
    while (n && list[n - 1] == ' ') n--;
    return strndup(list, n);
}

/* from_amqp reads host, vhost and credentials of the first AMQP URL into e (guest/guest and vhost "/"
 * when absent, as the AMQP client takes them). */
static int from_amqp(endpoint *e, const char *amqp_urls) {
    char *url = first_url(amqp_urls);
    int rc = url ? fc_url_parse(url, &e->amqp) : FC_ENOMEM;
    if (url) memset(url, 0, strlen(url));
    free(url);
    if (rc != FC_OK) return FC_EINVAL;
    snprintf(e->base, sizeof(e->base), "http://%s:%d", e->amqp.host, MGMT_PORT);
    const char *path = e->amqp.path ? e->amqp.path : "";
    const char *v = path[0] == '/' ? path + 1 : path;
    snprintf(e->vhost, sizeof(e->vhost), "%s", *v ? v : "%2F");
    return FC_OK;
}

/* from_setting replaces the base (and the credentials, if it carries some) with RABBITMQ_MANAGEMENT_URL's. */
static int from_setting(endpoint *e, const char *mgmt_url) {
    if (fc_url_parse(mgmt_url, &e->mgmt) != FC_OK) return FC_EINVAL;
    size_t n = strlen(e->mgmt.base);
    while (n && e->mgmt.base[n - 1] == '/') n--;
    if (n >= 4 && strncmp(e->mgmt.base + n - 4, "/api", 4) == 0) n -= 4;
    snprintf(e->base, sizeof(e->base), "%.*s", (int)n, e->mgmt.base);
    return FC_OK;
}

static int endpoint_init(endpoint *e, const fc_config *cfg) {
    memset(e, 0, sizeof(*e));
    int rc = from_amqp(e, cfg->amqp_url);
    if (rc == FC_OK && cfg->mgmt_url) rc = from_setting(e, cfg->mgmt_url);
    if (rc != FC_OK) endpoint_free(e);
    return rc;
}

int admin_mgmt_location(const fc_config *cfg, char *out, size_t outlen) {
    endpoint e;
    int rc = endpoint_init(&e, cfg);
    snprintf(out, outlen, "%s", rc == FC_OK ? e.base : "(unparsable URL)");
    endpoint_free(&e);
    return rc;
}

/* get fetches base + path into body: 0, FC_ECONN (no answer), FC_EACCESS (401/403) or FC_EPARSE
 * (another status), with why. */
static int get(const endpoint *e, const char *path, fc_buf *body, char *why, size_t whylen) {
    char url[1024], err[256];
    snprintf(url, sizeof(url), "%s%s", e->base, path);
    const fc_url *cred = e->mgmt.user || e->mgmt.password ? &e->mgmt : &e->amqp;
    long status = 0;
    int rc = fc_http_get(url, cred->user ? cred->user : "guest", cred->password ? cred->password : "guest",
                         MGMT_TIMEOUT_MS, (size_t)MGMT_MAX_BYTES, "flashcard-admin/" FC_VERSION, &status, body, err,
                         sizeof(err));
    if (rc != FC_OK) {
        snprintf(why, whylen, "%s: %s", e->base, err);
        return rc == FC_ENOMEM ? FC_ENOMEM : FC_ECONN;
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
    return strcmp(((const admin_queue_row *)a)->name, ((const admin_queue_row *)b)->name);
}

/* pick keeps the queues of arr whose names start with prefix. */
static int pick(json_object *arr, const char *prefix, admin_queue_row **rows, size_t *n) {
    size_t len = json_object_array_length(arr), plen = strlen(prefix);
    *rows = calloc(len ? len : 1, sizeof(**rows));
    if (!*rows) return FC_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        json_object *q = json_object_array_get_idx(arr, i), *name;
        if (!json_object_object_get_ex(q, "name", &name) || !json_object_is_type(name, json_type_string)) continue;
        const char *s = json_object_get_string(name);
        if (strncmp(s, prefix, plen) != 0 || s[plen] != '.') continue;
        admin_queue_row *r = &(*rows)[(*n)++];
        snprintf(r->name, sizeof(r->name), "%s", s);
        r->ready = member_long(q, "messages_ready");
        r->unacked = member_long(q, "messages_unacknowledged");
        r->consumers = member_long(q, "consumers");
    }
    qsort(*rows, *n, sizeof(**rows), by_name);
    return FC_OK;
}

int admin_mgmt_queues(const fc_config *cfg, admin_queue_row **rows, size_t *n, char *why, size_t whylen) {
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
