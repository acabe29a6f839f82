/* The settings table and its loader: defaults, then environment variables, then --flags. */
#include "fc_config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_amqp.h"
#include "fc_error.h"
#include "fc_http.h"
#include "fc_limiter.h"
#include "fc_log.h"
#include "fc_redis.h"

enum setting_type { T_STR, T_SECRET, T_INT, T_LONG, T_DOUBLE, T_DURATION, T_DURLIST, T_BOOL };

typedef struct setting {
    const char *env;   /* environment variable, NULL for flag-only settings */
    const char *flag;  /* long flag without the leading "--" */
    int type;
    int program;       /* the binaries that take it: FC_PRODUCER, FC_WORKER, FC_ADMIN bits (FC_BOTH, FC_ALL) */
    double min, max;   /* bounds for numbers and durations (ms) */
    const char *def;   /* default as text; NULL = unset */
    size_t offset;     /* into fc_config */
    const char *help;
} setting;

#define OFF(f) offsetof(fc_config, f)
#define DAY (86400000.0)

static const setting settings[] = {
    {"AMQP_URL", "amqp-url", T_SECRET, FC_ALL, 0, 0, "amqp://guest:guest@127.0.0.1:5672/%2f", OFF(amqp_url),
     "RabbitMQ URL (amqp:// or amqps://), or the URLs of a cluster's nodes separated by commas"},
    {"AMQP_URL_FILE", "amqp-url-file", T_STR, FC_ALL, 0, 0, NULL, OFF(amqp_url_file),
     "file holding AMQP_URL (container secrets)"},
    {"AMQP_CA_FILE", "amqp-ca-file", T_STR, FC_ALL, 0, 0, NULL, OFF(amqp_ca_file),
     "CA certificates (PEM) that verify an amqps:// broker (default: the system's)"},
    {"AMQP_CERT_FILE", "amqp-cert-file", T_STR, FC_ALL, 0, 0, NULL, OFF(amqp_cert_file),
     "client certificate (PEM) for amqps://, with AMQP_KEY_FILE"},
    {"AMQP_KEY_FILE", "amqp-key-file", T_STR, FC_ALL, 0, 0, NULL, OFF(amqp_key_file),
     "private key (PEM) of AMQP_CERT_FILE"},
    {"REDIS_URL", "redis-url", T_SECRET, FC_ALL, 0, 0, "redis://127.0.0.1:6379/0", OFF(redis_url),
     "Redis URL redis://[[user]:password@]host[:port][/db]"},
    {"REDIS_URL_FILE", "redis-url-file", T_STR, FC_ALL, 0, 0, NULL, OFF(redis_url_file),
     "file holding REDIS_URL (container secrets)"},
    {"REDIS_SENTINELS", "redis-sentinels", T_STR, FC_ALL, 0, 0, NULL, OFF(redis_sentinels),
     "Redis Sentinels host:port,... to ask for the primary (REDIS_URL then gives password and db)"},
    {"REDIS_SENTINEL_MASTER", "redis-sentinel-master", T_STR, FC_ALL, 0, 0, "mymaster",
     OFF(redis_sentinel_master), "name of the primary the sentinels watch"},
    {"QUEUE_PREFIX", "queue-prefix", T_STR, FC_ALL, 0, 0, "flashcard", OFF(queue_prefix),
     "namespace of every exchange, queue and Redis key"},
    {"LOG_LEVEL", "log-level", T_STR, FC_ALL, 0, 0, "info", OFF(log_level), "debug, info, warn or error"},
    {"LOG_FORMAT", "log-format", T_STR, FC_ALL, 0, 0, "text", OFF(log_format), "text or json (one object per line)"},
    {"BATCH_SIZE", "batch-size", T_STR, FC_BOTH, 0, 0, "100", OFF(batch_size_text),
     "items per batch message, 1..10000, or auto (producer)"},
    {"RATE_LIMIT", "rate-limit", T_LONG, FC_BOTH, 0, 1e9, "60", OFF(rate_limit),
     "API calls per minute for the whole fleet; 0 = unlimited"},
    {"MAX_ATTEMPTS", "max-attempts", T_INT, FC_WORKER, 1, 100, "5", OFF(max_attempts),
     "attempts per item before it is dead-lettered"},
    {"RETRY_DELAYS", "retry-delays", T_DURLIST, FC_ALL, 1, DAY, "5s,30s,2m,10m", OFF(retry_delays),
     "delay before attempt 2, 3, ... (last one repeats)"},
    {"HEARTBEAT", "heartbeat", T_DURATION, FC_ALL, 0, 600000, "30s", OFF(heartbeat_ms),
     "AMQP heartbeat interval (whole seconds; 0 = off)"},
    {"DELIVERY_LIMIT", "delivery-limit", T_INT, FC_BOTH, 1, 1000, "10", OFF(delivery_limit),
     "redeliveries of one batch before the broker dead-letters it"},
    {"WORKER_COUNT", "worker-count", T_INT, FC_WORKER, 1, 4096, NULL, OFF(worker_count),
     "API calls in flight per worker process (default: CPU count)"},
    {"PREFETCH", "prefetch", T_INT, FC_WORKER, 0, 10000, "0", OFF(prefetch),
     "batches held unacked per process; 0 = enough to keep WORKER_COUNT calls busy"},
    {"API_BASE_URL", "api-base-url", T_STR, FC_WORKER, 0, 0, "https://openrouter.ai/api/v1", OFF(api_base_url),
     "OpenAI-compatible API; the worker POSTs to $API_BASE_URL/chat/completions"},
    {"API_KEY", "api-key", T_SECRET, FC_WORKER, 0, 0, NULL, OFF(api_key), "API key (secret)"},
    {"API_KEY_FILE", "api-key-file", T_STR, FC_WORKER, 0, 0, NULL, OFF(api_key_file),
     "file holding the API key (container secrets)"},
    {"API_MODEL", "api-model", T_STR, FC_WORKER, 0, 0, "anthropic/claude-3.5-sonnet", OFF(api_model), "model name"},
    {"STAGE1_MODEL", "stage1-model", T_STR, FC_WORKER, 0, 0, NULL, OFF(stage1_model), "model of stage 1 (analysis)"},
    {"STAGE2_MODEL", "stage2-model", T_STR, FC_WORKER, 0, 0, NULL, OFF(stage2_model), "model of stage 2 (cards)"},
    {"API_NAME", "api-name", T_STR, FC_WORKER, 0, 0, NULL, OFF(api_name),
     "name of the API for limits and breaker (default: from the API host)"},
    {"API_TIMEOUT", "api-timeout", T_DURATION, FC_WORKER, 100, DAY, "120s", OFF(api_timeout_ms),
     "total time allowed for one API call"},
    {"API_CONNECT_TIMEOUT", "api-connect-timeout", T_DURATION, FC_WORKER, 100, 600000, "10s",
     OFF(api_connect_timeout_ms), "connect timeout of an API call"},
    {"API_CA_FILE", "api-ca-file", T_STR, FC_WORKER, 0, 0, NULL, OFF(api_ca_file),
     "CA certificates (PEM) that verify an https:// API (default: the system's bundle)"},
    {"API_MAX_RESPONSE_BYTES", "api-max-response-bytes", T_LONG, FC_WORKER, 1024, 268435456, "1048576",
     OFF(api_max_response_bytes),
     "largest API answer read; a bigger one fails the call as a retryable error and is never cached"},
    {"RETRY_AFTER_MAX", "retry-after-max", T_DURATION, FC_WORKER, 1000, 3600000, "2m", OFF(retry_after_max_ms),
     "longest fleet pause a 429's Retry-After may ask for; longer requests are cut to this"},
    {"TEMPERATURE", "temperature", T_DOUBLE, FC_WORKER, 0, 2, "0.7", OFF(temperature), "sampling temperature"},
    {"MAX_TOKENS", "max-tokens", T_INT, FC_WORKER, 1, 1000000, "2000", OFF(max_tokens), "max_tokens per call"},
    {"PROMPT_DIR", "prompt-dir", T_STR, FC_WORKER, 0, 0, NULL, OFF(prompt_dir),
     "folder holding stage1_system.txt and stage2_system.txt"},
    {"HTTP_REFERER", "http-referer", T_STR, FC_WORKER, 0, 0, NULL, OFF(http_referer), "HTTP-Referer header"},
    {"X_TITLE", "x-title", T_STR, FC_WORKER, 0, 0, NULL, OFF(x_title), "X-Title header"},
    {"RATE_BURST", "rate-burst", T_LONG, FC_WORKER, 0, 1e9, "0", OFF(rate_burst),
     "bucket capacity in calls; 0 = one second of RATE_LIMIT (at least 1)"},
    {"TOKEN_LIMIT", "token-limit", T_LONG, FC_WORKER, 0, 1e12, "0", OFF(token_limit),
     "API tokens per minute for the fleet; 0 = unlimited"},
    {"RATE_LIMITS", "rate-limits", T_STR, FC_WORKER, 0, 0, NULL, OFF(rate_limits),
     "named limits per API, e.g. 'openrouter=600/min,burst=20;tokens=200000/min'"},
    {"RATE_LIMIT_FALLBACK", "rate-limit-fallback", T_STR, FC_WORKER, 0, 0, "pause", OFF(rate_limit_fallback),
     "when Redis is down: pause (no calls) or local (RATE_LIMIT / FLEET_SIZE per process)"},
    {"RATE_ADAPT", "rate-adapt", T_INT, FC_WORKER, 0, 1, "1", OFF(rate_adapt),
     "1: the fleet's calls rate adapts to the provider (its rate-limit headers, else AIMD on 429s), never "
     "above RATE_LIMIT; 0: a 429 pauses the fleet, then calls resume at RATE_LIMIT"},
    {"FLEET_SIZE", "fleet-size", T_INT, FC_WORKER, 1, 10000, "1", OFF(fleet_size),
     "expected worker processes, for the local fallback"},
    {"HOLD_LIMIT", "hold-limit", T_DURATION, FC_WORKER, 1000, 1500000, "5m", OFF(hold_limit_ms),
     "longest a delivery is held unacked before it is checkpointed"},
    {"SHUTDOWN_TIMEOUT", "shutdown-timeout", T_DURATION, FC_WORKER, 0, 3600000, "30s", OFF(shutdown_timeout_ms),
     "time calls in flight get to finish after SIGTERM"},
    {"CACHE_TTL", "cache-ttl", T_DURATION, FC_WORKER, 0, 365 * DAY, "7d", OFF(cache_ttl_ms),
     "lifetime of cached stage results in Redis; 0 = no cache"},
    {"BREAKER_FAILURES", "breaker-failures", T_INT, FC_WORKER, 1, 100000, "10", OFF(breaker_failures),
     "consecutive API failures that open the circuit breaker"},
    {"BREAKER_COOLDOWN", "breaker-cooldown", T_DURATION, FC_WORKER, 100, DAY, "30s", OFF(breaker_cooldown_ms),
     "time the breaker stays open before a probe call"},
    {"AUTH_RETRY", "auth-retry", T_DURATION, FC_WORKER, 100, 3600000, "30s", OFF(auth_retry_ms),
     "time between probe calls while the API rejects the credentials (401/403)"},
    {"METRICS_PORT", "metrics-port", T_INT, FC_WORKER, 0, 65535, "0", OFF(metrics_port),
     "port of /metrics, /healthz and /readyz on 127.0.0.1; 0 = off"},
    {"METRICS_BIND", "metrics-bind", T_STR, FC_WORKER, 0, 0, "127.0.0.1", OFF(metrics_bind),
     "IPv4 address of the metrics endpoint (0.0.0.0 in containers)"},
    {"PRICE_INPUT", "price-input", T_DOUBLE, FC_BOTH, 0, 1e6, "3", OFF(price_input),
     "price per million input tokens, for the cost estimate"},
    {"PRICE_OUTPUT", "price-output", T_DOUBLE, FC_BOTH, 0, 1e6, "15", OFF(price_output),
     "price per million output tokens, for the cost estimate"},
    {NULL, "format", T_STR, FC_PRODUCER, 0, 0, NULL, OFF(format), "csv, tsv or jsonl (default: from the extension)"},
    {NULL, "columns", T_STR, FC_PRODUCER, 0, 0, NULL, OFF(columns),
     "column mapping, e.g. position=Position,term=Hangul,type=Word_Type"},
    {"JOB_ID", "job-id", T_STR, FC_PRODUCER, 0, 0, NULL, OFF(job_id), "job id (default: generated)"},
    {NULL, "resume", T_BOOL, FC_PRODUCER, 0, 0, NULL, OFF(resume), "publish only batches not yet confirmed"},
    {"FAIR_SHARE", "fair-share", T_INT, FC_PRODUCER, 0, 1, "1", OFF(fair_share),
     "1: the job gets a work queue of its own, which the fleet shares fairly with other jobs' (workers of this "
     "version or later); 0: the shared work queue, first in first out"},
    {"JOB_PRIORITY", "priority", T_INT, FC_PRODUCER, 1, 10, "5", OFF(priority),
     "the job's weight in the fleet's fair share between jobs with work waiting (1..10)"},
    {"JOB_BUDGET_USD", "budget-usd", T_DOUBLE, FC_PRODUCER, 0, 1e9, "0", OFF(budget_usd),
     "most the job may spend, at PRICE_INPUT/PRICE_OUTPUT; 0 = no limit"},
    {"JOB_BUDGET_TOKENS", "budget-tokens", T_LONG, FC_PRODUCER, 0, 1e15, "0", OFF(budget_tokens),
     "most API tokens (prompt + completion) the job may use; 0 = no limit"},
    {NULL, "strict", T_BOOL, FC_PRODUCER, 0, 0, NULL, OFF(strict), "stop at the first bad row, publish nothing"},
    {NULL, "wait", T_BOOL, FC_PRODUCER, 0, 0, NULL, OFF(wait), "wait until every item has a final outcome"},
    {"WAIT_TIMEOUT", "timeout", T_DURATION, FC_PRODUCER, 0, 365 * DAY, "0", OFF(wait_timeout_ms),
     "give up waiting after this long; 0 = never"},
    {NULL, "output", T_STR, FC_PRODUCER, 0, 0, NULL, OFF(output), "results file: Anki TSV, or JSON Lines if *.jsonl"},
    {NULL, "report", T_STR, FC_PRODUCER, 0, 0, NULL, OFF(report), "JSON report file"},
    {"BATCH_MAX_BYTES", "batch-max-bytes", T_LONG, FC_PRODUCER, 1024, 16 << 20, "262144", OFF(batch_max_bytes),
     "a batch message closes before it passes this size"},
    {"RABBITMQ_MANAGEMENT_URL", "rabbitmq-management-url", T_SECRET, FC_ADMIN, 0, 0, NULL, OFF(mgmt_url),
     "RabbitMQ management API, e.g. http://host:15672 (default: the first AMQP_URL's host, port 15672, with its "
     "user and password)"},
    {"RABBITMQ_MANAGEMENT_URL_FILE", "rabbitmq-management-url-file", T_STR, FC_ADMIN, 0, 0, NULL, OFF(mgmt_url_file),
     "file holding RABBITMQ_MANAGEMENT_URL (container secrets)"},
    {NULL, "json", T_BOOL, FC_ADMIN, 0, 0, NULL, OFF(json), "print JSON for scripts instead of a table"},
    {NULL, "job", T_STR, FC_ADMIN, 0, 0, NULL, OFF(admin_job), "dead: only the dead letters of this job"},
    {NULL, "reason", T_STR, FC_ADMIN, 0, 0, NULL, OFF(admin_reason),
     "dead: only items of this error class (CLASS above)"},
    {NULL, "limit", T_LONG, FC_ADMIN, 1, 1e12, NULL, OFF(admin_limit), "dead list|replay|purge: at most this many items"},
    {NULL, "rate", T_DOUBLE, FC_ADMIN, 0.01, 1e6, NULL, OFF(admin_rate),
     "dead replay: at most this many dead letters per second (default: as fast as the broker confirms)"},
    {NULL, "yes", T_BOOL, FC_ADMIN, 0, 0, NULL, OFF(admin_yes), "dead purge: really remove"},
    {NULL, "output", T_STR, FC_ADMIN, 0, 0, NULL, OFF(output),
     "results: the file to write, Anki TSV, or JSON Lines if *.jsonl (must not exist)"},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

int fc_duration_parse(const char *s, long *ms) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v)) return FC_EINVAL;
    double mult = 1000;
    if (*end == '\0' || strcmp(end, "s") == 0) mult = 1000;
    else if (strcmp(end, "ms") == 0) mult = 1;
    else if (strcmp(end, "m") == 0) mult = 60000;
    else if (strcmp(end, "h") == 0) mult = 3600000;
    else if (strcmp(end, "d") == 0) mult = 86400000;
    else return FC_EINVAL;
    if (v * mult > (double)LONG_MAX / 2) return FC_ERANGE;
    *ms = (long)llround(v * mult);
    return FC_OK;
}

