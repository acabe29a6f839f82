#!/usr/bin/env bash
# flashcard-admin dead replay stopped between its publishes and its last marker write, then run again.
# A Redis of this test's own (the fleet and the producer use it too) has two ACL users with exactly the
# commands the README gives flashcard-admin, one of them without SET: the write that marks a replayed dead
# letter done. That user's replay therefore stops right after the broker confirmed the replacements and
# the remainders: the state a kill -9 at that instant leaves. A job of 20 items dies with two classes
# (odd positions retryable, even ones permanent: 4 dead letters), and the retryable items are replayed:
# 1. as the user without SET: exit 3, nothing acked; the workers process the replacements that went out.
# 2. as the full user, --reason retryable again: the 4 dead letters are finished without sending anything
#    again (their replacements reached the workers; a copy of each remainder is in P.dead already):
#    P.dead holds the 10 permanent items once each, every retryable item was called once, nothing in
#    Redis's ACL LOG.
# 3. everything replayed: P.dead empty, all 20 items ok once in the job's record and in `results`, each
#    item's API calls answered once (the result cache is off: a second send would show).
# Run time: about 15 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
export WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=1 CACHE_TTL=0 BREAKER_FAILURES=100000 BREAKER_COOLDOWN=500ms
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
rcli() { redis-cli -p "$RPORT" "$@"; }
wait_until 10 eval 'rcli ping 2>/dev/null | grep -q PONG' || fail "redis-server did not start"
export REDIS_URL="redis://127.0.0.1:$RPORT/0"
# The admin's commands, as the README's ACL line gives them.
ADMIN_CMDS="+ping +select +role +zrevrange +zrangebyscore +get +pttl +hgetall +hlen +hkeys +hmget +bitcount +hvals
    +hsetnx +hexists +type +hget +hset +hdel +expire +set +evalsha +eval"
PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
# (the commands go through stdin: the password stays out of any command line)
echo ACL SETUSER fc-admin reset on ">$PW" "~$QUEUE_PREFIX:*" resetchannels -@all $ADMIN_CMDS | rcli | grep -q OK ||
    fail "ACL SETUSER fc-admin"
echo ACL SETUSER fc-admin-noset reset on ">$PW" "~$QUEUE_PREFIX:*" resetchannels -@all ${ADMIN_CMDS/+set /} | rcli |
    grep -q OK || fail "ACL SETUSER fc-admin-noset"
admin_as() { local user=$1; shift; REDIS_URL="redis://$user:$PW@127.0.0.1:$RPORT/0" "$ADMIN" "$@"; }

start_mock --reject-mod 2 --fail-500 1
start_worker w1
wait_until 20 grep -q "consuming" "$TMP/worker-w1.log" || fail "worker did not start"
J=refused-$$
key() { echo "$QUEUE_PREFIX:job:{$J}:$1"; }
ok_count() { rcli hvals "$(key outcome)" | grep -c '^ok$' || true; }
dead_count() { dead_messages | jq length; }
make_csv 20 "$TMP/j.csv"
prc=0
timeout 90 "$PRODUCER" "$TMP/j.csv" --job-id $J --wait --timeout 80s --output "$TMP/j.tsv" >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 1 ] || fail "producer exit $prc, expected 1 (failed items)"
wait_until 15 count_is dead_count 4 || fail "expected 4 dead letters, got $(dead_count)"
mock_control '{"reject_mod":0,"fail_500":0}'
CALLS0=$(mock_answered)
rcli ACL LOG RESET >/dev/null

