#!/usr/bin/env bash
# One outcome message the broker refuses is published again alone: the delivery's other outcome
# messages (results, dead letters) stand, and nothing is processed twice. Here the retry delay
# queue is deleted while the worker processes a job whose items fail permanently (400) or
# retryably (500), so each batch's retry message comes back unroutable; the worker declares the
# topology again and publishes just that message again. The job then ends with every item exactly
# once in the output or among the dead letters, never both, none dead-lettered twice, and no item
# called more often than its attempts allow.
. "$(dirname "$0")/lib.sh"

N=40
MOD=7 # positions divisible by it are rejected with 400: dead at once
MAXA=2
make_csv $N "$TMP/items.csv"
# Slow answers at first, so that the retry queue is gone before the first batch settles.
start_mock --latency-ms 3000 --fail-500 0.15 --reject-mod $MOD --seed 7
export API_KEY=sk-refused WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=10 RETRY_DELAYS=1s MAX_ATTEMPTS=$MAXA \
    BREAKER_FAILURES=1000
JOB=refused-$$
start_worker 1
W1=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-1.log" || fail "worker did not start"
# Publishing declares the topology too: delete the retry queue after it.
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"
mgmt -X DELETE "$MGMT/queues/%2F/$QUEUE_PREFIX.retry.1s" >/dev/null || fail "could not delete the retry queue"
[ "$(queue_depth retry.1s)" = absent ] || fail "the retry queue is still there"
[ "$(mock_answered)" = 0 ] || fail "calls were answered before the retry queue was deleted: nothing tested"
mock_control '{"latency_ms":100}'
# A batch with a retryable failure settles: its retry message is unroutable.
wait_until 30 grep -q "broker refused" "$TMP/worker-1.log" || fail "no outcome message was refused"
log "refused: $(grep "broker refused" "$TMP/worker-1.log" | head -1 | cut -d' ' -f4-)"

# The job completes (waiting declares the topology again too, which is fine by now).
prc=0
timeout 70 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 45s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer-wait.log" 2>&1 || prc=$?
[ $prc = 1 ] || fail "producer exit $prc (expected 1: done, some items failed)"
[ "$(jq .timed_out "$TMP/report.json")" = false ] || fail "--wait timed out"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = $((2 * $(wc -l <"$TMP/results.pos"))) ] ||
    fail "duplicate or missing cards in the output"
# Exactly once in the results or the dead letters, never both, none dead-lettered twice.
assert_accounted $N "$TMP/results.pos"
[ "$(queue_depth retry.1s)" = 0 ] || fail "retry queue not empty: $(queue_depth retry.1s)"
[ "$(queue_depth results.unrouted)" = 0 ] || fail "unrouted results: $(queue_depth results.unrouted)"
dead_messages >"$TMP/dead.json"
# Each delivery dead-letters its items in one message: no two dead letters share a message id.
[ "$(jq -r '.[].properties.message_id' "$TMP/dead.json" | sort | uniq -d | wc -l)" = 0 ] ||
    fail "a dead letter was published twice: $(jq -r '.[].properties.message_id' "$TMP/dead.json" | sort | uniq -d | head -3)"
# The rejected items are dead as permanent failures; the report agrees with the queues.
jq -r '.[] | .payload | fromjson | .items[] | select(.error.class == "permanent") | .position' "$TMP/dead.json" |
    sort -n >"$TMP/permanent.pos"
seq $MOD $MOD $N | diff -q - "$TMP/permanent.pos" >/dev/null ||
    fail "permanent dead letters $(tr '\n' ' ' <"$TMP/permanent.pos") != multiples of $MOD"
[ "$(jq .items_failed "$TMP/report.json")" = "$(wc -l <"$TMP/dead.pos")" ] || fail "report: items_failed"
[ "$(jq .items_succeeded "$TMP/report.json")" = "$(wc -l <"$TMP/results.pos")" ] || fail "report: items_succeeded"
[ "$(jq -r '[.failed[].position] | sort | .[]' "$TMP/report.json")" = "$(cat "$TMP/dead.pos")" ] ||
    fail "report: failed items differ from the dead letters"
# Retried items came through the re-declared retry queue: some item answered 500 ended in the results.
awk '$2 == 500 {print $4}' "$TMP/mock-requests.log" | sort -nu >"$TMP/failed500.pos"
[ -s "$TMP/failed500.pos" ] || fail "the mock never answered 500: nothing was retried"
grep -qxFf "$TMP/failed500.pos" "$TMP/results.pos" || fail "no retried item succeeded"
# No item was called more often than its attempts allow (per stage; answers are cached).
over=$(awk '{print $3, $4}' "$TMP/mock-requests.log" | sort | uniq -c | awk -v m=$MAXA '$1 > m' | head -5)
[ -z "$over" ] || fail "items called more than $MAXA times (count stage position): $over"
kill -0 $W1 || fail "the worker exited"
kill -TERM $W1
wait $W1 || fail "worker exit $? after SIGTERM"
log "ok: $(wc -l <"$TMP/results.pos") results, $(wc -l <"$TMP/dead.pos") dead, $(wc -l <"$TMP/mock-requests.log") calls," \
    "$(grep -c "broker refused" "$TMP/worker-1.log") refusals"
