/* Logging: one line per event on stderr, as text or as JSON lines. */
#include "fc_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int fc_log_level = FC_LOG_INFO;
static int log_format = FC_LOG_TEXT;
static char log_program[32] = "flashcard";

static const char *level_names[] = {"debug", "info", "warn", "error"};

void fc_log_setup(int level, int format, const char *program) {
    fc_log_level = level;
    log_format = format;
    if (program) snprintf(log_program, sizeof(log_program), "%s", program);
}

int fc_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    if (strcmp(s, "warning") == 0) return FC_LOG_WARN;
    return -1;
}

/* json_escape appends s to out (at most outlen bytes, NUL-terminated) as a JSON string body. */
static void json_escape(const char *s, char *out, size_t outlen) {
    size_t o = 0;
    for (; *s && o + 7 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

void fc_log_write(int level, const char *fmt, ...) {
    char msg[2048], line[4400], ts[40];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", (long)tv.tv_usec / 1000);
    if (level < 0 || level > FC_LOG_ERROR) level = FC_LOG_ERROR;
    if (log_format == FC_LOG_JSON) {
        char esc[4200];
        json_escape(msg, esc, sizeof(esc));
        snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"program\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n",
                 ts, level_names[level], log_program, (int)getpid(), esc);
    } else {
        snprintf(line, sizeof(line), "%s %s[%d] %-5s %s\n", ts, log_program, (int)getpid(),
                 level_names[level], msg);
    }
    /* One write per line so lines from concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, strlen(line));
    (void)w;
}
