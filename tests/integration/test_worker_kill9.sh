#!/usr/bin/env bash
# Crash safety: a worker killed with SIGKILL in the middle of a batch loses nothing. The
# broker redelivers its unacked batches to a new worker; every item ends exactly once in the
# output (the producer drops duplicate results), and the queues end empty.
. "$(dirname "$0")/lib.sh"

N=400
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 50
export API_KEY=sk-kill9 WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=50
JOB=kill9-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"

start_worker 1
W1=$LAST_PID
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --wait --timeout 100s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")

# Kill the worker once it has finished a batch or so (100 calls each) and holds more, with
# calls in flight (WORKER_COUNT of them at any time while it works).
wait_until 60 answered_at_least 150 || fail "worker 1 never got going ($(mock_answered) calls)"
kill_ms=$(date +%s%3N) # before the kill: a call written just before it may be stamped a little later
kill -9 $W1
done_at_kill=$(redis-cli hlen "$OUTCOME")
calls_at_kill=$(mock_answered)
log "killed worker 1 after $calls_at_kill calls, $done_at_kill items recorded"
[ "$done_at_kill" -lt $N ] || fail "the job finished before the kill: nothing tested"
# The killed worker's deliveries go back to the queue, unacked -> ready.
wait_until 20 bash -c "[ \"\$(curl -fsS -u guest:guest $MGMT/queues/%2F/$QUEUE_PREFIX.batches |
    jq '.messages_unacknowledged')\" = 0 ]" || fail "the killed worker's deliveries stayed unacked"

start_worker 2
prc=0
wait $PROD || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = $N ] || fail "expected $N items in the output, got $(wc -l <"$TMP/results.pos")"
# No item twice in the output: exactly 2 cards per item.
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = $((2 * N)) ] || fail "duplicate or missing cards in the output"
# The management API's queue figures lag up to 5 s (collect_statistics_interval).
work_drained() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_drained || fail "work queue not empty: $(queue_depth batches) messages"
assert_accounted $N "$TMP/results.pos"
[ "$(queue_depth dead)" = 0 ] || fail "dead letters after a crash"
# The second worker did the rest: it made calls, and the work of the batch cut short was redone.
# (The mock logs a call when it answers, with its arrival time: select by arrival.)
ua2=$(awk -v t="$((kill_ms + 200))" '$1 > t {print $5}' "$TMP/mock-requests.log" | sort -u)
[ -n "$ua2" ] && ! grep -q ":$W1)" <<<"$ua2" || fail "calls after the kill came from the killed worker: $ua2"
# The calls the killed worker had in flight (never answered to it, so not cached) were made again.
redone=$(awk '{print $3, $4}' "$TMP/mock-requests.log" | sort | uniq -d | wc -l)
[ "$redone" -ge 1 ] || fail "no call of the killed worker was made again"
log "ok: $redone calls repeated after the crash"
