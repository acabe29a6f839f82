/* Markers of dead letters in Redis: Lua scripts that take a dead letter on (stashing the job's records
 * of its items), check whether its replacement went out, and put the records back on failure. */
#include "marker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_limiter.h"

#define MARKER_TTL "604800" /* seconds: as long as a job's record */

/* KEYS: marker, outcome, failed, retry. ARGV: ttl, mode, job, sel. */
static const char claim_lua[] =
    "local t = redis.call('TYPE', KEYS[1])['ok']\n"
    "if t == 'string' then return {'done'} end\n"
    "if t == 'hash' then\n"
    "  local m = redis.call('HMGET', KEYS[1], 'state', 'mode', 'sel', 'rep', 'r', 'restored')\n"
    "  if m[1] == 'pending' then\n"
    "    return {'pending', m[2] or '', m[3] or '', m[4] or '', m[5] or '0', m[6] or '0'}\n"
    "  end\n"
    "elseif t ~= 'none' then\n"
    "  return redis.error_reply('marker ' .. KEYS[1] .. ' is a ' .. t)\n"
    "end\n"
    "local rep = {}\n"
    "if ARGV[2] == 'replay' then\n"
    "  for p in string.gmatch(ARGV[4], '[^,]+') do\n"
    "    local o = redis.call('HGET', KEYS[2], p)\n"
    "    if o ~= 'ok' and redis.call('HEXISTS', KEYS[4], p) == 0 then\n"
    "      rep[#rep + 1] = p\n"
    "      local f = redis.call('HGET', KEYS[3], p)\n"
    "      if o then redis.call('HSET', KEYS[1], 'o:' .. p, o) else redis.call('HDEL', KEYS[1], 'o:' .. p) end\n"
    "      if f then redis.call('HSET', KEYS[1], 'f:' .. p, f) else redis.call('HDEL', KEYS[1], 'f:' .. p) end\n"
    "      redis.call('HDEL', KEYS[2], p)\n"
    "      redis.call('HDEL', KEYS[3], p)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local r = table.concat(rep, ',')\n"
    "redis.call('HSET', KEYS[1], 'state', 'pending', 'mode', ARGV[2], 'job', ARGV[3], 'sel', ARGV[4], 'rep', r,\n"
    "           'r', '0', 'restored', '0')\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "return {'claimed', ARGV[2], ARGV[4], r, '0', '0'}\n";

/* KEYS: marker, outcome, failed, retry. */
static const char check_lua[] =
    "if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 'gone' end\n"
    "local m = redis.call('HMGET', KEYS[1], 'state', 'rep', 'restored')\n"
    "if m[1] ~= 'pending' then return 'gone' end\n"
    "local restored = m[3] == '1'\n"
    "for p in string.gmatch(m[2] or '', '[^,]+') do\n"
    "  local cur = redis.call('HGET', KEYS[2], p)\n"
    "  if redis.call('HEXISTS', KEYS[4], p) == 1 then cur = 'retry' end\n"
    "  local was = false\n"
    "  if restored then was = redis.call('HGET', KEYS[1], 'o:' .. p) end\n"
    "  if cur ~= was then\n"
    "    redis.call('HSET', KEYS[1], 'r', '1')\n"
    "    return 'delivered'\n"
    "  end\n"
    "end\n"
    "if restored then\n"
    "  for p in string.gmatch(m[2] or '', '[^,]+') do\n"
    "    redis.call('HDEL', KEYS[2], p)\n"
    "    redis.call('HDEL', KEYS[3], p)\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'restored', '0')\n"
    "end\n"
    "return 'stashed'\n";

/* KEYS: marker, outcome, failed, retry. ARGV: ttl, restore, release. */
static const char fail_lua[] =
    "if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end\n"
    "local m = redis.call('HMGET', KEYS[1], 'rep', 'restored')\n"
    "if ARGV[2] == '1' and m[2] ~= '1' then\n"
    "  local put = false\n"
    "  for p in string.gmatch(m[1] or '', '[^,]+') do\n"
    "    if not redis.call('HGET', KEYS[2], p) and redis.call('HEXISTS', KEYS[4], p) == 0 then\n"
    "      local o = redis.call('HGET', KEYS[1], 'o:' .. p)\n"
    "      local f = redis.call('HGET', KEYS[1], 'f:' .. p)\n"
    "      if o then redis.call('HSET', KEYS[2], p, o); put = true end\n"
    "      if f then redis.call('HSETNX', KEYS[3], p, f); put = true end\n"
    "    end\n"
    "  end\n"
    "  if put then\n"
    "    redis.call('EXPIRE', KEYS[2], ARGV[1])\n"
    "    redis.call('EXPIRE', KEYS[3], ARGV[1])\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'restored', '1')\n"
    "end\n"
    "if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'state', 'void') end\n"
    "return 1\n";

/* A script and its SHA-1, computed on first use. */
typedef struct script {
    const char *text;
    char sha[41];
} script;

static script claim_script = {claim_lua, ""}, check_script = {check_lua, ""}, fail_script = {fail_lua, ""};

/* run sends script with the marker's four keys and argc arguments: EVALSHA, then EVAL when Redis does
 * not know it yet. 0 with *out (caller frees), or an fc_redis error. */
