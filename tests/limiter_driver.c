/* Driver for the rate limiter integration test: acquires against a real Redis and logs
 * timestamps (CLOCK_REALTIME seconds) so a shell script can check the fleet-wide rate.
 *
 *   limiter-driver run   URL PREFIX API RATE BURST SECONDS   one line per grant: "<asked> <granted>"
 *   limiter-driver pause URL PREFIX API MS                    one line: "<before> <after>"
 *   limiter-driver seq   URL PREFIX API RATE BURST COUNT      one line per acquire: "<rc> <wait_ms>"
 *   limiter-driver ops   URL PREFIX API RATE BURST ADAPTIVE [TOKENS]  runs the commands read from stdin
 *                        on one limiter (see ops_line), one answer line each
 *   limiter-driver sim   URL PREFIX API RATE BURST SECONDS PROCS INFLIGHT PROV_RATE PROV_CAP
 *                        LATENCY_MS HEADERS WARMUP_S
 *                        PROCS processes with INFLIGHT calls each against a simulated provider
 *                        token bucket (PROV_RATE/s, capacity PROV_CAP) that answers 429 when
 *                        empty, through an adaptive limiter (see sim_child); prints
 *                        "sim ok=N r429=N rate=R share429=S" counted from WARMUP_S on
 * Counters go to stderr as "stats key=value ...". Exit 0, or 1 on a failure, 2 on bad usage. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fc_error.h"
#include "fc_limiter.h"
#include "fc_log.h"
#include "fc_redis.h"

static double realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int usage(void) {
    fprintf(stderr, "usage: limiter-driver run|seq URL PREFIX API RATE BURST SECONDS|COUNT\n"
                    "       limiter-driver pause URL PREFIX API MS\n"
                    "       limiter-driver ops URL PREFIX API RATE BURST ADAPTIVE [TOKENS] < commands\n"
                    "       limiter-driver sim URL PREFIX API RATE BURST SECONDS PROCS INFLIGHT PROV_RATE PROV_CAP "
                    "LATENCY_MS HEADERS WARMUP_S\n");
    return 2;
}

static void print_stats(const fc_limiter *l) {
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    fprintf(stderr,
            "stats redis_calls=%ld eval_fallbacks=%ld redis_failures=%ld reconnect_tries=%ld local_grants=%ld "
            "backoffs=%ld advice_sent=%ld budget_refusals=%ld\n",
            st.redis_calls, st.eval_fallbacks, st.redis_failures, st.reconnect_tries, st.local_grants, st.backoffs,
            st.advice_sent, st.budget_refusals);
}

/* run acquires (blocking) for seconds, printing the ask and grant times of each call. */
static int run(fc_limiter *l, double seconds) {
    double end = realtime() + seconds;
    while (realtime() < end) {
        double asked = realtime();
        int rc = fc_limiter_acquire_blocking(l, 0, 10000);
        if (rc != FC_OK) {
            fprintf(stderr, "acquire: %s\n", fc_strerror(rc));
            return 1;
        }
        printf("%.6f %.6f\n", asked, realtime());
    }
    return 0;
}

static int seq(fc_limiter *l, long count) {
    for (long i = 0; i < count; i++) {
        long wait_ms;
        int rc = fc_limiter_acquire(l, 0, &wait_ms);
        printf("%d %ld\n", rc, wait_ms);
    }
    return 0;
}

/* ---- ops: one limiter driven by commands on stdin ----------------------------------- */

/* budget_of fills b for job ("-" = none) with the given limits. */
static const fc_budget *budget_of(fc_budget *b, const char *job, long long lt, long long lu) {
    *b = (fc_budget){strcmp(job, "-") ? job : NULL, lt, lu};
    return b;
}

/* rc_name names a return code for the shell: ok, budget, busy, conn, inval, or the number. */
static const char *rc_name(int rc, char buf[16]) {
    static const struct { int rc; const char *name; } names[] = {
        {FC_OK, "ok"}, {FC_EBUDGET, "budget"}, {FC_EBUSY, "busy"}, {FC_ECONN, "conn"}, {FC_EINVAL, "inval"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].rc == rc) return names[i].name;
    snprintf(buf, 16, "%d", rc);
    return buf;
}

