#!/usr/bin/env bash
# Redis with a password and with an ACL user. A redis-server of its own (free loopback port) has
# requirepass and an ACL user allowed only the commands the project sends (below) on keys under
# the queue prefix. A real job (producer --wait, a worker, the mock API) completes once as the
# default user with the password (REDIS_URL=redis://:pw@...) and once as the ACL user in db 3
# (redis://user:pw@.../3, through REDIS_URL_FILE), with nothing denied in Redis's ACL LOG; a wrong
# password fails with a clear error that does not hold it; the ACL user is refused a command
# outside its rules and a key outside the prefix, directly and from a script.
. "$(dirname "$0")/lib.sh"
REDIS_SERVER=${REDIS_SERVER:-redis-server}

# Every command the project sends (grep fc_redis_cmd / fc_redis_command / fc_redis_pipeline in
# common/, worker/, producer/, and redis.call in the limiter's script), and SELECT for a db:
#   limiter (common/fc_limiter.c): EVALSHA, EVAL; in its script TIME, GET, SET (keys in KEYS)
#   worker: MGET, SET (cache, breaker, registration), PTTL (breaker), HSET, HINCRBY, HSETNX, HDEL, EXPIRE
#   (outcome records, in MULTI/EXEC), HEXISTS (cancelled jobs), ZADD, ZREM, ZREMRANGEBYSCORE (registration)
#   producer: HMGET, HSET, HSETNX, EXPIRE, GET, SETBIT, ZADD (job record), HLEN, HGETALL, HVALS, HEXISTS (--wait)
# AUTH needs no permission. With REDIS_SENTINELS the client also sends ROLE (+role).
FC_COMMANDS="+evalsha +eval +time +get +set +mget +pttl +hset +hincrby +expire +hmget +setbit +hlen +hgetall +hvals
    +hdel +hsetnx +hexists +zadd +zrem +zrange +zremrangebyscore +multi +exec
    +select"

N=60
ADMIN_PW="adm-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
FC_PW="acl-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
FC_USER=fcworker
RPORT=$(free_port) || fail "no free port"
mkdir -p "$TMP/redis"
"$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save '' --appendonly no \
    --requirepass "$ADMIN_PW" --logfile "$TMP/redis-server.log" &
PIDS+=("$!")
# admin ARGS: redis-cli as the default user (the password through the environment, not argv).
admin() { REDISCLI_AUTH=$ADMIN_PW redis-cli --no-auth-warning -p "$RPORT" "$@"; }
# as_user ARGS: redis-cli as the ACL user.
as_user() { REDISCLI_AUTH=$FC_PW redis-cli --no-auth-warning --user "$FC_USER" -p "$RPORT" "$@"; }
wait_until 10 eval 'admin ping 2>/dev/null | grep -q PONG' || fail "redis-server did not start"
# shellcheck disable=SC2086 # one rule per word
[ "$(admin ACL SETUSER "$FC_USER" reset on ">$FC_PW" "~$QUEUE_PREFIX:*" resetchannels -@all $FC_COMMANDS)" = OK ] ||
    fail "ACL SETUSER refused"
log "redis on $RPORT: requirepass, user $FC_USER: $(admin ACL LIST | grep "user $FC_USER" | sed 's/#[0-9a-f]*/#…/')"

start_mock --latency-ms 5
export API_KEY=sk-acl WORKER_COUNT=4 RATE_LIMIT=6000 BATCH_SIZE=10 CACHE_TTL=1h RETRY_DELAYS=200ms

# run_job NAME CSV [PRODUCER ARGS...]: a worker and a producer --wait with the REDIS_URL / REDIS_URL_FILE
# exported; the job must complete with every item once in the output and nothing left queued.
run_job() {
    local name=$1 csv=$2 rc=0
    shift 2
    start_worker "$name"
    local wpid=$LAST_PID
    wait_until 20 grep -q consuming "$TMP/worker-$name.log" || fail "worker $name did not start"
    timeout 90 "$PRODUCER" "$csv" --job-id "acl-$name-$$" --wait --timeout 60s --output "$TMP/out-$name.tsv" "$@" \
        >"$TMP/producer-$name.log" 2>&1 || rc=$?
    [ $rc = 0 ] || fail "producer ($name) exit $rc"
    assert_all_succeeded "$N" "$TMP/out-$name.tsv" "items dead-lettered in the $name run"
    kill -TERM "$wpid"
    wait "$wpid" || fail "worker $name exit $? after SIGTERM"
}

# 1. The default user with requirepass: redis://:pw@host:port/0 in the environment.
make_csv $N "$TMP/items1.csv"
export REDIS_URL="redis://:$ADMIN_PW@127.0.0.1:$RPORT/0"
run_job password "$TMP/items1.csv"
[ "$(admin -n 0 --scan --pattern "$QUEUE_PREFIX:job:*" | wc -l)" -ge 3 ] || fail "no job record in db 0"
admin ACL LOG RESET >/dev/null