/* show_secret writes what a message may show of a secret setting's value: a URL split by the parser
 * of its own connector with the password replaced by ***, a placeholder if that parser refuses it
 * (a hand-made split could disagree with it and show part of the password), other secrets never. */
static void show_secret(const setting *s, const char *value, char *out, size_t outlen) {
    if (s->offset == OFF(amqp_url)) fc_amqp_url_redact(value, out, outlen);
    else if (s->offset == OFF(redis_url)) fc_redis_url_redact(value, out, outlen);
    else snprintf(out, outlen, "(hidden)");
}

/* fail formats the one-line error "SETTING: 'value' rule". */
static int fail(char *err, size_t errlen, const setting *s, const char *value, const char *rule) {
    char redacted[512];
    const char *shown = value;
    if (s->type == T_SECRET) {
        show_secret(s, value, redacted, sizeof(redacted));
        shown = redacted;
    }
    if (s->env)
        snprintf(err, errlen, "%s (--%s): '%s' %s", s->env, s->flag, shown, rule);
    else
        snprintf(err, errlen, "--%s: '%s' %s", s->flag, shown, rule);
    return FC_EINVAL;
}

static int bounds_rule(char *rule, size_t n, const setting *s) {
    if (s->type == T_DURATION || s->type == T_DURLIST)
        snprintf(rule, n, "is not a duration between %.0fms and %.0fms (write e.g. 500ms, 30s, 2m)", s->min, s->max);
    else
        snprintf(rule, n, "is not a number between %g and %g", s->min, s->max);
    return 0;
}

