#!/usr/bin/env bash
# Broker restart in the middle of a run: the test's own RabbitMQ node (rabbit_nodes.sh, beside the
# machine's broker, never touching it) is stopped gracefully and started again with its data, as a
# service restart or an upgrade does. The workers lose their connection, drop what they held (the
# broker redelivers it), reconnect by themselves with backoff and finish the job. Nothing is lost
# and the output has each item once.
#
# How completion is observed: the producer's --wait does not survive losing the broker (it
# exits 3), so the job is published without --wait, progress is read from the job's Redis
# outcome record (written by a worker only after the broker confirmed the item's outcome
# messages), and the results are then collected by a second producer run with
# --resume --wait: every batch is confirmed already, so it publishes nothing and reads the
# durable results queue. Results of batches redone after the restart may be in that queue
# twice; the producer keeps one per position.
# Run time: about 40 s (two boots of the node, 12 s of work).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

t0=$SECONDS
rn_start n1
N=400
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 120 # about 12 s of work: the broker stops well before the end
export API_KEY=sk-restart WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=25
JOB=restart-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"
rn_await n1
rn_checks_on n1
export AMQP_URL
AMQP_URL=$(rn_url n1)
log "node n1 up in $((SECONDS - t0)) s"

start_worker 1
W1=$LAST_PID
start_worker 2
W2=$LAST_PID
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"

wait_until 60 answered_at_least 120 || fail "the workers never got going"

rn_stop n1
done_at_stop=$(redis-cli hlen "$OUTCOME")
log "broker stopped after $(mock_answered) calls, $done_at_stop items done"
[ "$done_at_stop" -lt $N ] || fail "the job finished before the restart: nothing tested"
t_down=$SECONDS
rn_restart n1
rn_await n1
log "broker back after $((SECONDS - t_down)) s down"

for i in 1 2; do
    wait_until 60 grep -q "reconnected to the broker" "$TMP/worker-$i.log" || fail "worker $i did not reconnect"
done
kill -0 $W1 && kill -0 $W2 || fail "a worker exited"
all_done() { [ "$(redis-cli hlen "$OUTCOME")" = $N ]; }
wait_until 60 all_done || fail "the job did not finish: $(redis-cli hlen "$OUTCOME") of $N"
# The quorum work queue's figures lag a few seconds.
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
