/* Redis client: the one module that speaks hiredis. Blocking, one context per thread.
 * Reconnects on demand and re-applies the command timeout, AUTH and SELECT that
 * hiredis 0.14 forgets after a reconnect; can follow a Redis Sentinel setup (hiredis 0.14 has
 * no Sentinel support: the sentinels are asked for the primary's address before each connect). */
#ifndef FC_REDIS_H
#define FC_REDIS_H

#include <stddef.h>

typedef struct fc_redis fc_redis;

enum fc_reply_type { FC_REPLY_NIL, FC_REPLY_INT, FC_REPLY_STR, FC_REPLY_ARRAY, FC_REPLY_STATUS, FC_REPLY_ERROR };

/* A reply in the project's own type. Owned by the caller: free with fc_reply_free. */
typedef struct fc_reply {
    int type;
    long long integer;        /* FC_REPLY_INT */
    char *str;                /* STR, STATUS, ERROR: NUL-terminated, owned */
    size_t len;
    struct fc_reply *elem;    /* ARRAY: owned array */
    size_t nelem;
} fc_reply;

/* Longest host, user name, password and sentinel master name a setting may carry, NUL included. */
#define FC_REDIS_HOST_MAX 256
#define FC_REDIS_USER_MAX 128
#define FC_REDIS_PASSWORD_MAX 256
#define FC_REDIS_MASTER_MAX 128
/* Most sentinels a list may name. */
#define FC_REDIS_SENTINELS_MAX 16
/* Longest a sentinel may take to connect or answer, in ms (less if the client's timeout is less). */
#define FC_REDIS_SENTINEL_TIMEOUT_MS 500
/* How often, in ms, a connected client asks a sentinel whether its node is still the primary. */
#define FC_REDIS_SENTINEL_CHECK_MS 1000

/* fc_redis_new parses url (redis://[[user]:password@]host[:port][/db]; the userinfo ends at
 * the last '@', the password is what follows its first ':', or all of it; the user is what
 * precedes that ':') and returns a client; it connects lazily, on the first command.
 * On connecting it sends "AUTH user password" when the URL names a user (an ACL user, Redis 6+),
 * "AUTH password" when it has only a password (requirepass), nothing without a userinfo.
 * Returns NULL on a malformed URL (why in err, never quoting the password); an unreachable
 * server is not an error here: commands will fail with FC_ECONN and reconnect on the next call.
 * Free with fc_redis_free (NULL accepted). */
fc_redis *fc_redis_new(const char *url, int timeout_ms, char *err, size_t errlen);
void fc_redis_free(fc_redis *r);

/* fc_redis_set_sentinels makes r follow a Redis Sentinel setup: before every (re)connect it asks
 * the sentinels listed in sentinels ("host:port,host:port,...", IPv6 as "[addr]:port", spaces
 * around entries ignored, at most FC_REDIS_SENTINELS_MAX) in turn, starting with the last one
 * that answered, for the address of the primary named master (SENTINEL get-master-addr-by-name,
 * FC_REDIS_SENTINEL_TIMEOUT_MS each), connects there and checks with ROLE that the node is a
 * primary (an ACL user needs +role). The host and port of r's URL are then unused; its user,
 * password and db still apply, and a sentinel that answers NOAUTH is sent the same AUTH.
 * While connected, a command that comes FC_REDIS_SENTINEL_CHECK_MS or more after the last check
 * first asks one sentinel whether the primary moved (a switchover leaves the old primary taking
 * writes for seconds); if it did, the client connects to the new one. A command answered
 * READONLY or MASTERDOWN (a demoted primary) drops the connection, so the next command asks the
 * sentinels again. Only parses here (no I/O; a current connection is
 * dropped). sentinels NULL or "" turns it off. 0, or FC_EINVAL with why in err (naming the
 * entry that is wrong); r is unchanged on error. */
int fc_redis_set_sentinels(fc_redis *r, const char *sentinels, const char *master, char *err, size_t errlen);

/* What fc_redis_url_redact writes for a URL fc_redis_new would refuse. */
#define FC_REDIS_URL_UNPARSABLE "(unparsable redis URL)"

/* fc_redis_url_redact writes url into out (outlen bytes, truncated if need be) with the password
 * replaced by "***", split by the same parser as fc_redis_new, so whatever would be sent to AUTH
 * never appears. Returns 0, or FC_EINVAL when fc_redis_new would refuse the URL: out then holds
 * FC_REDIS_URL_UNPARSABLE and nothing of url. */
int fc_redis_url_redact(const char *url, char *out, size_t outlen);

/* fc_redis_command runs one command given as argv (binary-safe with lens, or NULL lens
 * for C strings). On success returns 0 and fills *out (caller frees; may be NULL to
 * discard). A Redis error reply is returned as FC_EREDIS (FC_ENOSCRIPT for NOSCRIPT)
 * with the text in fc_redis_errstr (and in out as an FC_REPLY_ERROR, both without the
 * password, at most 255 bytes). I/O failures return FC_ECONN and the next call reconnects.
 * A failed AUTH or SELECT while (re)connecting returns FC_EREDIS ("AUTH failed: ..."), and
 * the next call connects again. With sentinels, no primary found (sentinels unreachable or
 * not knowing the master, the node named unreachable or not a primary) returns FC_ECONN.
 * An error reply starting READONLY or MASTERDOWN (the node is, or follows, a replica now) is
 * returned as FC_EREDIS and drops the connection: the next call connects again. */
int fc_redis_command(fc_redis *r, fc_reply *out, int argc, const char **argv, const size_t *lens);

/* fc_redis_cmd is fc_redis_command with a printf-like hiredis format ("SET %s %b"). */
int fc_redis_cmd(fc_redis *r, fc_reply *out, const char *fmt, ...);

/* fc_redis_pipeline sends n commands in one round trip; replies (if not NULL) gets n
 * entries. Returns the first failure. */
int fc_redis_pipeline(fc_redis *r, fc_reply *replies, size_t n, const int *argcs,
                      const char ***argvs, const size_t **lens);

/* fc_redis_errstr returns the last error text (never NULL; never contains the password). */
const char *fc_redis_errstr(const fc_redis *r);

void fc_reply_free(fc_reply *rep);

/* Test seam (fault injection): when fn is set, fc_redis_command and fc_redis_cmd ask it first,
 * with cmd the command's name ("EVALSHA"; at most 31 bytes) and text a buffer of textlen bytes
 * (empty). fn returns 0 to let the command run, FC_EREDIS to answer it with the error reply
 * it wrote into text, exactly as if Redis had sent it ("OOM command not allowed ...",
 * "NOSCRIPT ..." gives FC_ENOSCRIPT), or another code, e.g. FC_ECONN (the connection is then
 * dropped), to fail it that way. Nothing is sent when it fails the command. Pipelines do not
 * ask it. fn NULL turns it off. */
typedef int (*fc_redis_fault_fn)(void *arg, const char *cmd, char *text, size_t textlen);
void fc_redis_set_fault(fc_redis *r, fc_redis_fault_fn fn, void *arg);

#endif