/* assign_number parses and range-checks a numeric value into the field. */
static int assign_number(fc_config *cfg, const setting *s, const char *value, char *err, size_t errlen) {
    char rule[160], *end;
    void *field = (char *)cfg + s->offset;
    bounds_rule(rule, sizeof(rule), s);
    if (s->type == T_DURATION) {
        long ms;
        if (fc_duration_parse(value, &ms) != FC_OK || ms < s->min || ms > s->max)
            return fail(err, errlen, s, value, rule);
        *(long *)field = ms;
        return FC_OK;
    }
    errno = 0;
    double v = strtod(value, &end);
    if (end == value || *end || errno || !isfinite(v) || v < s->min || v > s->max)
        return fail(err, errlen, s, value, rule);
    if (s->type != T_DOUBLE && v != floor(v)) return fail(err, errlen, s, value, "is not a whole number");
    if (s->type == T_INT) *(int *)field = (int)v;
    else if (s->type == T_LONG) *(long *)field = (long)v;
    else *(double *)field = v;
    return FC_OK;
}

static int assign_durlist(fc_config *cfg, const setting *s, const char *value, char *err, size_t errlen) {
    char buf[256], rule[160];
    snprintf(buf, sizeof(buf), "%s", value);
    cfg->nretry_delays = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long ms;
        bounds_rule(rule, sizeof(rule), s);
        if (fc_duration_parse(tok, &ms) != FC_OK || ms < s->min || ms > s->max)
            return fail(err, errlen, s, value, rule);
        if (cfg->nretry_delays == FC_MAX_DELAYS) return fail(err, errlen, s, value, "has more than 8 delays");
        cfg->retry_delays[cfg->nretry_delays++] = ms;
    }
    if (cfg->nretry_delays == 0) return fail(err, errlen, s, value, "needs at least one delay");
    return FC_OK;
}

