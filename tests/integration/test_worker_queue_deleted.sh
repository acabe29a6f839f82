#!/usr/bin/env bash
# The work queue deleted under running workers (what the README tells operators to do to change
# DELIVERY_LIMIT): the broker cancels every consumer of P.batches with a basic.cancel. The workers
# must survive it, declare the topology again and consume again: a job run afterwards completes
# with the same two worker processes, every item once, and P.batches has one consumer per worker.
. "$(dirname "$0")/lib.sh"

N=200
cp "$SRC/tests/data/vocabulary_200.csv" "$TMP/items.csv"
start_mock --latency-ms 5
export API_KEY=sk-qdel WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=20

# consumers: the channels consuming $QUEUE_PREFIX.batches, from the node's consumer registry
# (list_queues' consumer count of a quorum queue re-created under the same name can read 0 for
# a moment while the deleted queue's figures are cleared).
consumers() {
    local out
    out=$($SUDO rabbitmqctl list_consumers -q --no-table-headers queue_name channel_pid 2>/dev/null) || return 1
    awk -v q="$QUEUE_PREFIX.batches" '$1 == q { print $2 }' <<<"$out" | sort -u | wc -l
}
two_consumers() { [ "$(consumers)" = 2 ]; }
alive() { kill -0 "$W1" 2>/dev/null && kill -0 "$W2" 2>/dev/null; }

start_worker 1
W1=$LAST_PID
start_worker 2
W2=$LAST_PID
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
wait_until 15 two_consumers || fail "P.batches has $(consumers) consumers before the deletion, want 2"

mgmt -X DELETE "$MGMT/queues/%2F/$QUEUE_PREFIX.batches" >/dev/null || fail "could not delete P.batches"
log "deleted $QUEUE_PREFIX.batches"
for i in 1 2; do
    wait_until 10 grep -q "cancelled the consumer" "$TMP/worker-$i.log" || fail "worker $i did not see the basic.cancel"
done
# A worker that dies of the cancel does so at once; give a broken one a moment to show it.
sleep 1
alive || fail "a worker died after the work queue was deleted (worker 1 alive: $(kill -0 "$W1" 2>/dev/null &&
    echo yes || echo no), worker 2: $(kill -0 "$W2" 2>/dev/null && echo yes || echo no))"
# They declare the queue again and consume it, before any producer declares it.
wait_until 15 two_consumers || fail "P.batches has $(consumers) consumers after the deletion, want 2 (one per worker)"

prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "qdel-$$" --wait --timeout 45s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc after the work queue was deleted and re-declared"
assert_all_succeeded $N "$TMP/out.tsv" "dead letters in a clean run"
[ "$(jq .items_succeeded "$TMP/report.json")" = $N ] || fail "report: items_succeeded $(jq .items_succeeded "$TMP/report.json")"

# The same processes did the work (none restarted), and both took part.
alive || fail "a worker died during the job"
[ "$(cut -d' ' -f5 "$TMP/mock-requests.log" | sort -u | wc -l)" = 2 ] || fail "expected calls from 2 workers"
wait_until 10 two_consumers || fail "P.batches has $(consumers) consumers after the job, want 2"
log "ok: both workers survived the deletion of $QUEUE_PREFIX.batches, consumed again and finished the job"
