#!/usr/bin/env bash
# Broker restart in the middle of a run (rabbitmqctl stop_app / start_app): the workers lose
# their connection, drop what they held (the broker redelivers it), reconnect by themselves
# with backoff and finish the job. Nothing is lost and the output has each item once.
#
# How completion is observed: the producer's --wait does not survive losing the broker (it
# exits 3), so the job is published without --wait, progress is read from the job's Redis
# outcome record (written by a worker only after the broker confirmed the item's outcome
# messages), and the results are then collected by a second producer run with
# --resume --wait: every batch is confirmed already, so it publishes nothing and reads the
# durable results queue. Results of batches redone after the restart may be in that queue
# twice; the producer keeps one per position.
#
# NOTE: this restarts the shared local RabbitMQ node for a few seconds.
. "$(dirname "$0")/lib.sh"

N=400
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 120 # about 12 s of work: the broker stops well before the end
export API_KEY=sk-restart WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=25
JOB=restart-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"

start_worker 1
W1=$LAST_PID
start_worker 2
W2=$LAST_PID
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"

wait_until 60 answered_at_least 120 || fail "the workers never got going"

restarted=0
restart_broker() {
    # Always bring the node back, even if this test fails half-way.
    [ $restarted = 1 ] && return 0
    $SUDO rabbitmqctl -q start_app >/dev/null 2>&1 || true
    timeout 60 $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    restarted=1
}
trap 'restart_broker; cleanup' EXIT
$SUDO rabbitmqctl -q stop_app >/dev/null 2>&1 || fail "rabbitmqctl stop_app failed"
done_at_stop=$(redis-cli hlen "$OUTCOME")
log "broker stopped after $(mock_answered) calls, $done_at_stop items done"
[ "$done_at_stop" -lt $N ] || fail "the job finished before the restart: nothing tested"
sleep 3
restart_broker
log "broker back"

for i in 1 2; do
    wait_until 60 grep -q "reconnected to the broker" "$TMP/worker-$i.log" || fail "worker $i did not reconnect"
done
kill -0 $W1 && kill -0 $W2 || fail "a worker exited"
all_done() { [ "$(redis-cli hlen "$OUTCOME")" = $N ]; }
wait_until 60 all_done || fail "the job did not finish: $(redis-cli hlen "$OUTCOME") of $N"
# The management API's queue figures lag up to 5 s (collect_statistics_interval).
work_drained() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_drained || fail "work queue not empty: $(queue_depth batches) messages"

prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 45s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"
[ "$(jq .batches_published "$TMP/report.json")" = 0 ] || fail "the --resume run published batches again"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = $((2 * N)) ] || fail "duplicate or missing cards in the output"
assert_accounted $N "$TMP/results.pos"
[ "$(queue_depth dead)" = 0 ] || fail "dead letters after a broker restart"
log "ok"