static int assign(fc_config *cfg, const setting *s, const char *value, char *err, size_t errlen) {
    void *field = (char *)cfg + s->offset;
    switch (s->type) {
    case T_STR:
    case T_SECRET:
        free(*(char **)field);
        *(char **)field = strdup(value);
        return *(char **)field ? FC_OK : FC_ENOMEM;
    case T_BOOL: *(int *)field = 1; return FC_OK;
    case T_DURLIST: return assign_durlist(cfg, s, value, err, errlen);
    default: return assign_number(cfg, s, value, err, errlen);
    }
}

static const setting *find_flag(const char *name, size_t len, int program) {
    for (size_t i = 0; i < NSETTINGS; i++)
        if ((settings[i].program & program) && strlen(settings[i].flag) == len &&
            strncmp(settings[i].flag, name, len) == 0)
            return &settings[i];
    return NULL;
}

/* secret_on_command_line says whether a flag's value holds a secret: any API key, a URL with a
 * password. A command line is readable by every user of the machine (/proc/PID/cmdline). */
static int secret_on_command_line(const setting *s, const char *value) {
    if (s->type != T_SECRET) return 0;
    if (s->offset != OFF(amqp_url) && s->offset != OFF(redis_url) && s->offset != OFF(mgmt_url)) return 1;
    return strchr(value, '@') != NULL;
}