static int run(admin_marker *m, script *sc, int argc, const char **args, fc_reply *out) {
    if (!sc->sha[0]) fc_limiter_sha1_hex(sc->text, strlen(sc->text), sc->sha);
    const char *argv[16] = {"EVALSHA", sc->sha, "4", m->key, m->outcome, m->failed, m->retry};
    for (int i = 0; i < argc && i < 9; i++) argv[7 + i] = args[i];
    int rc = fc_redis_command(m->redis, out, 7 + argc, argv, NULL);
    if (rc == FC_ENOSCRIPT) {
        fc_reply_free(out);
        argv[0] = "EVAL";
        argv[1] = sc->text;
        rc = fc_redis_command(m->redis, out, 7 + argc, argv, NULL);
    }
    return rc;
}

void admin_marker_init(admin_marker *m, admin *ad, const char *hex, const char *job_id) {
    memset(m, 0, sizeof(*m));
    m->redis = ad->redis;
    fc_key_replayed(m->key, sizeof(m->key), ad->cfg->queue_prefix, hex);
    if (!job_id) return;
    admin_job_key(m->outcome, ad, job_id, FC_JOB_OUTCOME);
    admin_job_key(m->failed, ad, job_id, FC_JOB_FAILED);
    admin_job_key(m->retry, ad, job_id, FC_JOB_RETRY);
}

int admin_marker_peek(admin_marker *m, int *state, int *purge) {
    fc_reply r = {0};
    *state = ADMIN_MARKER_NONE;
    *purge = 0;
    int rc = fc_redis_cmd(m->redis, &r, "TYPE %s", m->key);
    const char *t = rc == FC_OK ? admin_reply_str(&r) : NULL;
    int hash = t && strcmp(t, "hash") == 0;
    if (t && strcmp(t, "string") == 0) *state = ADMIN_MARKER_DONE;
    fc_reply_free(&r);
    if (rc != FC_OK || !hash) return rc;
    rc = fc_redis_cmd(m->redis, &r, "HMGET %s state mode", m->key);
    if (rc == FC_OK && r.type == FC_REPLY_ARRAY && r.nelem == 2 && admin_reply_str(&r.elem[0]) &&
        strcmp(r.elem[0].str, "pending") == 0) {
        *state = ADMIN_MARKER_PENDING;
        *purge = admin_reply_str(&r.elem[1]) && strcmp(r.elem[1].str, "purge") == 0;
    }
    fc_reply_free(&r);
    return rc;
}

/* field returns element i of an array reply as a string ("" if absent). */
static const char *field(const fc_reply *r, size_t i) {
    const char *s = i < r->nelem ? admin_reply_str(&r->elem[i]) : NULL;
    return s ? s : "";
}

int admin_marker_claim(admin_marker *m, int purge, const char *job_id, const char *sel, admin_plan *out) {
    const char *args[] = {MARKER_TTL, purge ? "purge" : "replay", job_id, sel};
    fc_reply r = {0};
    memset(out, 0, sizeof(*out));
    int rc = run(m, &claim_script, 4, args, &r);
    if (rc == FC_OK && (r.type != FC_REPLY_ARRAY || r.nelem < 1)) rc = FC_EPARSE;
    if (rc == FC_OK) {
        const char *what = field(&r, 0);
        out->state = strcmp(what, "done") == 0 ? ADMIN_MARKER_DONE : ADMIN_MARKER_PENDING;
        out->claimed = strcmp(what, "claimed") == 0;
        out->purge = strcmp(field(&r, 1), "purge") == 0;
        out->r_out = strcmp(field(&r, 4), "1") == 0;
        out->restored = strcmp(field(&r, 5), "1") == 0;
        if (out->state == ADMIN_MARKER_PENDING) {
            out->sel = strdup(field(&r, 2));
            out->rep = strdup(field(&r, 3));
            if (!out->sel || !out->rep) rc = FC_ENOMEM;
        }
    }
    fc_reply_free(&r);
    return rc;
}

void admin_plan_free(admin_plan *p) {
    free(p->sel);
    free(p->rep);
    p->sel = p->rep = NULL;
}

int admin_marker_check(admin_marker *m, int *delivered) {
    fc_reply r = {0};
    int rc = run(m, &check_script, 0, NULL, &r);
    const char *what = rc == FC_OK ? admin_reply_str(&r) : NULL;
    if (rc == FC_OK && !what) rc = FC_EPARSE;
    if (rc == FC_OK && strcmp(what, "gone") == 0) rc = FC_ENOTFOUND;
    *delivered = rc == FC_OK && strcmp(what, "delivered") == 0;
    fc_reply_free(&r);
    return rc;
}

int admin_marker_sent(admin_marker *m) {
    fc_reply r = {0};
    int rc = fc_redis_cmd(m->redis, &r, "HSET %s r 1", m->key);
    fc_reply_free(&r);
    return rc;
}

int admin_marker_fail(admin_marker *m, int restore, int release) {
    const char *args[] = {MARKER_TTL, restore ? "1" : "0", release ? "1" : "0"};
    fc_reply r = {0};
    int rc = run(m, &fail_script, 3, args, &r);
    fc_reply_free(&r);
    return rc;
}

int admin_marker_done(admin_marker *m) {
    fc_reply r = {0};
    int rc = fc_redis_cmd(m->redis, &r, "SET %s done EX %s", m->key, MARKER_TTL);
    fc_reply_free(&r);
    return rc;
}
