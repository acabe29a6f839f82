#!/usr/bin/env bash
# Graceful stop: SIGTERM in the middle of a run, with API calls in flight that outlast
# SHUTDOWN_TIMEOUT. The worker stops taking deliveries, cancels the late calls at the deadline,
# hands its unfinished items back as continuation batches and exits 0 in time. Another worker
# finishes the job: nothing lost, and no item published twice (checked in the results queue
# itself, before the producer's deduplication).
. "$(dirname "$0")/lib.sh"

N=300
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 50
export API_KEY=sk-sigterm WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=25 SHUTDOWN_TIMEOUT=5s
JOB=sigterm-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"

start_worker 1
W1=$LAST_PID
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"

wait_until 60 answered_at_least 100 || fail "worker 1 never got going"
# From now on calls take 8 s: the ones in flight at SIGTERM outlive the 5 s shutdown timeout.
mock_control '{"latency_ms":8000}'
sleep 0.5
t0=$(date +%s%3N)
kill -TERM $W1
done_at_term=$(redis-cli hlen "$OUTCOME")
rc=0
timeout 15 tail -s 0.1 --pid=$W1 -f /dev/null || fail "worker 1 still running 15 s after SIGTERM"
wait $W1 || rc=$?
elapsed_ms=$(($(date +%s%3N) - t0))
log "worker 1 exited $rc after ${elapsed_ms} ms; $done_at_term items were done at SIGTERM"
[ $rc = 0 ] || fail "worker 1 exit $rc after SIGTERM"
# Calls are cut at 4 s, leaving 1 s to publish; 1 s more for a busy machine.
[ $elapsed_ms -le 6000 ] || fail "worker 1 took ${elapsed_ms} ms to stop (SHUTDOWN_TIMEOUT=5s)"
[ "$done_at_term" -lt $N ] || fail "the job finished before SIGTERM: nothing tested"
grep -q "shutting down" "$TMP/worker-1.log" || fail "no shutdown message"
grep -q "checkpointing" "$TMP/worker-1.log" || fail "the shutdown deadline did not cut the slow calls"
grep -q "stopped cleanly" "$TMP/worker-1.log" || fail "worker 1 did not stop cleanly"
# Nothing held unacked by a dead connection: every batch is back in the queue or done.
unacked() { [ "$(mgmt "$MGMT/queues/%2F/$QUEUE_PREFIX.batches" | jq '.messages_unacknowledged')" = 0 ]; }
wait_until 15 unacked || fail "deliveries still unacked after worker 1 exited"

mock_control '{"latency_ms":50}'
start_worker 2
all_done() { [ "$(redis-cli hlen "$OUTCOME")" = $N ]; }
wait_until 60 all_done || fail "the job did not finish: $(redis-cli hlen "$OUTCOME") of $N"
# The management API's queue figures lag up to 5 s (collect_statistics_interval).
results_in() { [ "$(queue_depth "results.$JOB")" -gt 0 ] && [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 results_in || fail "work queue not empty: $(queue_depth batches) messages"

# No item twice in the results queue (peeked, requeued).
mgmt -X POST -H 'content-type: application/json' -d '{"count":100000,"ackmode":"ack_requeue_true","encoding":"auto"}' \
    "$MGMT/queues/%2F/$QUEUE_PREFIX.results.$JOB/get" | jq -r '.[].payload | fromjson | .items[].position' |
    sort -n >"$TMP/queued.pos"
dups=$(uniq -d "$TMP/queued.pos" | head -5 | tr '\n' ' ')
[ -z "$dups" ] || fail "items published twice: $dups"

# Collect with the producer (resume: everything is published already).
prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 45s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = $((2 * N)) ] || fail "duplicate or missing cards in the output"
diff -q "$TMP/queued.pos" "$TMP/results.pos" >/dev/null || fail "the output differs from the results queue"
assert_accounted $N "$TMP/results.pos"
[ "$(queue_depth dead)" = 0 ] || fail "dead letters after a graceful stop"
log "ok"
