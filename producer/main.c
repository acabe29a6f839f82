/* flashcard-producer: reads a vocabulary dataset, publishes it as batch messages with
 * publisher confirms, and with --wait collects the job's results and reports. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fc_dataset.h"
#include "fc_error.h"
#include "fc_log.h"
#include "fc_message.h"
#include "producer.h"

double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void make_job_id(char *out, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y%m%d-%H%M%S", &tm);
    snprintf(out, n, "job-%s-%04x", ts, (unsigned)(rand() & 0xffff));
}

static int open_input(const fc_config *cfg, FILE **in, int *format) {
    if (cfg->nargs != 1) {
        fprintf(stderr, "flashcard-producer: expected one DATASET argument (a file, or - for stdin); see --help\n");
        return EXIT_USAGE;
    }
    const char *path = cfg->args[0];
    *format = cfg->format ? fc_format_from_name(cfg->format) : fc_format_from_path(path);
    if (*format < 0) {
        fprintf(stderr, "flashcard-producer: %s: cannot tell the format of '%s'; use --format csv|tsv|jsonl\n",
                cfg->format ? "--format" : "DATASET", cfg->format ? cfg->format : path);
        return EXIT_USAGE;
    }
    *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!*in) {
        fprintf(stderr, "flashcard-producer: DATASET: cannot open '%s': %m\n", path);
        return EXIT_USAGE;
    }
    return EXIT_DONE;
}

/* keys names the job's Redis keys; 0, or FC_ETOOBIG (prefix and job id are validated well below that). */
static int keys(producer *p) {
    for (int k = 0; k < FC_JOB_NKEYS; k++) {
        int rc = fc_key_job(p->key[k], sizeof(p->key[k]), p->cfg->queue_prefix, p->st.job_id, (enum fc_job_key)k);
        if (rc != FC_OK) return rc;
    }
    return FC_OK;
}

static void summary(const producer *p) {
    const job_stats *s = &p->st;
    fprintf(stderr,
            "\n  job              %s\n  rows read        %ld\n  rows rejected    %ld\n  items published  %ld"
            " (%ld batches, %ld already confirmed)\n",
            s->job_id, s->rows_read, s->rows_rejected, s->items_published, s->batches_published,
            s->batches_skipped);
    if (p->cfg->wait)
        fprintf(stderr,
                "  items succeeded  %ld\n  items failed     %ld\n  API calls        %ld (cache hits %ld)\n"
                "  tokens           %ld in, %ld out (about $%.4f)\n",
                s->succeeded, s->failed, s->api_calls, s->cache_hits, s->prompt_tokens, s->completion_tokens,
                (s->prompt_tokens * p->cfg->price_input + s->completion_tokens * p->cfg->price_output) / 1e6);
    if (p->cfg->wait && (s->budget_tokens > 0 || s->budget_uusd > 0))
        fprintf(stderr, "  budget           spent %lld tokens of %lld, $%.4f of $%.4f%s\n", s->spent_tokens,
                s->budget_tokens, (double)s->spent_uusd / 1e6, (double)s->budget_uusd / 1e6,
                s->items_budget ? ": stopped the job" : "");
    fprintf(stderr, "  elapsed          %.1f s\n\n", s->elapsed_s);
}

int main(int argc, char **argv) {
    fc_config cfg;
    char err[512];
    int rc = fc_config_load(&cfg, FC_PRODUCER, argc, argv, err, sizeof(err));
    if (rc == 1) return 0;
    if (rc != FC_OK) {
        fprintf(stderr, "flashcard-producer: %s\n", err);
        fc_config_free(&cfg);
        return EXIT_USAGE;
    }
    fc_log_setup(fc_log_level_parse(cfg.log_level), strcmp(cfg.log_format, "json") ? FC_LOG_TEXT : FC_LOG_JSON,
                 "flashcard-producer");
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(time(NULL) ^ getpid()));
    producer p;
    memset(&p, 0, sizeof(p));
    p.cfg = &cfg;
    p.t0 = mono_s();
    FILE *in = NULL;
    int format = 0;
    rc = open_input(&cfg, &in, &format);
    if (rc == EXIT_DONE && cfg.job_id && !fc_job_id_valid(cfg.job_id)) {
        fprintf(stderr, "flashcard-producer: JOB_ID (--job-id): '%s' must be 1..64 of A-Z a-z 0-9 - _ . "
                        "and not 'unrouted'\n", cfg.job_id);
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_DONE && cfg.resume && !cfg.job_id) {
        fprintf(stderr, "flashcard-producer: --resume needs the --job-id of the run to resume\n");
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_DONE) {
        if (cfg.job_id) snprintf(p.st.job_id, sizeof(p.st.job_id), "%s", cfg.job_id);
        else make_job_id(p.st.job_id, sizeof(p.st.job_id));
        if (keys(&p) != FC_OK) {
            fprintf(stderr, "flashcard-producer: QUEUE_PREFIX and JOB_ID make a Redis key over %d bytes\n",
                    FC_KEY_MAX - 1);
            rc = EXIT_USAGE;
        }
    }
    if (rc == EXIT_DONE) {
        p.redis = fc_redis_new(cfg.redis_url, 5000, err, sizeof(err));
        char name[128];
        snprintf(name, sizeof(name), "flashcard-producer %s", p.st.job_id);
        p.amqp = fc_amqp_new(cfg.amqp_url, (int)(cfg.heartbeat_ms / 1000), name);
        if (p.amqp && fc_amqp_set_tls(p.amqp, cfg.amqp_ca_file, cfg.amqp_cert_file, cfg.amqp_key_file) != FC_OK)
            p.amqp = (fc_amqp_free(p.amqp), NULL);
        if (p.redis && fc_redis_set_sentinels(p.redis, cfg.redis_sentinels, cfg.redis_sentinel_master, err,
                                              sizeof(err)) != FC_OK) {
            fprintf(stderr, "flashcard-producer: REDIS_SENTINELS: %s\n", err);
            rc = EXIT_USAGE;
        } else if (!p.redis || !p.amqp) {
            fprintf(stderr, "flashcard-producer: %s\n", !p.redis ? err : "out of memory");
            rc = EXIT_INCOMPLETE;
        } else {
            rc = producer_publish(&p, in, format);
        }
        if (rc != EXIT_INFRA && rc != EXIT_USAGE && cfg.wait) {
            int wrc = p.st.published ? producer_wait(&p) : EXIT_INCOMPLETE;
            if (!p.st.published) fprintf(stderr, "flashcard-producer: not waiting: the job was not published in full\n");
            if (wrc > rc) rc = wrc;
        }
        p.st.elapsed_s = mono_s() - p.t0;
        if (rc != EXIT_USAGE) summary(&p);
        if (cfg.report && rc != EXIT_USAGE && producer_write_report(&p, cfg.report) != FC_OK && rc == EXIT_DONE)
            rc = EXIT_INCOMPLETE;
    }
    if (in && in != stdin) fclose(in);
    for (size_t i = 0; i < p.st.nbad; i++) free(p.st.bad[i].reason);
    free(p.st.bad);
    producer_free_spend(&p);
    if (p.amqp) fc_amqp_close(p.amqp);
    fc_amqp_free(p.amqp);
    fc_redis_free(p.redis);
    fc_config_free(&cfg);
    return rc;
}
