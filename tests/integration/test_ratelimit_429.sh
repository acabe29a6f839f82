#!/usr/bin/env bash
# A 429 with Retry-After pauses the whole fleet: mid-run the mock answers one call with 429
# and Retry-After: 2; its request log must show no call from any process in the 2 s after
# the worker got that answer (calls already on the wire may still arrive a few ms later), the
# calls then resume within the limit, and the 429'd item completes through the retry queue.
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh

N=200
RATE=50        # RATE_LIMIT per second
PAUSE_MS=2000  # Retry-After: 2
# Calls reserved before the pause reached Redis may still arrive this late: the other worker
# re-reads the pause on its next completion or within 100 ms.
SLACK_MS=${FC_429_SLACK_MS:-150}

make_csv "$N" "$TMP/items.csv"
start_mock --latency-ms 20
export API_KEY=sk-429 WORKER_COUNT=8 RATE_LIMIT=$((RATE * 60)) RETRY_DELAYS=200ms CACHE_TTL=0 BATCH_SIZE=5
MPORT=$(free_port)
METRICS_PORT=$MPORT start_worker 1
start_worker 2
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id "rl429-$$" --wait --timeout 100s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
PIDS+=("$PRODUCER_PID")
wait_until 30 answered_at_least 100 || fail "the run did not reach 100 calls"
# The limit binds here (16 calls in flight against 50/s): the fleet's bucket reads as spent. A
# sample is an instant: one taken while a loaded machine held the fleet back sees the bucket
# refilling, so it is read again for up to 3 s (the run has 6 s left).
spent() {
    curl -fsS "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics.txt" || fail "no /metrics"
    awk '$1 == "flashcard_rate_limit_usage" {found = 1; if ($2 < 0.9) bad = 1} END {exit !found || bad}' "$TMP/metrics.txt"
}
wait_until 3 spent || fail "metrics: $(grep '^flashcard_rate_limit_usage' "$TMP/metrics.txt"), want >= 0.9"
grep -q "^flashcard_rate_limit_per_second $RATE.000$" "$TMP/metrics.txt" || fail "metrics: no fleet limit of $RATE/s"
mock_control '{"once_429":true,"retry_after":2}'
wait "$PRODUCER_PID" || fail "producer exit $?"
L=$TMP/mock-requests.log

# The 429, and when the worker had its answer (arrival + time the mock took to answer).
[ "$("$MOCKLOG" status "$L" 429 | wc -l)" = 1 ] || fail "expected exactly one 429, log has $("$MOCKLOG" status "$L" 429 | wc -l)"
read -r a429 e429 < <(awk '$2 == 429 {print $1, $6}' "$L")
answered=$((a429 + e429))
during=$("$MOCKLOG" count "$L" $((answered + SLACK_MS)) $((a429 + PAUSE_MS)))
if [ "$during" != 0 ]; then
    awk -v f=$((answered + SLACK_MS)) -v e=$((a429 + PAUSE_MS)) '$1 >= f && $1 < e' "$L" | sort -n | head -5 >&2
    fail "$during calls arrived in the pause [$((SLACK_MS + e429)) ms, $PAUSE_MS ms) after the 429"
fi
late=$("$MOCKLOG" count "$L" $((answered + 1)) $((answered + SLACK_MS)))
# The fleet resumes at the limit: some calls in the second after the pause, none above rate + burst.
after=$("$MOCKLOG" count "$L" $((answered + PAUSE_MS)) $((answered + PAUSE_MS + 1000)))
[ "$after" -ge $((RATE / 2)) ] || fail "only $after calls in the second after the pause"
read -r maxw at < <("$MOCKLOG" maxwin "$L" 1000 $((a429 + 1)))
[ "$maxw" -le $((2 * RATE + RATE / 10)) ] || fail "$maxw calls in the 1 s window from $at after the pause"

# The 429'd item was retried and completed: every item once, none dead.
pos429=$(awk '$2 == 429 {print $4}' "$L")
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = "$N" ] || fail "$(wc -l <"$TMP/results.pos") of $N items in the output"
grep -qx "$pos429" "$TMP/results.pos" || fail "item $pos429 (the 429'd one) has no result"
wait_until 15 eval '[ "$(queue_depth batches)" = 0 ]' || fail "work queue not empty"
assert_accounted "$N" "$TMP/results.pos"
grep -q "429" "$TMP"/worker-*.log || fail "no worker logged the 429"
log "ok: 429 at $a429 (answered after $e429 ms, item $pos429): $late calls within ${SLACK_MS} ms, 0 in the" \
    "rest of the pause, $after in the second after it, max 1 s window after it $maxw"