/* parse_args applies --flag value / --flag=value and collects positional arguments. */
static int parse_args(fc_config *cfg, int program, int argc, char **argv, char *err, size_t errlen) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (strcmp(a, "--") == 0) continue;
            if (cfg->nargs == 4) {
                snprintf(err, errlen, "too many arguments at '%s'", a);
                return FC_EINVAL;
            }
            cfg->args[cfg->nargs++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const setting *s = find_flag(name, len, program);
        if (!s) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)len, name);
            return FC_EINVAL;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (s->type == T_BOOL) {
            value = "1";
        } else if (!value) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", s->flag);
                return FC_EINVAL;
            }
            value = argv[++i];
        }
        if (secret_on_command_line(s, value)) {
            snprintf(err, errlen, "--%s: secrets are not taken from the command line, where every user of the "
                                  "machine can read them; set %s or %s_FILE instead", s->flag, s->env, s->env);
            return FC_EINVAL;
        }
        int rc = assign(cfg, s, value, err, errlen);
        if (rc != FC_OK) return rc;
    }
    return FC_OK;
}

static int load_defaults_and_env(fc_config *cfg, int program, char *err, size_t errlen) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        if (!(s->program & program)) continue;
        if (s->def) {
            int rc = assign(cfg, s, s->def, err, errlen);
            if (rc != FC_OK) return rc;
        }
        const char *env = s->env ? getenv(s->env) : NULL;
        if (env && *env) {
            int rc = assign(cfg, s, env, err, errlen);
            if (rc != FC_OK) return rc;
        }
    }
    return FC_OK;
}

