#!/usr/bin/env bash
# flashcard-admin dead replay against a broker that blocks publishers (a memory alarm, raised on a
# node of this test's own: rabbit_nodes.sh, beside the machine's broker, never touching it).
# A job's 8 dead letters are replayed at 2 a second while the alarm is on: the first publish is
# written (and the broker answers with connection.blocked), the others are not even taken on. The
# replay gives up after 30 s with exit 1, every dead letter still in P.dead and the job's records put
# back (the worker is stopped meanwhile). Once the alarm is off and the admin's connection gone (the
# broker may still route what it had buffered), a worker processes whatever went out, and a replay run
# again finishes the job: every item ok, each item's API calls answered once (no cache), P.dead empty.
# Run time: about 60 s (the node's boot, and the 30 s the replay waits).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

ADMIN=$BUILD/admin/flashcard-admin
t0=$SECONDS
rn_start n1
start_mock --reject-mod 1
rn_await n1
rn_checks_on n1
export AMQP_URL
AMQP_URL=$(rn_url n1)
export WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=1 CACHE_TTL=0 BREAKER_FAILURES=100000 BREAKER_COOLDOWN=500ms
log "node n1 up in $((SECONDS - t0)) s"
start_worker w1
W1=$LAST_PID
wait_until 20 grep -q "consuming" "$TMP/worker-w1.log" || fail "worker did not start"

J=blocked-$$
key() { echo "$QUEUE_PREFIX:job:{$J}:$1"; }
ok_count() { redis-cli hvals "$(key outcome)" | grep -c '^ok$' || true; }
records_are() { [ "$(redis-cli hlen "$(key outcome)")" = "$1" ] && [ "$(redis-cli hlen "$(key failed)")" = "$2" ] &&
    [ "$(ok_count)" = "$3" ]; }
dead_count() { "$ADMIN" dead list --json 2>/dev/null | jq '.dead_letters'; }
make_csv 40 "$TMP/j.csv"
prc=0
timeout 90 "$PRODUCER" "$TMP/j.csv" --job-id $J --wait --timeout 80s --output "$TMP/j.tsv" >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 1 ] || fail "producer exit $prc, expected 1 (failed items)"
wait_until 15 count_is dead_count 8 || fail "expected 8 dead letters, got $(dead_count)"
kill "$W1"
wait "$W1" 2>/dev/null || true
mock_control '{"reject_mod":0}'
CALLS0=$(mock_answered)

rn_ctl n1 set_vm_memory_high_watermark 0.0000001 >/dev/null || fail "cannot raise the memory alarm"
alarm_on() { ! rn_diag n1 check_alarms >/dev/null 2>&1; }
wait_until 20 alarm_on || fail "the memory alarm did not go on"
start=$SECONDS rc=0
timeout -s KILL 60 "$ADMIN" dead replay --rate 2 --json >"$TMP/r1.json" 2>"$TMP/r1.err" || rc=$?
took=$((SECONDS - start))
[ $rc = 1 ] || fail "replay while blocked exit $rc after $took s, expected 1: $(cat "$TMP/r1.err")"
[ $took -lt 45 ] || fail "replay while blocked took $took s"
grep -q "gave up" "$TMP/r1.err" || fail "the give-up is not said: $(cat "$TMP/r1.err")"
[ "$(jq '.failed + .not_attempted' "$TMP/r1.json")" = 8 ] && [ "$(jq .replayed_dead_letters "$TMP/r1.json")" = 0 ] ||
    fail "replay while blocked: $(jq -c . "$TMP/r1.json")"
records_are 40 40 0 || fail "records not put back: $(redis-cli hlen "$(key outcome)") outcomes, $(redis-cli hlen "$(key failed)") failed"
log "blocked: exit 1 after $took s ($(grep -o "flashcard-admin: .*gave up" "$TMP/r1.err")), records put back"

rn_ctl n1 set_vm_memory_high_watermark 0.4 >/dev/null || fail "cannot clear the memory alarm"
wait_until 20 eval '! alarm_on' || fail "the memory alarm did not go off"
admin_gone() { ! rn_clients n1 | grep -q "flashcard-admin"; }
wait_until 20 admin_gone || fail "the admin's connections are still open: $(rn_clients n1 | tr '\n' ' ')"
wait_until 20 count_is dead_count 8 || fail "dead letters lost: $(dead_count) left"
start_worker w2
wait_until 20 grep -q "consuming" "$TMP/worker-w2.log" || fail "worker 2 did not start"
settled() { [ "$(queue_depth batches)" = 0 ] && [ "$(redis-cli hlen "$(key outcome)")" = 40 ]; }
wait_until 20 settled || fail "P.batches $(queue_depth batches), $(redis-cli hlen "$(key outcome)") outcomes"
"$ADMIN" dead replay --json >"$TMP/r2.json" 2>"$TMP/r2.err" || fail "replay run again exit $?: $(cat "$TMP/r2.err")"
[ "$(jq -c '[.replayed_dead_letters, .failed]' "$TMP/r2.json")" = "[8,0]" ] || fail "replay run again: $(jq -c . "$TMP/r2.json")"
wait_until 30 records_are 40 0 40 || fail "job not all ok: $(ok_count) ok"
wait_until 15 count_is dead_count 0 || fail "P.dead not empty: $(dead_count)"
tail -n +$((CALLS0 + 1)) "$TMP/mock-requests.log" | awk '$2 == 200 {print $4}' | sort -n | uniq -c >"$TMP/calls.txt"
[ "$(wc -l <"$TMP/calls.txt")" = 40 ] || fail "$(wc -l <"$TMP/calls.txt") of 40 items were answered"
awk '$1 != 2' "$TMP/calls.txt" >"$TMP/twice.txt"
[ ! -s "$TMP/twice.txt" ] || fail "items not called exactly once each: $(head -5 "$TMP/twice.txt" | tr '\n' ' ')"
log "ok: a replay against a blocked broker ends, loses nothing, puts the records back; run again, each item once"
