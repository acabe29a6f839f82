/* Logging to stderr as text or JSON lines. fc_log() checks the level before formatting. */
#ifndef FC_LOG_H
#define FC_LOG_H

#include <stddef.h>

enum fc_log_level { FC_LOG_DEBUG, FC_LOG_INFO, FC_LOG_WARN, FC_LOG_ERROR, FC_LOG_OFF };
enum fc_log_format { FC_LOG_TEXT, FC_LOG_JSON };

extern int fc_log_level;

/* fc_log_setup sets the threshold, the format and the program name shown on each line. */
void fc_log_setup(int level, int format, const char *program);

/* fc_log_level_parse maps "debug|info|warn|error" to a level; returns -1 if unknown. */
int fc_log_level_parse(const char *s);

/* fc_log_write formats one event and writes it as one line (one write(2)). The formatted message is escaped as
 * a whole, so text from outside in any argument (a term, a message id, an API error body) cannot split the
 * line or reach a terminal as a control sequence: text lines show \n, \t, \r, \xNN (other C0 controls, DEL,
 * invalid UTF-8 bytes) and \uNNNN (C1 controls); JSON lines escape every control character and write an
 * invalid byte as \ufffd. Messages past about 2 KiB are cut (never inside a character or an escape). */
void fc_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fc_log(level, ...)                                     \
    do {                                                       \
        if ((level) >= fc_log_level) fc_log_write(level, __VA_ARGS__); \
    } while (0)
#define fc_debug(...) fc_log(FC_LOG_DEBUG, __VA_ARGS__)
#define fc_info(...) fc_log(FC_LOG_INFO, __VA_ARGS__)
#define fc_warn(...) fc_log(FC_LOG_WARN, __VA_ARGS__)
#define fc_error(...) fc_log(FC_LOG_ERROR, __VA_ARGS__)

#endif