static const setting *setting_by_env(const char *env) {
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].env && strcmp(settings[i].env, env) == 0) return &settings[i];
    return NULL;
}

/* The settings that name a file holding a secret setting's value (a container or Kubernetes secret). */
static const struct {
    size_t file, secret;
} secret_files[] = {
    {OFF(amqp_url_file), OFF(amqp_url)},
    {OFF(redis_url_file), OFF(redis_url)},
    {OFF(api_key_file), OFF(api_key)},
    {OFF(mgmt_url_file), OFF(mgmt_url)},
};

static const setting *setting_at(size_t offset) {
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].offset == offset) return &settings[i];
    return NULL;
}

/* read_secret_files replaces each secret setting whose *_FILE setting is set by that file's content
 * (trailing newlines and spaces dropped). The file's name may be shown; its content never is. */
static int read_secret_files(fc_config *cfg, int program, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]); i++) {
        const setting *fs = setting_at(secret_files[i].file);
        const char *path = *(char **)((char *)cfg + secret_files[i].file);
        if (!(fs->program & program) || !path) continue;
        FILE *fp = fopen(path, "r");
        if (!fp) {
            snprintf(err, errlen, "%s (--%s): cannot read '%s': %s", fs->env, fs->flag, path, strerror(errno));
            return FC_EINVAL;
        }
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        int big = !feof(fp);
        fclose(fp);
        buf[n] = '\0';
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
        char **field = (char **)((char *)cfg + secret_files[i].secret);
        if (*field) memset(*field, 0, strlen(*field));
        free(*field);
        *field = big || n == 0 ? NULL : strdup(buf);
        memset(buf, 0, sizeof(buf));
        if (big || n == 0) {
            snprintf(err, errlen, "%s (--%s): '%s' %s", fs->env, fs->flag, path,
                     big ? "is larger than 4095 bytes" : "is empty");
            return FC_EINVAL;
        }
        if (!*field) return FC_ENOMEM;
    }
    return FC_OK;
}

/* derive_api_name picks the API's name from its host: api.openai.com -> openai, openrouter.ai -> openrouter.
 * An address (127.0.0.1, [::1]) names nothing, so it gives "api". */
static char *derive_api_name(const char *url) {
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    const char *at = strchr(h, '@'), *end = h + strcspn(h, "/");
    if (at && at < end) h = at + 1;
    if (strncmp(h, "api.", 4) == 0) h += 4;
    size_t n = strcspn(h, ".:/");
    if (!n || *h == '[' || strspn(h, "0123456789") == n) return strdup("api");
    return strndup(h, n);
}

