/* Driver for the rate limiter integration test: acquires against a real Redis and logs
 * timestamps (CLOCK_REALTIME seconds) so a shell script can check the fleet-wide rate.
 *
 *   limiter-driver run   URL PREFIX API RATE BURST SECONDS   one line per grant: "<asked> <granted>"
 *   limiter-driver pause URL PREFIX API MS                    one line: "<before> <after>"
 *   limiter-driver seq   URL PREFIX API RATE BURST COUNT      one line per acquire: "<rc> <wait_ms>"
 * Counters go to stderr as "stats key=value ...". Exit 0, or 1 on a failure, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
                    "       limiter-driver pause URL PREFIX API MS\n");
    return 2;
}

static void print_stats(const fc_limiter *l) {
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    fprintf(stderr, "stats redis_calls=%ld eval_fallbacks=%ld redis_failures=%ld reconnect_tries=%ld local_grants=%ld\n",
            st.redis_calls, st.eval_fallbacks, st.redis_failures, st.reconnect_tries, st.local_grants);
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

int main(int argc, char **argv) {
    if (argc < 6) return usage();
    int is_pause = strcmp(argv[1], "pause") == 0;
    if (!is_pause && (argc != 8 || (strcmp(argv[1], "run") && strcmp(argv[1], "seq")))) return usage();
    fc_log_setup(FC_LOG_WARN, FC_LOG_TEXT, "limiter-driver");
    char err[128];
    fc_redis *r = fc_redis_new(argv[2], 1000, err, sizeof(err));
    if (!r) {
        fprintf(stderr, "redis url: %s\n", err);
        return 2;
    }
    fc_limiter_conf c = {.prefix = argv[3], .api = argv[4], .fallback = FC_LIMITER_PAUSE};
    if (!is_pause) c.calls = (fc_limit){atof(argv[5]), atof(argv[6])};
    else c.calls = (fc_limit){1, 1};
    fc_limiter *l = fc_limiter_new(r, &c);
    int rc = 2;
    if (l && is_pause) {
        double before = realtime();
        rc = fc_limiter_pause(l, atol(argv[5])) == FC_OK ? 0 : 1;
        printf("%.6f %.6f\n", before, realtime());
    } else if (l) {
        rc = strcmp(argv[1], "run") == 0 ? run(l, atof(argv[7])) : seq(l, atol(argv[7]));
    }
    if (l) print_stats(l);
    fc_limiter_free(l);
    fc_redis_free(r);
    return rc;
}