# 2. The ACL user in db 3, the URL in a file (other terms: the cache misses, so MGET and SET run).
sed 's/단어/낱말/' "$TMP/items1.csv" >"$TMP/items2.csv"
unset REDIS_URL
printf 'redis://%s:%s@127.0.0.1:%s/3\n' "$FC_USER" "$FC_PW" "$RPORT" >"$TMP/redis-url"
chmod 600 "$TMP/redis-url"
export REDIS_URL_FILE=$TMP/redis-url
# With a budget (checked and settled in the limiter's script) and 429s without Retry-After (the adapted
# rate's cuts), then a --resume (the script that takes back what a budget stopped): every path's commands.
mock_control '{"fail_429_bare":0.1}'
run_job acl "$TMP/items2.csv" --budget-tokens 100000000 --budget-usd 1000 --priority 7
mock_control '{"fail_429_bare":0}'
timeout 30 "$PRODUCER" "$TMP/items2.csv" --job-id "acl-acl-$$" --resume >"$TMP/producer-resume.log" 2>&1 ||
    fail "--resume as the ACL user exit $?: $(tail -3 "$TMP/producer-resume.log")"
[ "$(admin -n 3 hget "$QUEUE_PREFIX:job:{acl-acl-$$}:budget" tokens)" -gt 0 ] || fail "no spend recorded in db 3"
grep -q "throttled (429)" "$TMP/worker-acl.log" || fail "the ACL run saw no 429: the adapted rate's cut was not exercised"
denied=$(admin ACL LOG 100)
[ -z "$denied" ] || fail "Redis denied the ACL user something: $(echo "$denied" | tr '\n' ' ' | head -c 600)"
[ "$(admin -n 3 --scan --pattern "$QUEUE_PREFIX:job:{acl-acl-$$}:*" | wc -l)" -ge 3 ] || fail "no job record in db 3"
[ "$(admin -n 3 --scan --pattern "$QUEUE_PREFIX:cache:*" | wc -l)" -ge $N ] || fail "no cached answers in db 3"
[ "$(admin -n 3 --scan --pattern "$QUEUE_PREFIX:rl:*" | wc -l)" -ge 1 ] || fail "no rate-limit bucket in db 3"
! grep -qi "unavailable\|NOPERM" "$TMP"/worker-acl.log || fail "the worker lost Redis as the ACL user"
unset REDIS_URL_FILE

# 3. A wrong password: the producer stops with exit 3 and a clear error without the password.
WRONG="wrong-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
for url in "redis://$FC_USER:$WRONG@127.0.0.1:$RPORT/3" "redis://:$WRONG@127.0.0.1:$RPORT/0"; do
    rc=0
    out=$(REDIS_URL=$url timeout 30 "$PRODUCER" "$TMP/items1.csv" --job-id "acl-wrong-$$" 2>&1) || rc=$?
    [ $rc = 3 ] || fail "wrong password: producer exit $rc, want 3: $out"
    echo "$out" | grep -q "AUTH failed: WRONGPASS" || fail "wrong password: unclear error: $out"
    ! echo "$out" | grep -qF "$WRONG" || fail "the wrong password is echoed: $out"
    echo "$out" >>"$TMP/wrong-password.log"
done
log "wrong password: $(head -1 "$TMP/wrong-password.log")"

# 4. The ACL user is refused what is outside its rules, directly and from a script.
[ "$(as_user SET "$QUEUE_PREFIX:probe" 1)" = OK ] || fail "the ACL user cannot write under its prefix"
refused() { # refused WANT ARGS...: the ACL user's command is answered with an error holding WANT
    local want=$1 out
    shift
    out=$(as_user "$@" 2>&1)
    echo "$out" | grep -q "$want" || fail "'$*' as $FC_USER answered '$out', want '$want'"
}
refused "NOPERM this user has no permissions to run the 'flushall' command" FLUSHALL
refused "NOPERM this user has no permissions to run the 'config|get' command" CONFIG GET requirepass
refused "NOPERM this user has no permissions to run the 'keys' command" KEYS '*'
refused "NOPERM this user has no permissions to run the 'del' command" DEL "$QUEUE_PREFIX:probe"
refused "NOPERM this user has no permissions to access one of the keys" SET "other-$QUEUE_PREFIX:x" 1
refused "NOPERM this user has no permissions to access one of the keys" GET "flashcard:rl:{openrouter}:calls"
refused "can't run this command" EVAL "return redis.call('FLUSHDB')" 0
refused "NOPERM this user has no permissions to access one of the keys" EVAL "return redis.call('GET', KEYS[1])" 1 "other:x"
refused "can't access at least one of the keys" EVAL "return redis.call('GET', 'other:x')" 0
out=$(REDISCLI_AUTH=$WRONG redis-cli --no-auth-warning --user "$FC_USER" -p "$RPORT" PING 2>&1 || true)
echo "$out" | grep -q WRONGPASS || fail "a wrong password was accepted: $out"

# No password in any log or output.
for f in "$TMP"/*.log "$TMP"/out-*.tsv; do
    ! grep -qF -e "$ADMIN_PW" -e "$FC_PW" -e "$WRONG" "$f" || fail "a password appears in $(basename "$f")"
done
log "ok: $N items as the default user with a password, $N as ACL user $FC_USER in db 3, nothing denied;" \
    "wrong passwords refused without echo; commands and keys outside the rules refused"