# ---- 1. stopped before the marker says done ---------------------------------------------------------
rc=0
admin_as fc-admin-noset dead replay --reason retryable >"$TMP/r1.out" 2>"$TMP/r1.err" || rc=$?
[ $rc = 3 ] || fail "replay without SET exit $rc, expected 3: $(cat "$TMP/r1.out" "$TMP/r1.err")"
grep -q "NOPERM" "$TMP/r1.err" || fail "the refused SET is not said: $(cat "$TMP/r1.err")"
wait_until 30 count_is ok_count 10 || fail "the replacements were not processed: $(ok_count) ok"
[ "$(rcli ACL LOG 100 | grep -c '^set$')" -ge 1 ] || fail "no SET refused in the ACL LOG"
rcli ACL LOG RESET >/dev/null
log "stopped with the replacements and remainders out: $(dead_count) messages in P.dead"

# ---- 2. run again: finished, nothing sent twice -------------------------------------------------------
admin_as fc-admin dead replay --reason retryable --json >"$TMP/r2.json" 2>"$TMP/r2.err" ||
    fail "second replay exit $?: $(cat "$TMP/r2.err")"
[ "$(jq -c '[.replayed_dead_letters, .finished_for_an_interrupted_run, .failed]' "$TMP/r2.json")" = "[4,4,0]" ] ||
    fail "second replay: $(jq -c . "$TMP/r2.json")"
[ -z "$(rcli ACL LOG 100)" ] || fail "the admin was refused a command: $(rcli ACL LOG 100 | tr '\n' ' ')"
dead_settled() { [ "$(dead_count)" = 4 ]; }
wait_until 10 dead_settled || fail "P.dead holds $(dead_count) messages, expected the 4 remainders"
[ "$(dead_positions | sort -n | tr '\n' ' ')" = "2 4 6 8 10 12 14 16 18 20 " ] ||
    fail "P.dead after the second replay: $(dead_positions | sort -n | tr '\n' ' ')"
[ "$(ok_count)" = 10 ] && [ "$(rcli hlen "$(key failed)")" = 10 ] ||
    fail "job after the second replay: $(ok_count) ok, $(rcli hlen "$(key failed)") failed"
log "run again: 4 interrupted dead letters finished, P.dead holds each permanent item once"

# ---- 3. everything replayed: each item once ------------------------------------------------------------
admin_as fc-admin dead replay >"$TMP/r3.out" 2>&1 || fail "third replay exit $?: $(cat "$TMP/r3.out")"
grep -q "replayed 10 items from 4 dead letters" "$TMP/r3.out" || fail "third replay: $(cat "$TMP/r3.out")"
all_ok() { [ "$(ok_count)" = 20 ] && [ "$(rcli hlen "$(key failed)")" = 0 ]; }
wait_until 30 all_ok || fail "job not all ok: $(ok_count) ok"
wait_until 10 count_is dead_count 0 || fail "P.dead not empty: $(dead_count)"
tail -n +$((CALLS0 + 1)) "$TMP/mock-requests.log" | awk '$2 == 200 {print $4}' | sort -n | uniq -c >"$TMP/calls.txt"
[ "$(wc -l <"$TMP/calls.txt")" = 20 ] || fail "$(wc -l <"$TMP/calls.txt") of 20 items were answered"
awk '$1 != 2' "$TMP/calls.txt" >"$TMP/twice.txt"
[ ! -s "$TMP/twice.txt" ] || fail "items not called exactly once each: $(head -5 "$TMP/twice.txt" | tr '\n' ' ')"
results_ready() { [ "$(queue_depth "results.$J")" -ge 8 ] 2>/dev/null; }
wait_until 15 results_ready || fail "late results: $(queue_depth "results.$J") messages"
admin_as fc-admin results $J --output "$TMP/late.tsv" >"$TMP/results.txt" || fail "results exit $?"
tsv_positions "$TMP/late.tsv" >"$TMP/late.pos"
seq 1 20 | diff -q - "$TMP/late.pos" >/dev/null || fail "late results are not positions 1..20 once each"
[ -z "$(rcli ACL LOG 100)" ] || fail "the admin was refused a command: $(rcli ACL LOG 100 | tr '\n' ' ')"
log "ok: a replay stopped after its publishes and run again sends nothing twice; P.dead ends empty"
