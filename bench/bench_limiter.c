/* Benchmark of fc_limiter_acquire against a real Redis: latency p50/p99 and acquires/s from
 * P processes at once, with a rate high enough never to wait (so it measures the round trip).
 *
 *   bench-limiter [URL] [PROCS] [ACQUIRES_PER_PROC]     defaults: redis://127.0.0.1:6379 1 20000
 *   bench-limiter --script                              prints the limiter's Lua script */
#include <stdint.h>
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

/* Shared between the children (writers) and the parent (reader). */
typedef struct shared {
    int64_t start_ns[64], end_ns[64];
    long errors[64], fallbacks[64];
    int64_t lat_ns[]; /* procs * n */
} shared;

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* child runs n acquires once the parent closes the start pipe; never returns. */
static void child(const char *url, int id, long n, int start_fd, shared *sh) {
    char err[128], c;
    fc_redis *r = fc_redis_new(url, 2000, err, sizeof(err));
    fc_limiter_conf conf = {.prefix = "bench", .api = "bench", .calls = {1e9, 1e9}, .tokens = {1e12, 1e12}};
    fc_limiter *l = r ? fc_limiter_new(r, &conf) : NULL;
    long wait;
    if (!l || fc_limiter_acquire(l, 100, &wait) != FC_OK) _exit(1); /* connect, load the script */
    if (read(start_fd, &c, 1) < 0) _exit(1);
    int64_t *lat = sh->lat_ns + (size_t)id * (size_t)n;
    sh->start_ns[id] = mono_ns();
    for (long i = 0; i < n; i++) {
        int64_t t0 = mono_ns();
        if (fc_limiter_acquire(l, 100, &wait) != FC_OK) sh->errors[id]++;
        lat[i] = mono_ns() - t0;
    }
    sh->end_ns[id] = mono_ns();
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    sh->fallbacks[id] = st.eval_fallbacks;
    fc_limiter_free(l);
    fc_redis_free(r);
    _exit(0);
}

static void report(shared *sh, int procs, long n) {
    size_t total = (size_t)procs * (size_t)n;
    qsort(sh->lat_ns, total, sizeof(int64_t), cmp64);
    int64_t first = sh->start_ns[0], last = sh->end_ns[0];
    long errors = 0, fallbacks = 0;
    for (int i = 0; i < procs; i++) {
        if (sh->start_ns[i] < first) first = sh->start_ns[i];
        if (sh->end_ns[i] > last) last = sh->end_ns[i];
        errors += sh->errors[i];
        fallbacks += sh->fallbacks[i];
    }
    double secs = (double)(last - first) / 1e9;
    printf("procs=%d acquires=%zu elapsed=%.3f s rate=%.0f acquires/s p50=%.1f us p99=%.1f us max=%.1f us "
           "errors=%ld eval_fallbacks=%ld\n",
           procs, total, secs, (double)total / secs, (double)sh->lat_ns[total / 2] / 1e3,
           (double)sh->lat_ns[total * 99 / 100] / 1e3, (double)sh->lat_ns[total - 1] / 1e3, errors, fallbacks);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--script") == 0) return fputs(fc_limiter_script(), stdout) == EOF;
    const char *url = argc > 1 ? argv[1] : "redis://127.0.0.1:6379";
    int procs = argc > 2 ? atoi(argv[2]) : 1;
    long n = argc > 3 ? atol(argv[3]) : 20000;
    if (procs < 1 || procs > 64 || n < 1 || n > 10000000) {
        fprintf(stderr, "usage: bench-limiter [URL] [PROCS 1..64] [ACQUIRES_PER_PROC]\n");
        return 2;
    }
    fc_log_setup(FC_LOG_WARN, FC_LOG_TEXT, "bench-limiter");
    size_t size = sizeof(shared) + (size_t)procs * (size_t)n * sizeof(int64_t);
    shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int start[2];
    if (sh == MAP_FAILED || pipe(start) != 0) {
        perror("bench-limiter");
        return 1;
    }
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(start[1]);
            child(url, i, n, start[0], sh);
        }
    }
    close(start[0]);
    usleep(300000); /* let every child connect and warm up */
    close(start[1]);
    int failed = 0, status;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    if (failed) {
        fprintf(stderr, "bench-limiter: a child failed (is redis at %s?)\n", url);
        return 1;
    }
    report(sh, procs, n);
    munmap(sh, size);
    return 0;
}
