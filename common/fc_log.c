/* Logging: one line per event on stderr, as text or as JSON lines. Every message is escaped as a whole
 * once formatted (escape below), so no caller has to remember which of its arguments came from outside. */
#include "fc_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fc_text.h"

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

/* escape_one writes into out (room for 12 bytes) how the well-formed sequence s of k bytes (k == 0: the
 * invalid byte s[0]) is shown: NULL if it is shown as it is. Text lines show \n, \t, \r, \xNN for other C0
 * controls, DEL and invalid bytes, \uNNNN for C1 controls; JSON lines escape '"' and '\\', every control as
 * \uNNNN and an invalid byte as \ufffd (a JSON line stays valid UTF-8). */
static const char *escape_one(const unsigned char *s, size_t k, int json, char *out) {
    unsigned c = s[0];
    if (k == 2 && fc_text_is_control(s, k)) c = ((s[0] & 0x1fu) << 6) | (s[1] & 0x3fu); /* U+0080..U+009F */
    else if (k > 1 || (k == 1 && !fc_text_is_control(s, 1) && !(json && (c == '"' || c == '\\')))) return NULL;
    if (json && (c == '"' || c == '\\')) snprintf(out, 12, "\\%c", (char)c);
    else if (json) snprintf(out, 12, "\\u%04x", k ? c : 0xfffdu);
    else if (c == '\n' || c == '\t' || c == '\r') snprintf(out, 12, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
    else if (k == 2) snprintf(out, 12, "\\u%04x", c);
    else snprintf(out, 12, "\\x%02x", c);
    return out;
}

/* escape copies s into out (at most outlen bytes, NUL-terminated, never cut inside a sequence or an escape)
 * as one line, escaped by escape_one: text that came from outside (a term, a message id, an API error
 * body) cannot start a line of its own or send a terminal an escape sequence. */
static void escape(const char *s, char *out, size_t outlen, int json) {
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, n = strlen(s);
    char esc[12];
    for (size_t i = 0, k; i < n; i += k ? k : 1) {
        k = fc_text_utf8_seq(u + i, n - i);
        const char *e = escape_one(u + i, k, json, esc);
        size_t m = e ? strlen(e) : k;
        if (o + m + 1 > outlen) break;
        memcpy(out + o, e ? e : s + i, m);
        o += m;
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
    char esc[4200];
    escape(msg, esc, sizeof(esc), log_format == FC_LOG_JSON);
    if (log_format == FC_LOG_JSON) {
        snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"program\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n",
                 ts, level_names[level], log_program, (int)getpid(), esc);
    } else {
        snprintf(line, sizeof(line), "%s %s[%d] %-5s %s\n", ts, log_program, (int)getpid(),
                 level_names[level], esc);
    }
    /* One write per line so lines from concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, strlen(line));
    (void)w;
}
