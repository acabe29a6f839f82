/* Fuzz target of the settings parsers (fc_config.c and the RATE_LIMITS parser of fc_limiter.c). Input: a
 * selector byte, then text. 0: a duration (fc_duration_parse); 1: a RATE_LIMITS spec (fc_limits_parse);
 * 2-4: a command line of the producer, the worker or flashcard-admin, one argument per line, through
 * fc_config_load (every integer, duration and list setting goes through it). A parsed value must be within
 * the bounds the table and the headers promise; a refusal must name the setting on one line. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_config.h"
#include "fc_error.h"
#include "fc_limiter.h"
#include "fuzz_check.h"

#define DAY_MS 86400000L

static void duration(const char *s) {
    long ms = -1;
    int rc = fc_duration_parse(s, &ms);
    if (rc != FC_OK) {
        FUZZ_CHECK(rc == FC_EINVAL || rc == FC_ERANGE, "rc %d", rc);
        return;
    }
    FUZZ_CHECK(ms >= 0 && ms <= LONG_MAX / 2 + 1, "ms %ld", ms);
    char again[32];
    long back = -1;
    snprintf(again, sizeof(again), "%ldms", ms);
    FUZZ_CHECK(fc_duration_parse(again, &back) == FC_OK && back == ms, "'%s' gives %ld", again, back);
}

static int api_name_ok(const char *s) {
    size_t n = strnlen(s, FC_LIMITS_API_MAX);
    if (n == 0 || n == FC_LIMITS_API_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", s[i])) return 0;
    return 1;
}

static void limits(const char *spec) {
    fc_api_limits v[16];
    size_t n = 99;
    char err[256] = "", why[256];
    int rc = fc_limits_parse(spec, v, 16, &n, err, sizeof(err));
    if (rc != FC_OK) {
        FUZZ_CHECK(rc == FC_EPARSE || rc == FC_ERANGE || rc == FC_ETOOBIG, "rc %d", rc);
        FUZZ_CHECK(*err && memchr(err, '\0', sizeof(err)), "no reason");
        return;
    }
    FUZZ_CHECK(n <= 16, "%zu entries", n);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(api_name_ok(v[i].api), "api name of entry %zu", i);
        FUZZ_CHECK(fc_limit_validate(v[i].calls, "calls", why, sizeof(why)) == FC_OK, "entry %zu calls: %s", i, why);
        FUZZ_CHECK(fc_limit_validate(v[i].tokens, "tokens", why, sizeof(why)) == FC_OK, "entry %zu tokens: %s", i, why);
        const fc_api_limits *f = fc_limits_find(v, n, v[i].api);
        FUZZ_CHECK(f && f <= &v[i] && strcmp(f->api, v[i].api) == 0, "find '%s'", v[i].api);
    }
}

#define IN(x, lo, hi) ((x) >= (lo) && (x) <= (hi))

static void check_config(const fc_config *c, int program) {
    FUZZ_CHECK(c->nretry_delays >= 1 && c->nretry_delays <= FC_MAX_DELAYS, "%d delays", c->nretry_delays);
    for (int i = 0; i < c->nretry_delays; i++) FUZZ_CHECK(IN(c->retry_delays[i], 1, DAY_MS), "delay %ld", c->retry_delays[i]);
    FUZZ_CHECK(IN(c->heartbeat_ms, 0, 600000) && IN(c->rate_limit, 0, 1000000000L), "heartbeat/rate");
    FUZZ_CHECK(c->queue_prefix && IN(strlen(c->queue_prefix), 1, 64), "queue prefix");
    if (program == FC_ADMIN) return;
    FUZZ_CHECK(IN(c->delivery_limit, 1, 1000), "delivery limit %d", c->delivery_limit);
    FUZZ_CHECK(IN(c->batch_size, program == FC_PRODUCER ? 0 : 1, 10000), "batch size %d", c->batch_size);
    if (program == FC_PRODUCER) {
        FUZZ_CHECK(IN(c->batch_max_bytes, 1024, 16 << 20) && IN(c->wait_timeout_ms, 0, 365 * DAY_MS), "producer");
        return;
    }
    FUZZ_CHECK(IN(c->max_attempts, 1, 100) && IN(c->worker_count, 1, 4096) && IN(c->prefetch, 0, 10000), "worker ints");
    FUZZ_CHECK(IN(c->api_timeout_ms, 100, DAY_MS) && IN(c->api_connect_timeout_ms, 100, 600000), "timeouts");
    FUZZ_CHECK(IN(c->retry_after_max_ms, 1000, 3600000) && IN(c->hold_limit_ms, 1000, 1500000), "durations");
    FUZZ_CHECK(isfinite(c->temperature) && c->temperature >= 0 && c->temperature <= 2, "temperature");
    FUZZ_CHECK(IN(c->max_tokens, 1, 1000000) && IN(c->metrics_port, 0, 65535) && IN(c->fleet_size, 1, 10000), "ints");
    FUZZ_CHECK(IN(c->api_max_response_bytes, 1024, 268435456L) && IN(c->token_limit, 0, 1000000000000L), "longs");
    FUZZ_CHECK(c->api_name && c->stage1_model && c->stage2_model, "derived names");
}

/* command_line runs fc_config_load over the arguments on the lines of text (at most 16). */
static void command_line(char *text, int program) {
    char text_seen[4096];
    snprintf(text_seen, sizeof(text_seen), "%s", text); /* before strtok_r cuts it */
    static char prog[] = "fuzz";
    char *argv[18] = {prog};
    int argc = 1;
    for (char *save, *a = strtok_r(text, "\n", &save); a && argc < 17; a = strtok_r(NULL, "\n", &save)) {
        /* no files are read, nothing is printed: the *_FILE settings and --help/--version are another test's */
        if (strstr(a, "file") || !strcmp(a, "-h") || !strncmp(a, "--h", 3) || !strncmp(a, "--v", 3)) return;
        argv[argc++] = a;
    }
    argv[argc] = NULL;
    fc_config cfg;
    char err[512];
    memset(err, 'x', sizeof(err));
    int rc = fc_config_load(&cfg, program, argc, argv, err, sizeof(err));
    if (rc == FC_OK) {
        check_config(&cfg, program);
    } else {
        FUZZ_CHECK(rc == FC_EINVAL, "rc %d", rc);
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) && *err, "no message");
        FUZZ_CHECK(!strstr(err, ":guest@") || strstr(text_seen, ":guest@"), "the default password shown: %s", err);
    }
    fc_config_free(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int cleared;
    if (!cleared) { /* the settings come from the input only, never from the environment */
        clearenv();
        cleared = 1;
    }
    if (size < 1) return 0;
    char *s = strndup((const char *)data + 1, size - 1);
    FUZZ_CHECK(s != NULL, "out of memory");
    static const int programs[3] = {FC_PRODUCER, FC_WORKER, FC_ADMIN};
    int sel = data[0] % 5;
    if (sel == 0) duration(s);
    else if (sel == 1) limits(s);
    else command_line(s, programs[sel - 2]);
    free(s);
    return 0;
}