/* ops_line runs one command and prints its answer (rc as rc_name):
 *   acq COST                     -> rc wait_ms
 *   job JOB LT LU COST EST       -> rc wait_ms        (fc_limiter_acquire_job)
 *   settle DELTA JOB TOKENS UUSD -> rc                (JOB "-": none)
 *   spent JOB                    -> rc tokens uusd exhausted_ms
 *   backoff EPOCH|cur            -> rc rate epoch     (rate and epoch as the limiter saw them)
 *   advise LIMIT REMAINING RESET -> rc rate epoch
 *   read                         -> rc effective advised
 *   rate                         -> rate epoch
 *   pause_left                   -> ms
 *   sleep MS                     -> (nothing)
 * Returns 0, or 2 on an unknown command. */
static int ops_line(fc_limiter *l, const char *line) {
    char cmd[16], job[128], rb[16];
    long long a1 = 0, a2 = 0, a3 = 0, a4 = 0;
    double d1, d2, d3;
    fc_budget b;
    int64_t wait;
    if (sscanf(line, "%15s", cmd) != 1) return 0;
    if (strcmp(cmd, "acq") == 0 && sscanf(line, "%*s %lld", &a1) == 1) {
        int rc = fc_limiter_acquire_us(l, (long)a1, &wait);
        printf("%s %lld\n", rc_name(rc, rb), (long long)(wait + 999) / 1000);
    } else if (strcmp(cmd, "job") == 0 && sscanf(line, "%*s %127s %lld %lld %lld %lld", job, &a1, &a2, &a3, &a4) == 5) {
        int rc = fc_limiter_acquire_job(l, (long)a3, a4, budget_of(&b, job, a1, a2), &wait);
        printf("%s %lld\n", rc_name(rc, rb), (long long)(wait + 999) / 1000);
    } else if (strcmp(cmd, "settle") == 0 && sscanf(line, "%*s %lld %127s %lld %lld", &a1, job, &a2, &a3) == 4) {
        printf("%s\n", rc_name(fc_limiter_settle(l, (long)a1, budget_of(&b, job, 0, 0), a2, a3), rb));
    } else if (strcmp(cmd, "spent") == 0 && sscanf(line, "%*s %127s", job) == 1) {
        int64_t ex;
        int rc = fc_limiter_job_spent(l, job, &a1, &a2, &ex);
        printf("%s %lld %lld %lld\n", rc_name(rc, rb), a1, a2, (long long)ex);
    } else if (strcmp(cmd, "backoff") == 0 && sscanf(line, "%*s %127s", job) == 1) {
        long long epoch = strcmp(job, "cur") == 0 ? fc_limiter_epoch(l) : atoll(job);
        int rc = fc_limiter_backoff(l, epoch);
        printf("%s %.3f %lld\n", rc_name(rc, rb), fc_limiter_rate(l), fc_limiter_epoch(l));
    } else if (strcmp(cmd, "advise") == 0 && sscanf(line, "%*s %lf %lf %lf", &d1, &d2, &d3) == 3) {
        fc_rate_advice adv = {d1, d2, d3};
        int rc = fc_limiter_advise(l, &adv);
        printf("%s %.3f %lld\n", rc_name(rc, rb), fc_limiter_rate(l), fc_limiter_epoch(l));
    } else if (strcmp(cmd, "read") == 0) {
        int advised;
        int rc = fc_limiter_rate_read(l, &d1, &advised);
        printf("%s %.3f %d\n", rc_name(rc, rb), d1, advised);
    } else if (strcmp(cmd, "rate") == 0) {
        printf("%.3f %lld\n", fc_limiter_rate(l), fc_limiter_epoch(l));
    } else if (strcmp(cmd, "pause_left") == 0) {
        printf("%lld\n", (long long)fc_limiter_pause_left_us(l, 1) / 1000);
    } else if (strcmp(cmd, "sleep") == 0 && sscanf(line, "%*s %lld", &a1) == 1) {
        usleep((useconds_t)(a1 * 1000));
    } else {
        fprintf(stderr, "ops: unknown command: %s", line);
        return 2;
    }
    fflush(stdout);
    return 0;
}

static int ops(fc_limiter *l) {
    char line[512];
    while (fgets(line, sizeof(line), stdin))
        if (ops_line(l, line) != 0) return 2;
    return 0;
}

/* ---- sim: a fleet against a simulated provider ------------------------------------ */

#define SIM_MAX_S 600
#define SIM_MAX_INFLIGHT 256

