/* Project-wide error codes: 0 is success, a negative FC_E* code is a failure.
 * Every wrapper translates its library's codes into these at its boundary. */
#ifndef FC_ERROR_H
#define FC_ERROR_H

#define FC_ERRNO_MAP(X)                                     \
    X(NOMEM, "out of memory")                               \
    X(INVAL, "invalid argument")                            \
    X(IO, "input/output error")                             \
    X(PARSE, "malformed input")                             \
    X(RANGE, "value out of range")                          \
    X(TOOBIG, "too large")                                  \
    X(EOF, "end of input")                                  \
    X(TIMEOUT, "timed out")                                 \
    X(CONN, "connection failed or lost")                    \
    X(BROKER, "message broker refused the operation")       \
    X(NACK, "message broker rejected a message")            \
    X(UNROUTABLE, "message could not be routed")            \
    X(REDIS, "redis command failed")                        \
    X(NOSCRIPT, "redis script not loaded")                  \
    X(HTTP, "HTTP request failed")                          \
    X(AUTH, "API credentials rejected")                     \
    X(NOTFOUND, "not found")                                \
    X(BUSY, "resource busy, try later")                    \
    X(ACCESS, "permission refused")                         \
    X(BUDGET, "budget exhausted")

enum {
    FC_OK = 0,
#define FC_ERR_ENUM(name, msg) FC_E##name,
    FC_ERR_FIRST_ = -100,
    FC_ERRNO_MAP(FC_ERR_ENUM)
#undef FC_ERR_ENUM
};

/* fc_strerror returns a static description of an FC_E* code (never NULL). */
const char *fc_strerror(int code);

#endif