static int check_prefix(const char *p) {
    if (!*p || strlen(p) > 64) return FC_EINVAL;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return FC_EINVAL;
    return FC_OK;
}

#define RATE_LIMITS_MAX 16 /* entries of RATE_LIMITS: as many as the worker's limiter setup reads */

/* check_limits refuses rate settings whose derived limits the limiter would refuse (fc_limit_validate:
 * e.g. a burst that takes centuries to refill, whose arithmetic would overflow), deriving the bursts as the
 * worker does: RATE_BURST or one second of RATE_LIMIT; for tokens at least two calls' MAX_TOKENS. */
static int check_limits(const fc_config *cfg, char *err, size_t errlen) {
    char why[256], rule[300], what[96];
    fc_api_limits v[RATE_LIMITS_MAX];
    size_t n;
    if (cfg->rate_limits && fc_limits_parse(cfg->rate_limits, v, RATE_LIMITS_MAX, &n, why, sizeof(why)) != FC_OK) {
        snprintf(rule, sizeof(rule), "is refused: %s", why);
        return fail(err, errlen, setting_by_env("RATE_LIMITS"), cfg->rate_limits, rule);
    }
    fc_limit calls = {cfg->rate_limit / 60.0, (double)cfg->rate_burst};
    if (cfg->rate_burst == 0) calls.burst = fc_limit_default_burst(calls.per_sec);
    snprintf(what, sizeof(what), "RATE_BURST (--rate-burst) %ld with RATE_LIMIT %ld/min", cfg->rate_burst,
             cfg->rate_limit);
    if (fc_limit_validate(calls, what, err, errlen) != FC_OK) return FC_EINVAL;
    fc_limit tokens = {cfg->token_limit / 60.0, fc_limit_default_burst(cfg->token_limit / 60.0)};
    if (tokens.per_sec > 0 && tokens.burst < cfg->max_tokens * 2.0) tokens.burst = cfg->max_tokens * 2.0;
    snprintf(what, sizeof(what), "TOKEN_LIMIT (--token-limit) %ld/min with MAX_TOKENS %d", cfg->token_limit,
             cfg->max_tokens);
    return fc_limit_validate(tokens, what, err, errlen) == FC_OK ? FC_OK : FC_EINVAL;
}

/* validate_admin checks what flashcard-admin takes beyond the connection settings: a management URL
 * is http(s) and parses as the HTTP client will parse it. */