/* The provider, shared by the fleet's processes (an anonymous shared mapping): a token bucket
 * of rate/s and capacity cap, and what it answered, per second since t0. */
typedef struct provider {
    pthread_mutex_t mu; /* process-shared */
    double rate, cap, tokens;
    int64_t t0, last;   /* monotonic us */
    long ok[SIM_MAX_S], r429[SIM_MAX_S];
    double eff[SIM_MAX_S]; /* process 0's effective rate, per second */
} provider;

typedef struct sim_conf {
    const char *url, *prefix, *api;
    double rate, burst, seconds;
    int procs, inflight, latency_ms, headers, warmup_s;
} sim_conf;

static int64_t mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* provider_call answers one call arriving at now: 1 ok, 0 a 429; fills the headers the
 * provider sends either way (OpenAI semantics: remaining whole calls, time until full). */
static int provider_call(provider *p, int64_t now, fc_rate_advice *h) {
    pthread_mutex_lock(&p->mu);
    p->tokens = fmin(p->cap, p->tokens + p->rate * (double)(now - p->last) / 1e6);
    p->last = now;
    int ok = p->tokens >= 1;
    if (ok) p->tokens -= 1;
    long sec = (long)((now - p->t0) / 1000000);
    if (sec >= 0 && sec < SIM_MAX_S) (ok ? p->ok : p->r429)[sec]++;
    *h = (fc_rate_advice){p->cap, floor(p->tokens), ceil((p->cap - p->tokens) / p->rate * 1000)};
    pthread_mutex_unlock(&p->mu);
    return ok;
}

enum { SLOT_ACQUIRE, SLOT_CALL, SLOT_ANSWER };

typedef struct slot {
    int state;
    int64_t due;     /* monotonic us */
    long long epoch; /* the epoch the call was granted under */
    int ok;          /* the provider's answer */
    fc_rate_advice h;
} slot;

/* slot_step moves one slot on: acquire (then wait), call the provider, take the answer (a
 * 429 without headers backs off; with headers every answer is advice). */
static void slot_step(fc_limiter *l, provider *p, const sim_conf *c, slot *s, int64_t now) {
    int64_t wait;
    switch (s->state) {
    case SLOT_ACQUIRE:
        if (fc_limiter_acquire_us(l, 0, &wait) == FC_OK) {
            s->epoch = fc_limiter_epoch(l);
            s->state = SLOT_CALL;
        }
        s->due = now + (wait > 0 ? wait : 0);
        break;
    case SLOT_CALL:
        s->ok = provider_call(p, now, &s->h);
        s->state = SLOT_ANSWER;
        s->due = now + (int64_t)c->latency_ms * 1000;
        break;
    default:
        if (c->headers) fc_limiter_advise(l, &s->h);
        else if (!s->ok) fc_limiter_backoff(l, s->epoch);
        s->state = SLOT_ACQUIRE;
        s->due = now;
    }
}

/* sim_child runs one process of the fleet until end (monotonic us). */
static int sim_child(const sim_conf *c, provider *p, int idx, int64_t end) {
    char err[128];
    fc_redis *r = fc_redis_new(c->url, 1000, err, sizeof(err));
    fc_limiter_conf lc = {.prefix = c->prefix, .api = c->api, .calls = {c->rate, c->burst}, .adaptive = 1};
    /* For tuning: SIM_ADAPT_BETA and SIM_ADAPT_ADD override the defaults. */
    if (getenv("SIM_ADAPT_BETA")) lc.adapt_beta = atof(getenv("SIM_ADAPT_BETA"));
    if (getenv("SIM_ADAPT_ADD")) lc.adapt_add = atof(getenv("SIM_ADAPT_ADD"));
    fc_limiter *l = r ? fc_limiter_new(r, &lc) : NULL;
    if (!l) return 1;
    slot s[SIM_MAX_INFLIGHT] = {{0}};
    for (int64_t now = mono(); now < end; now = mono()) {
        int next = 0;
        for (int i = 1; i < c->inflight; i++)
            if (s[i].due < s[next].due) next = i;
        if (s[next].due > now) {
            usleep((useconds_t)(s[next].due - now));
            continue;
        }
        slot_step(l, p, c, &s[next], now);
        long sec = (long)((now - p->t0) / 1000000);
        if (idx == 0 && sec >= 0 && sec < SIM_MAX_S) p->eff[sec] = fc_limiter_rate(l);
    }
    print_stats(l);
    fc_limiter_free(l);
    fc_redis_free(r);
    return 0;
}

