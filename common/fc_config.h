/* Configuration: one table of settings, read from the environment and overridden by --flags,
 * validated at start. The three binaries share the table; each row says which of them uses it. */
#ifndef FC_CONFIG_H
#define FC_CONFIG_H

#include <stddef.h>

#define FC_MAX_DELAYS 8

/* Which binary a setting belongs to: a bit each. FC_BOTH is the producer and the worker; FC_ALL adds
 * flashcard-admin, which takes the connection settings only (plus its own flags). */
enum fc_program { FC_PRODUCER = 1, FC_WORKER = 2, FC_BOTH = 3, FC_ADMIN = 4, FC_ALL = 7 };

typedef struct fc_config {
    /* shared */
    char *amqp_url;          /* secret: one URL, or a cluster's, comma-separated */
    char *amqp_url_file;
    char *amqp_ca_file;
    char *amqp_cert_file;
    char *amqp_key_file;
    char *redis_url;         /* secret */
    char *redis_url_file;
    char *redis_sentinels;   /* host:port,... or NULL */
    char *redis_sentinel_master;
    char *queue_prefix;
    char *log_level;
    char *log_format;
    char *batch_size_text;   /* "100" or "auto" (producer) */
    int batch_size;          /* items, 1..10000 (upper bound when "auto") */
    long rate_limit;         /* API calls per minute, fleet-wide; 0 = unlimited */
    int max_attempts;
    long retry_delays[FC_MAX_DELAYS]; /* ms */
    int nretry_delays;
    long heartbeat_ms;
    int delivery_limit;
    /* worker */
    int worker_count;        /* API calls in flight per process */
    int prefetch;            /* batches held unacked; 0 = derived from worker_count and batch_size */
    char *api_base_url;
    char *api_key;           /* secret: never logged */
    char *api_key_file;
    char *api_model;
    char *stage1_model;      /* default api_model */
    char *stage2_model;      /* default api_model */
    char *api_name;          /* the limiter's and breaker's name for this API */
    long api_timeout_ms;
    long api_connect_timeout_ms;
    char *api_ca_file;       /* CA bundle (PEM) verifying an https:// API; NULL = the system's */
    long api_max_response_bytes; /* largest API answer read, bytes; a bigger one is a retryable error */
    long retry_after_max_ms; /* longest fleet pause a 429's Retry-After may ask for, ms */
    double temperature;
    int max_tokens;
    char *prompt_dir;
    char *http_referer;
    char *x_title;
    long rate_burst;         /* bucket capacity in calls; 0 = default */
    long token_limit;        /* tokens per minute; 0 = unlimited */
    char *rate_limits;       /* named limits per API */
    char *rate_limit_fallback; /* pause | local */
    int fleet_size;
    long hold_limit_ms;
    long shutdown_timeout_ms;
    long cache_ttl_ms;       /* 0 disables the result cache */
    int breaker_failures;
    long breaker_cooldown_ms;
    long auth_retry_ms;      /* between probes of the API credentials after a 401/403 */
    int metrics_port;        /* 0 = off */
    char *metrics_bind;      /* IPv4 address */
    double price_input;      /* per million input tokens */
    double price_output;     /* per million output tokens */
    /* producer */
    char *format;
    char *columns;
    char *job_id;
    int resume;
    int fair_share;          /* FAIR_SHARE: the job gets a queue of its own (1) or uses the shared one (0) */
    int priority;            /* --priority: the job's weight in the fleet's fair share, 1..10 */
    double budget_usd;       /* --budget-usd: the most the job may spend; 0 = no limit */
    long budget_tokens;      /* --budget-tokens: the most API tokens the job may use; 0 = no limit */
    int rate_adapt;          /* RATE_ADAPT: the fleet's calls rate adapts to the provider (1) or not (0) */
    int strict;
    int wait;
    long wait_timeout_ms;    /* 0 = no timeout */
    char *output;
    char *report;
    long batch_max_bytes;
    /* admin (flashcard-admin) */
    char *mgmt_url;          /* secret: RabbitMQ management API base URL; NULL = derived from AMQP_URL */
    char *mgmt_url_file;
    int json;                /* --json: JSON on stdout instead of a table */
    char *admin_job;         /* --job: only this job's dead letters */
    char *admin_reason;      /* --reason: only items of this error class */
    long admin_limit;        /* --limit: at most this many items; 0 = no limit */
    int admin_yes;           /* --yes: purge really removes */
    double admin_rate;       /* --rate: dead letters replayed per second; 0 = as fast as confirmed */
    /* positional arguments (not owned separately: point into argv) */
    const char *args[4];
    int nargs;
} fc_config;

/* fc_config_load fills cfg with defaults, then the environment, then argv, and validates.
 * Returns 0; 1 if --help or --version was printed (exit 0); FC_EINVAL with a one-line
 * message naming the setting in err (exit 2). Free with fc_config_free. */
int fc_config_load(fc_config *cfg, int program, int argc, char **argv, char *err, size_t errlen);
void fc_config_free(fc_config *cfg);

/* fc_duration_parse parses "500ms", "30s", "2m", "1h", "1d" or a bare number of seconds
 * into milliseconds; returns 0 or FC_EINVAL. */
int fc_duration_parse(const char *s, long *ms);

/* fc_config_print_help writes the usage and the table of settings for program to stdout. */
void fc_config_print_help(int program);

/* fc_config_print_settings writes only the table of settings (and flags) program takes to stdout. */
void fc_config_print_settings(int program);

#endif