static int validate_admin(const fc_config *cfg, char *err, size_t errlen) {
    const char *u = cfg->mgmt_url;
    const setting *s = setting_by_env("RABBITMQ_MANAGEMENT_URL");
    if (u && strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
        return fail(err, errlen, s, u, "must start with http:// or https://");
    fc_url parsed;
    int rc = u ? fc_url_parse(u, &parsed) : FC_OK;
    if (rc == FC_OK && u && (!parsed.host || !*parsed.host)) rc = FC_EINVAL;
    if (u) fc_url_free(&parsed);
    if (rc != FC_OK) return fail(err, errlen, s, u, "is not a URL (http[s]://[user:password@]host[:port][/path])");
    return FC_OK;
}

/* validate checks cross-field rules and fills derived defaults. */
static int validate(fc_config *cfg, int program, char *err, size_t errlen) {
    char why[200];
    if (read_secret_files(cfg, program, err, errlen) != FC_OK) return FC_EINVAL;
    if (fc_amqp_url_check(cfg->amqp_url, why, sizeof(why)) != FC_OK)
        return fail(err, errlen, setting_by_env("AMQP_URL"), cfg->amqp_url, why);
    fc_redis *r = fc_redis_new(cfg->redis_url, 1000, why, sizeof(why));
    if (!r) return fail(err, errlen, setting_by_env("REDIS_URL"), cfg->redis_url, why);
    int bad_sentinels = fc_redis_set_sentinels(r, cfg->redis_sentinels, cfg->redis_sentinel_master, why, sizeof(why));
    fc_redis_free(r);
    if (bad_sentinels) return fail(err, errlen, setting_by_env("REDIS_SENTINELS"), cfg->redis_sentinels, why);
    if (check_prefix(cfg->queue_prefix) != FC_OK)
        return fail(err, errlen, setting_by_env("QUEUE_PREFIX"), cfg->queue_prefix,
                    "must be 1..64 characters of A-Z a-z 0-9 . _ -");
    if (fc_log_level_parse(cfg->log_level) < 0)
        return fail(err, errlen, setting_by_env("LOG_LEVEL"), cfg->log_level, "is not one of debug, info, warn, error");
    if (strcmp(cfg->log_format, "text") && strcmp(cfg->log_format, "json"))
        return fail(err, errlen, setting_by_env("LOG_FORMAT"), cfg->log_format, "is not one of text, json");
    if (program == FC_ADMIN) return validate_admin(cfg, err, errlen);
    const setting *bs = setting_by_env("BATCH_SIZE");
    if (strcmp(cfg->batch_size_text, "auto") == 0 && program == FC_PRODUCER) {
        cfg->batch_size = 0;
    } else {
        char *end;
        long v = strtol(cfg->batch_size_text, &end, 10);
        if (end == cfg->batch_size_text || *end || v < 1 || v > 10000)
            return fail(err, errlen, bs, cfg->batch_size_text,
                        program == FC_PRODUCER ? "is not a number between 1 and 10000, or auto"
                                               : "is not a number between 1 and 10000");
        cfg->batch_size = (int)v;
    }
    if (program & FC_WORKER) {
        if (strncmp(cfg->api_base_url, "http://", 7) && strncmp(cfg->api_base_url, "https://", 8))
            return fail(err, errlen, setting_by_env("API_BASE_URL"), cfg->api_base_url,
                        "must start with http:// or https://");
        if (strcmp(cfg->rate_limit_fallback, "pause") && strcmp(cfg->rate_limit_fallback, "local"))
            return fail(err, errlen, setting_by_env("RATE_LIMIT_FALLBACK"), cfg->rate_limit_fallback,
                        "is not one of pause, local");
        if (check_limits(cfg, err, errlen) != FC_OK) return FC_EINVAL;
        if (!cfg->stage1_model) cfg->stage1_model = strdup(cfg->api_model);
        if (!cfg->stage2_model) cfg->stage2_model = strdup(cfg->api_model);
        if (!cfg->api_name) cfg->api_name = derive_api_name(cfg->api_base_url);
        if (cfg->worker_count == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            cfg->worker_count = n > 0 ? (int)n : 1;
        }
    }
    return FC_OK;
}

static const char *program_name(int program) {
    return program == FC_PRODUCER ? "flashcard-producer" : program == FC_ADMIN ? "flashcard-admin" : "flashcard-worker";
}

int fc_config_load(fc_config *cfg, int program, int argc, char **argv, char *err, size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fc_config_print_help(program);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", program_name(program), FC_VERSION);
            return 1;
        }
    }
    int rc = load_defaults_and_env(cfg, program, err, errlen);
    if (rc == FC_OK) rc = parse_args(cfg, program, argc, argv, err, errlen);
    if (rc == FC_OK) rc = validate(cfg, program, err, errlen);
    return rc == FC_OK ? FC_OK : FC_EINVAL;
}

void fc_config_free(fc_config *cfg) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].type != T_STR && settings[i].type != T_SECRET) continue;
        char **field = (char **)((char *)cfg + settings[i].offset);
        if (*field && settings[i].type == T_SECRET) memset(*field, 0, strlen(*field));
        free(*field);
        *field = NULL;
    }
}

void fc_config_print_help(int program) {
    if (program == FC_PRODUCER)
        printf("Usage: flashcard-producer [options] DATASET|-\n"
               "Reads a vocabulary dataset (CSV, TSV or JSON Lines), publishes it as batch messages,\n"
               "and optionally waits for the results.\n\n");
    else if (program == FC_ADMIN)
        printf("Usage: flashcard-admin COMMAND [options]\n"
               "Shows and operates the fleet: status, job, dead list|replay|purge, cancel, results.\n\n");
    else
        printf("Usage: flashcard-worker [options]\n"
               "Consumes batch messages, calls the API for every item, publishes results.\n\n");
    fc_config_print_settings(program);
}

void fc_config_print_settings(int program) {
    printf("Settings (environment variable, flag, default):\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        if (!(s->program & program)) continue;
        char left[64];
        snprintf(left, sizeof(left), "--%s%s", s->flag, s->type == T_BOOL ? "" : " V");
        printf("  %-24s %-22s %s", left, s->env ? s->env : "", s->help);
        if (s->def && s->type != T_SECRET) printf(" [%s]", s->def);
        printf("\n");
    }
    printf("  --help, --version\n");
}
