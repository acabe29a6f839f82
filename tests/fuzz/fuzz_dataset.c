/* Fuzz target of the dataset readers (fc_dataset.c: CSV, TSV, JSON Lines, and the --columns mapping).
 * Input: one control byte, then the dataset. Control bits 0-1 pick the format (CSV, TSV, JSONL, CSV), bit 2
 * says the dataset's first line is a column mapping for fc_columns_parse, bits 3-7 give a chunk size of 1..32
 * bytes. The dataset is read twice through the public streaming API: once from a FILE without a descriptor
 * (fmemopen: stdio, one buffer), once from a descriptor whose every read(2) returns one chunk (a SOCK_SEQPACKET
 * socket pair keeps the writer's message boundaries, whatever the timing, so runs are reproducible), so that
 * every record boundary, CRLF, quoted newline, escape and UTF-8 sequence falls across reads somewhere. Both
 * reads must give the same items and the same bad rows, and each item what fc_dataset.h promises. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fc_buf.h"
#include "fc_dataset.h"
#include "fc_error.h"
#include "fuzz_check.h"

/* The writing end of the socket pair, fed by a thread one chunk per message. */
typedef struct feeder {
    int wfd;
    const uint8_t *p;
    size_t left, chunk;
    long waits; /* calls of the wait hook */
} feeder;

static void *feed(void *ud) {
    feeder *f = ud;
    while (f->left) {
        size_t n = f->left < f->chunk ? f->left : f->chunk;
        if (send(f->wfd, f->p, n, MSG_NOSIGNAL) != (ssize_t)n) break; /* the reader stopped early */
        f->p += n;
        f->left -= n;
    }
    close(f->wfd);
    return NULL;
}

