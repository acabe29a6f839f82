#!/usr/bin/env bash
# flashcard-admin cancel: two jobs run at once on two workers (slow mock); job A is cancelled part-way.
# A's waiting producer ends with exit 1 within a few seconds; every item of A ends once, either ok (in
# the producer's output, or collected afterwards with `flashcard-admin results`) or failed with class
# cancelled (in A's failed record and in P.dead with x-error-class cancelled), and A's outcome record
# is complete. Job B completes untouched: exit 0, every item ok. Cancelling again says so (exit 0);
# cancelling a finished job or an unknown one exits 1. (A is published first, then B behind it.)
# Run time: about 10 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
NA=120
NB=80
A=cancel-a-$$
B=cancel-b-$$
make_csv $NA "$TMP/a.csv"
make_csv $NB "$TMP/b.csv"
export WORKER_COUNT=4 BATCH_SIZE=5 RATE_LIMIT=0
start_mock --latency-ms 250
start_worker w1
start_worker w2
for w in w1 w2; do wait_until 20 grep -q "consuming" "$TMP/worker-$w.log" || fail "worker $w did not start"; done
key() { echo "$QUEUE_PREFIX:job:{$1}:$2"; }

# A is published first, then B: B's batches wait behind A's, so B is surely unfinished when A is cancelled.
published() { [ "$(redis-cli hget "$(key "$1" meta)" published)" = 1 ]; }
"$PRODUCER" "$TMP/a.csv" --job-id $A --wait --timeout 80s --output "$TMP/a.tsv" >"$TMP/producer-a.log" 2>&1 &
PA=$!
PIDS+=("$PA")
wait_until 20 published $A || fail "A was not published"
"$PRODUCER" "$TMP/b.csv" --job-id $B --wait --timeout 80s --output "$TMP/b.tsv" >"$TMP/producer-b.log" 2>&1 &
PB=$!
PIDS+=("$PB")
wait_until 20 published $B || fail "B was not published"
started() { [ "$(redis-cli hlen "$(key $A outcome)")" -ge 10 ]; }
wait_until 30 started || fail "job A did not get going"
"$ADMIN" cancel $A >"$TMP/cancel.txt" || fail "cancel exit $?: $(cat "$TMP/cancel.txt")"
T0=$SECONDS
b_done=$(redis-cli hlen "$(key $B outcome)")
[ "$b_done" -lt $NB ] || fail "B had finished before A was cancelled: the jobs did not run at once"
grep -q "cancelled" "$TMP/cancel.txt" || fail "cancel said: $(cat "$TMP/cancel.txt")"
[ -n "$(redis-cli hget "$(key $A meta)" cancelled_ms)" ] || fail "no cancelled_ms in the job's meta"
exited() { ! kill -0 $PA 2>/dev/null; }
wait_until 10 exited || fail "A's producer still waits $((SECONDS - T0)) s after the cancel"
prc=0
wait $PA || prc=$?
[ $prc = 1 ] || fail "A's producer exit $prc, expected 1"
log "A's producer ended with exit 1, $((SECONDS - T0)) s after the cancel (B had $b_done of $NB outcomes then)"

prc=0
wait $PB || prc=$?
[ $prc = 0 ] || fail "B's producer exit $prc, expected 0"
tsv_positions "$TMP/b.tsv" >"$TMP/b.pos"
seq 1 $NB | diff -q - "$TMP/b.pos" >/dev/null || fail "B's output is not positions 1..$NB once each"
[ "$(tail -n +2 "$TMP/b.tsv" | wc -l)" = $((2 * NB)) ] || fail "B's output: not two cards per item"
[ "$(redis-cli hlen "$(key $B failed)")" = 0 ] || fail "items of B failed"

# Every item of A has one outcome; the failed ones are cancelled, and in P.dead as such.
complete() { [ "$(redis-cli hlen "$(key $A outcome)")" = $NA ]; }
wait_until 30 complete || fail "A's outcome record has $(redis-cli hlen "$(key $A outcome)") of $NA items"
failed=$(redis-cli hlen "$(key $A failed)")
okn=$(redis-cli hvals "$(key $A outcome)" | grep -c '^ok$' || true)
[ $((failed + okn)) = $NA ] || fail "A: $okn ok + $failed failed != $NA"
[ "$failed" -gt 0 ] || fail "nothing of A was cancelled"
[ "$(redis-cli hvals "$(key $A failed)" | jq -r .error.class | sort -u)" = cancelled ] ||
    fail "A's failed items are not all cancelled: $(redis-cli hvals "$(key $A failed)" | jq -r .error.class | sort | uniq -c)"
dead_messages >"$TMP/dead.json"
jq -e --arg a $A '[.[] | select(.properties.headers["x-error-class"] != "cancelled" or
    .properties.headers["x-job-id"] != $a)] | length == 0' "$TMP/dead.json" >/dev/null ||
    fail "dead letters not A's, or not cancelled: $(jq -c '[.[].properties.headers | [.["x-job-id"], .["x-error-class"]]]' "$TMP/dead.json")"
# The results of A's ok items: in its producer's output, and the rest still in A's results queue.
tsv_positions "$TMP/a.tsv" >"$TMP/a.pos"
"$ADMIN" results $A --output "$TMP/a-late.tsv" >"$TMP/late.txt" 2>&1 || [ $? = 1 ] || fail "results exit: $(cat "$TMP/late.txt")"
[ -f "$TMP/a-late.tsv" ] && tsv_positions "$TMP/a-late.tsv" >>"$TMP/a.pos"
[ "$(wc -l <"$TMP/a.pos")" = "$okn" ] || fail "A: $(wc -l <"$TMP/a.pos") results for $okn ok items"
assert_accounted $NA "$TMP/a.pos"
log "A: $okn ok ($(grep -c . "$TMP/a-late.tsv" 2>/dev/null || echo 0) lines collected late), $failed cancelled"

prc=0
"$ADMIN" cancel $A >"$TMP/again.txt" || prc=$?
[ $prc = 0 ] && grep -q "already cancelled" "$TMP/again.txt" || fail "cancelling again: exit $prc, $(cat "$TMP/again.txt")"
prc=0
"$ADMIN" cancel $B 2>"$TMP/finished.err" || prc=$?
[ $prc = 1 ] && grep -q "already finished" "$TMP/finished.err" || fail "cancelling a finished job: exit $prc, $(cat "$TMP/finished.err")"
prc=0
"$ADMIN" cancel nosuch-$$ 2>"$TMP/unknown.err" || prc=$?
[ $prc = 1 ] && grep -q "no job" "$TMP/unknown.err" || fail "cancelling an unknown job: exit $prc, $(cat "$TMP/unknown.err")"
log "ok: A cancelled (its producer ended 1, each item once), B untouched"
