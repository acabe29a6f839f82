/* flashcard-worker: consumes batch messages and turns every item into flashcards. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_error.h"
#include "fc_http.h"
#include "fc_log.h"
#include "worker.h"

static int signal_pipe[2] = {-1, -1};

/* on_signal only writes a byte: the event loop does the work. */
static void on_signal(int sig) {
    int saved = errno;
    char c = (char)sig;
    ssize_t n = write(signal_pipe[1], &c, 1);
    (void)n;
    errno = saved;
}

static int setup_signals(void) {
    if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return FC_EIO;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return FC_OK;
}

/* Descriptors a worker needs beside one per call in flight: the broker, Redis, epoll, the signal pipe, the
 * metrics server (at most 64 clients), the resolver, and curl's connections that are closing. */
#define FD_OVERHEAD 256

/* raise_fd_limit lifts the soft RLIMIT_NOFILE to what WORKER_COUNT needs (one socket per call in flight over
 * HTTP/1.1), up to the hard limit. Returns 0, or FC_EINVAL after printing why when the hard limit is too low. */
static int raise_fd_limit(int worker_count) {
    struct rlimit rl;
    rlim_t need = (rlim_t)worker_count + FD_OVERHEAD;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return FC_OK;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr,
                "flashcard-worker: WORKER_COUNT=%d needs %lu open files (one connection per call in flight + %d), "
                "but the hard limit RLIMIT_NOFILE is %lu: raise it (ulimit -n %lu as root, LimitNOFILE= in systemd, "
                "--ulimit nofile=%lu in docker) or lower WORKER_COUNT to at most %ld\n",
                worker_count, (unsigned long)need, FD_OVERHEAD, (unsigned long)rl.rlim_max, (unsigned long)need,
                (unsigned long)need, (long)rl.rlim_max - FD_OVERHEAD);
        return FC_EINVAL;
    }
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        int e = errno;
        fprintf(stderr, "flashcard-worker: WORKER_COUNT=%d: cannot raise the open-files limit from %lu to %lu: %s\n",
                worker_count, (unsigned long)old, (unsigned long)need, strerror(e));
        return FC_EINVAL;
    }
    return FC_OK;
}

int main(int argc, char **argv) {
    fc_config cfg;
    char err[512];
    int rc = fc_config_load(&cfg, FC_WORKER, argc, argv, err, sizeof(err));
    if (rc == 1) return 0;
    if (rc != FC_OK) {
        fprintf(stderr, "flashcard-worker: %s\n", err);
        fc_config_free(&cfg);
        return 2;
    }
    if (raise_fd_limit(cfg.worker_count) != FC_OK) {
        fc_config_free(&cfg);
        return 2;
    }
    fc_log_setup(fc_log_level_parse(cfg.log_level), strcmp(cfg.log_format, "json") ? FC_LOG_TEXT : FC_LOG_JSON,
                 "flashcard-worker");
    srand((unsigned)(time(NULL) ^ getpid()));
    fc_http_global_init();
    if (setup_signals() != FC_OK) {
        fc_error("cannot install signal handlers");
        return 1;
    }
    worker w;
    rc = worker_init(&w, &cfg, signal_pipe[0]);
    if (rc == FC_OK) rc = worker_run(&w);
    else rc = rc == FC_EINVAL ? 2 : 1;
    worker_free(&w);
    fc_config_free(&cfg);
    fc_http_global_cleanup();
    return rc;
}
