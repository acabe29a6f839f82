#!/usr/bin/env bash
# A batch that kills every worker that takes it (here: kill -9 while it is held) does not crash the
# fleet forever: on its last allowed delivery (x-delivery-count = DELIVERY_LIMIT) the worker
# dead-letters it with the reason, records its items as failed, and --wait reports them (exit 1).
# Should that worker die too, the quorum queue's x-delivery-limit dead-letters it.
. "$(dirname "$0")/lib.sh"

N=10
JOB=dl-$$
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 20000
export API_KEY=sk-dl WORKER_COUNT=2 RATE_LIMIT=0 BATCH_SIZE=$N DELIVERY_LIMIT=2 API_TIMEOUT=30s
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer.log" 2>&1 || fail "publish failed"
# A worker holds the batch once it calls the API for it (the quorum queue's unacked figure lags).
for round in 1 2; do
    before=$(mock_requests)
    start_worker "$round"
    calling() { [ "$(mock_requests)" -gt "$before" ]; }
    wait_until 20 calling || fail "round $round: the worker never took the batch"
    kill -9 "$LAST_PID"
    wait "$LAST_PID" 2>/dev/null || true
    log "round $round: worker killed holding the batch"
done
calls_before=$(mock_requests)
start_worker 3
in_dead() { [ "$(queue_depth dead)" = 1 ]; }
wait_until 20 in_dead || fail "the batch was not dead-lettered on its last delivery (dead: $(queue_depth dead))"
grep -q "came back unsettled 2 times" "$TMP/worker-3.log" || fail "worker 3 did not say why"
[ "$(mock_requests)" = "$calls_before" ] || fail "worker 3 called the API for the batch"
dead_messages >"$TMP/dead.json"
[ "$(jq -r '.[0].properties.headers["x-error-class"]' "$TMP/dead.json")" = crashed ] || fail "x-error-class"
[ "$(jq -r '.[0].payload | fromjson | .items[0].error.class' "$TMP/dead.json")" = crashed ] || fail "item error"
# --wait sees the failed items at once and exits 1.
rc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 30s --report "$TMP/report.json" \
    >"$TMP/producer-wait.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "producer --wait exit $rc, want 1"
[ "$(jq .items_failed "$TMP/report.json")" = $N ] || fail "report: items_failed $(jq .items_failed "$TMP/report.json")"
[ "$(jq .timed_out "$TMP/report.json")" = false ] || fail "--wait timed out instead of seeing the failures"
: >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"
log "ok"
