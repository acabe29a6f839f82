#!/usr/bin/env bash
# A batch that kills every worker that takes it (here: kill -9 while it is held) is stopped by the
# work queue's x-delivery-limit and dead-lettered at least once, with the broker's x-death reason,
# instead of crashing the fleet forever. Its items are then accounted for in the dead-letter queue.
. "$(dirname "$0")/lib.sh"

N=10
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 20000
export API_KEY=sk-dl WORKER_COUNT=2 RATE_LIMIT=0 BATCH_SIZE=$N DELIVERY_LIMIT=2 API_TIMEOUT=30s
"$PRODUCER" "$TMP/items.csv" --job-id "dl-$$" >"$TMP/producer.log" 2>&1 || fail "publish failed"
unacked() {
    [ "$(rabbitmqctl list_queues -q --no-table-headers name messages_unacknowledged 2>/dev/null |
        awk -v q="$QUEUE_PREFIX.batches" '$1 == q { print $2 }')" = 1 ]
}
# DELIVERY_LIMIT=2: the third delivery that comes back is dead-lettered.
for round in 1 2 3; do
    start_worker "$round"
    wait_until 20 unacked || fail "round $round: the worker never took the batch"
    kill -9 "$LAST_PID"
    wait "$LAST_PID" 2>/dev/null || true
    log "round $round: worker killed holding the batch"
done
in_dead() { [ "$(queue_depth dead)" = 1 ]; }
wait_until 20 in_dead || fail "the batch was not dead-lettered after 3 deliveries (dead: $(queue_depth dead))"
dead_messages >"$TMP/dead.json"
reason=$(jq -r '.[0].properties.headers["x-death"][0].reason' "$TMP/dead.json")
[ "$reason" = delivery_limit ] || fail "x-death reason '$reason', want delivery_limit"
: >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"
log "ok: dead-lettered with reason $reason"