/* sim_report prints the per-second trace to stderr and the totals from warmup_s on. */
static void sim_report(const sim_conf *c, const provider *p) {
    long ok = 0, r429 = 0, secs = (long)c->seconds;
    for (long t = 0; t < secs && t < SIM_MAX_S; t++) {
        fprintf(stderr, "t=%ld ok=%ld r429=%ld eff=%.2f\n", t, p->ok[t], p->r429[t], p->eff[t]);
        if (t >= c->warmup_s) ok += p->ok[t], r429 += p->r429[t];
    }
    double span = (double)(secs - c->warmup_s);
    printf("sim ok=%ld r429=%ld rate=%.2f share429=%.4f\n", ok, r429, span > 0 ? ok / span : 0,
           ok + r429 > 0 ? (double)r429 / (double)(ok + r429) : 0);
}

static int sim(const sim_conf *c, double prov_rate, double prov_cap) {
    provider *p = mmap(NULL, sizeof(*p), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || c->inflight < 1 || c->inflight > SIM_MAX_INFLIGHT || c->procs < 1 || c->seconds <= 0 ||
        c->seconds > SIM_MAX_S)
        return 2;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&p->mu, &ma);
    p->rate = prov_rate, p->cap = prov_cap, p->tokens = prov_cap;
    p->t0 = p->last = mono();
    int64_t end = p->t0 + (int64_t)(c->seconds * 1e6);
    pid_t pids[64];
    int n = 0, rc = 0;
    for (; n < c->procs && n < 64; n++) {
        pids[n] = fork();
        if (pids[n] == 0) _exit(sim_child(c, p, n, end));
        if (pids[n] < 0) break;
    }
    for (int i = 0; i < n; i++) {
        int st;
        if (pids[i] > 0 && (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))) rc = 1;
    }
    if (n < c->procs) rc = 1;
    sim_report(c, p);
    munmap(p, sizeof(*p));
    return rc;
}

static int sim_main(int argc, char **argv) {
    if (argc != 15) return usage();
    sim_conf c = {argv[2], argv[3], argv[4], atof(argv[5]), atof(argv[6]), atof(argv[7]), atoi(argv[8]),
                  atoi(argv[9]), atoi(argv[12]), atoi(argv[13]), atoi(argv[14])};
    return sim(&c, atof(argv[10]), atof(argv[11]));
}

int main(int argc, char **argv) {
    if (argc < 6) return usage();
    fc_log_setup(FC_LOG_WARN, FC_LOG_TEXT, "limiter-driver");
    if (strcmp(argv[1], "sim") == 0) return sim_main(argc, argv);
    int is_pause = strcmp(argv[1], "pause") == 0, is_ops = strcmp(argv[1], "ops") == 0;
    if (!is_pause && !is_ops && (argc != 8 || (strcmp(argv[1], "run") && strcmp(argv[1], "seq")))) return usage();
    if (is_ops && argc != 8 && argc != 9) return usage();
    char err[128];
    fc_redis *r = fc_redis_new(argv[2], 1000, err, sizeof(err));
    if (!r) {
        fprintf(stderr, "redis url: %s\n", err);
        return 2;
    }
    fc_limiter_conf c = {.prefix = argv[3], .api = argv[4], .fallback = FC_LIMITER_PAUSE};
    if (!is_pause) c.calls = (fc_limit){atof(argv[5]), atof(argv[6])};
    else c.calls = (fc_limit){1, 1};
    if (is_ops) c.adaptive = atoi(argv[7]);
    if (is_ops && argc == 9) c.tokens = (fc_limit){atof(argv[8]), fc_limit_default_burst(atof(argv[8]))};
    fc_limiter *l = fc_limiter_new(r, &c);
    int rc = 2;
    if (l && is_pause) {
        double before = realtime();
        rc = fc_limiter_pause(l, atol(argv[5])) == FC_OK ? 0 : 1;
        printf("%.6f %.6f\n", before, realtime());
    } else if (l && is_ops) {
        rc = ops(l);
    } else if (l) {
        rc = strcmp(argv[1], "run") == 0 ? run(l, atof(argv[7])) : seq(l, atol(argv[7]));
    }
    if (l) print_stats(l);
    fc_limiter_free(l);
    fc_redis_free(r);
    return rc;
}