/* on_wait is the wait hook: it only counts, the data comes as the writer sends it. */
static int on_wait(void *ud, int fd) {
    ((feeder *)ud)->waits++;
    return fd >= 0 ? 0 : FC_EIO;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

static int trimmed(const char *s) {
    size_t n = strlen(s);
    return !n || (!is_space(s[0]) && !is_space(s[n - 1]));
}

/* check_item checks one item against the header's promises and appends it to the transcript. */
static void check_item(const fc_item *it, fc_dataset *ds, long *last_line, uint8_t *seen, fc_buf *t) {
    FUZZ_CHECK(it->position >= 1 && it->position <= FC_DATASET_POSITION_MAX, "position %lld", it->position);
    if (it->position < 4096 * 8) {
        FUZZ_CHECK(!(seen[it->position >> 3] & (1u << (it->position & 7))), "position %lld twice", it->position);
        seen[it->position >> 3] |= (uint8_t)(1u << (it->position & 7));
    }
    FUZZ_CHECK(it->term && *it->term && trimmed(it->term) && fuzz_str_ok(it->term, FC_DATASET_MAX_RECORD),
               "term '%s'", it->term ? it->term : "(null)");
    FUZZ_CHECK(it->type && trimmed(it->type) && fuzz_str_ok(it->type, FC_DATASET_MAX_RECORD), "type");
    FUZZ_CHECK(it->line >= 1 && it->line >= *last_line && it->line <= fc_dataset_line(ds), "line %ld (last %ld, now %ld)",
               it->line, *last_line, fc_dataset_line(ds));
    *last_line = it->line;
    fc_buf_printf(t, "item %lld line %ld term %s type %s", it->position, it->line, it->term, it->type);
    for (size_t i = 0; i < it->nextra; i++) {
        FUZZ_CHECK(fuzz_str_ok(it->extra[i].name, FC_DATASET_MAX_RECORD), "extra name");
        FUZZ_CHECK(fuzz_str_ok(it->extra[i].value, FC_DATASET_MAX_RECORD), "extra value");
        fc_buf_printf(t, " [%s=%s]", it->extra[i].name, it->extra[i].value);
    }
    fc_buf_puts(t, "\n");
}

/* read_all reads fp to its end, writing a transcript of what the reader returned into t. */
static void read_all(FILE *fp, int format, const fc_columns *cols, feeder *f, size_t max_calls, fc_buf *t) {
    char err[256] = "";
    fc_dataset *ds = fc_dataset_open(fp, format, cols, err, sizeof(err));
    if (!ds) {
        FUZZ_CHECK(*err && fuzz_str_ok(err, sizeof(err) - 1), "open error '%s'", err);
        fc_buf_printf(t, "open failed: %s\n", err);
        return;
    }
    if (f) fc_dataset_set_wait(ds, on_wait, f);
    static uint8_t seen[4096];
    memset(seen, 0, sizeof(seen));
    long last_line = 0, results = 0;
    size_t calls = 0;
    for (;; calls++) {
        FUZZ_CHECK(calls <= max_calls, "more than %zu calls of fc_dataset_next", max_calls);
        fc_item it = {0};
        fc_row_error re = {0};
        int rc = fc_dataset_next(ds, &it, &re);
        if (rc == 1) {
            results++;
            check_item(&it, ds, &last_line, seen, t);
            fc_item_clear(&it);
        } else if (rc == FC_EPARSE) {
            results++;
            char prefix[40];
            snprintf(prefix, sizeof(prefix), "line %ld: ", re.line);
            FUZZ_CHECK(re.line >= 1 && re.line <= fc_dataset_line(ds), "bad row line %ld", re.line);
            FUZZ_CHECK(strncmp(re.reason, prefix, strlen(prefix)) == 0, "reason '%s'", re.reason);
            FUZZ_CHECK(fuzz_str_ok(re.reason, sizeof(re.reason) - 1), "reason not UTF-8");
            fc_buf_printf(t, "bad %s\n", re.reason);
        } else {
            FUZZ_CHECK(rc == 0, "fc_dataset_next returned %d (%s)", rc, fc_strerror(rc));
            FUZZ_CHECK(fc_dataset_next(ds, &it, &re) == 0, "no end after end");
            break;
        }
    }
    FUZZ_CHECK(fc_dataset_rows(ds) == results, "rows %ld, results %ld", fc_dataset_rows(ds), results);
    fc_buf_printf(t, "rows %ld lines %ld\n", fc_dataset_rows(ds), fc_dataset_line(ds));
    fc_dataset_close(ds);
}

/* columns_from reads the mapping on the first line of *p; returns 0 to go on, -1 if it was refused. */
static int columns_from(const uint8_t **p, size_t *n, fc_columns *cols) {
    const uint8_t *nl = memchr(*p, '\n', *n);
    size_t len = nl ? (size_t)(nl - *p) : *n;
    char *spec = strndup((const char *)*p, len), err[256] = "";
    FUZZ_CHECK(spec != NULL, "out of memory");
    int rc = fc_columns_parse(spec, cols, err, sizeof(err));
    free(spec);
    *p += len + (nl != NULL);
    *n -= len + (nl != NULL);
    if (rc != FC_OK) {
        FUZZ_CHECK(rc == FC_EINVAL && *err && fuzz_str_ok(err, sizeof(err) - 1), "columns rc %d '%s'", rc, err);
        return -1;
    }
    const char *v[3] = {cols->position, cols->term, cols->type};
    for (int k = 0; k < 3; k++) FUZZ_CHECK(memchr(v[k], '\0', sizeof(cols->position)), "column %d unterminated", k);
    FUZZ_CHECK(*cols->position && *cols->term && strcmp(cols->position, cols->term), "position/term columns");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const int formats[4] = {FC_FORMAT_CSV, FC_FORMAT_TSV, FC_FORMAT_JSONL, FC_FORMAT_CSV};
    int format = formats[data[0] & 3];
    size_t chunk = 1 + (data[0] >> 3);
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    fc_columns cols;
    fc_columns_default(&cols);
    if ((data[0] & 4) && columns_from(&p, &n, &cols) != 0) return 0;
    
    fc_buf whole = {0}, chunked = {0};
    size_t max_calls = n + 4; /* every call consumes at least one line */
    /* stdio: fmemopen needs a non-empty buffer */
    char *copy = malloc(n ? n : 1);
    FUZZ_CHECK(copy != NULL, "out of memory");
    memcpy(copy, p, n);
    FILE *mf = n ? fmemopen(copy, n, "r") : NULL;
    if (mf) {
        read_all(mf, format, &cols, NULL, max_calls, &whole);
        fclose(mf);
    }
    /* a socket pair, one chunk per read */
    int fds[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds) == 0, "socketpair");
    FILE *sf = fdopen(fds[0], "r");
    FUZZ_CHECK(sf != NULL, "fdopen");
    feeder f = {fds[1], p, n, chunk, 0};
    pthread_t writer;
    FUZZ_CHECK(pthread_create(&writer, NULL, feed, &f) == 0, "pthread_create");
    read_all(sf, format, &cols, &f, max_calls, &chunked);
    fclose(sf); /* a writer still sending (the reader stopped at an error) gets EPIPE */
    pthread_join(writer, NULL);
    if (mf) {
        const char *a = whole.data ? whole.data : "", *b = chunked.data ? chunked.data : "";
        FUZZ_CHECK(strcmp(a, b) == 0, "whole and chunked reads differ (chunk %zu):\n--- whole\n%s--- chunked\n%s", chunk,
                   a, b);
    }
    fc_buf_free(&whole);
    fc_buf_free(&chunked);
    free(copy);
    return 0;
}
