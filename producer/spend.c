/* What a job spent, whether its budget stopped it, and its share of the fleet over time: read from
 * the job's record once --wait is done, for the summary and the report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "producer.h"

#define SHARE_POINTS_MAX 8640 /* a day of 10 s buckets */

static long long reply_ll(const fc_reply *r, size_t i) {
    return r->type == FC_REPLY_ARRAY && i < r->nelem && r->elem[i].type == FC_REPLY_STR ? atoll(r->elem[i].str) : 0;
}

/* count_budget counts the items whose outcome is "budget" (only asked when some failed). */
static long count_budget(producer *p) {
    fc_reply r;
    long n = 0;
    if (fc_redis_cmd(p->redis, &r, "HVALS %s", p->key[FC_JOB_OUTCOME]) == FC_OK && r.type == FC_REPLY_ARRAY)
        for (size_t i = 0; i < r.nelem; i++) n += r.elem[i].str && strcmp(r.elem[i].str, "budget") == 0;
    fc_reply_free(&r);
    return n;
}

static int cmp_share(const void *a, const void *b) {
    long long x = ((const share_point *)a)->t10, y = ((const share_point *)b)->t10;
    return (x > y) - (x < y);
}

/* load_share reads the job's calls by 10 s and, for each, the fleet's. */
static void load_share(producer *p) {
    job_stats *s = &p->st;
    fc_reply r;
    if (fc_redis_cmd(p->redis, &r, "HGETALL %s", p->key[FC_JOB_TIMELINE]) != FC_OK || r.type != FC_REPLY_ARRAY) {
        fc_reply_free(&r);
        return;
    }
    size_t n = r.nelem / 2 < SHARE_POINTS_MAX ? r.nelem / 2 : SHARE_POINTS_MAX;
    s->share = calloc(n ? n : 1, sizeof(*s->share));
    for (size_t i = 0; s->share && i < n; i++) {
        s->share[i].t10 = r.elem[2 * i].str ? atoll(r.elem[2 * i].str) : 0;
        s->share[i].calls = r.elem[2 * i + 1].str ? atol(r.elem[2 * i + 1].str) : 0;
    }
    s->nshare = s->share ? n : 0;
    fc_reply_free(&r);
    qsort(s->share, s->nshare, sizeof(*s->share), cmp_share);
    for (size_t i = 0; i < s->nshare; i++) {
        char key[FC_KEY_MAX];
        fc_key_timeline(key, sizeof(key), p->cfg->queue_prefix, s->share[i].t10 * 10 / 3600);
        if (fc_redis_cmd(p->redis, &r, "HMGET %s %lld", key, s->share[i].t10) == FC_OK && r.type == FC_REPLY_ARRAY &&
            r.nelem == 1 && r.elem[0].type == FC_REPLY_STR)
            s->share[i].fleet_calls = atol(r.elem[0].str);
        fc_reply_free(&r);
    }
}

void producer_load_spend(producer *p) {
    job_stats *s = &p->st;
    fc_reply r;
    if (fc_redis_cmd(p->redis, &r, "HMGET %s budget_tokens budget_uusd", p->key[FC_JOB_META]) == FC_OK) {
        s->budget_tokens = reply_ll(&r, 0);
        s->budget_uusd = reply_ll(&r, 1);
    }
    fc_reply_free(&r);
    if (fc_redis_cmd(p->redis, &r, "HMGET %s tokens uusd exhausted_ms", p->key[FC_JOB_BUDGET]) == FC_OK) {
        s->spent_tokens = reply_ll(&r, 0);
        s->spent_uusd = reply_ll(&r, 1);
        s->exhausted_ms = reply_ll(&r, 2);
    }
    fc_reply_free(&r);
    if (s->failed > 0) s->items_budget = count_budget(p);
    load_share(p);
}

void producer_free_spend(producer *p) {
    free(p->st.share);
    p->st.share = NULL;
    p->st.nshare = 0;
}

static void opt_usd(FILE *f, long long uusd) {
    if (uusd > 0) fprintf(f, "%.6f", (double)uusd / 1e6);
    else fputs("null", f);
}

void producer_report_spend(const producer *p, FILE *f) {
    const job_stats *s = &p->st;
    fputs("  \"budget\": {\"limit_usd\": ", f);
    opt_usd(f, s->budget_uusd);
    fputs(", \"limit_tokens\": ", f);
    if (s->budget_tokens > 0) fprintf(f, "%lld", s->budget_tokens);
    else fputs("null", f);
    fprintf(f, ", \"spent_usd\": %.6f, \"spent_tokens\": %lld, \"stopped\": %s, \"items_stopped\": %ld, "
               "\"exhausted_at_ms\": ",
            (double)s->spent_uusd / 1e6, s->spent_tokens, s->items_budget > 0 ? "true" : "false", s->items_budget);
    if (s->exhausted_ms > 0) fprintf(f, "%lld", s->exhausted_ms);
    else fputs("null", f);
    fprintf(f, "},\n  \"items_republished\": %ld,\n  \"share\": [", s->items_redone);
    for (size_t i = 0; i < s->nshare; i++) {
        const share_point *q = &s->share[i];
        fprintf(f, "%s\n    {\"at\": %lld, \"calls\": %ld, \"fleet_calls\": %ld, \"share\": %.3f}", i ? "," : "",
                q->t10 * 10, q->calls, q->fleet_calls,
                q->fleet_calls > 0 ? (double)q->calls / (double)q->fleet_calls : 1.0);
    }
    fputs(s->nshare ? "\n  ],\n" : "],\n", f);
}
