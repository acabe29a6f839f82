#!/usr/bin/env bash
# The circuit breaker: with the API answering 500 to everything, the breaker opens, the
# workers stop taking deliveries and nothing is dead-lettered; once the API recovers, a
# probe closes it and the job completes.
. "$(dirname "$0")/lib.sh"

make_csv 120 "$TMP/items.csv"
start_mock --fail-all-500
export API_KEY=sk-breaker WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=20 BREAKER_FAILURES=5 \
    BREAKER_COOLDOWN=1s RETRY_DELAYS=500ms MAX_ATTEMPTS=8 METRICS_PORT=0
start_worker 1
start_worker 2
"$PRODUCER" "$TMP/items.csv" --job-id "breaker-$$" --wait --timeout 60s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
PIDS+=("$PRODUCER_PID")
wait_until 20 grep -q "circuit breaker opened" "$TMP/worker-1.log" "$TMP/worker-2.log" ||
    fail "the breaker never opened"
sleep 3
calls_while_failing=$(wc -l <"$TMP/mock-requests.log")
# 120 items x 8 attempts could make 960 calls; an open breaker lets only probes through.
[ "$calls_while_failing" -lt 120 ] || fail "$calls_while_failing calls while the API was failing"
[ "$(queue_depth dead)" = 0 ] || fail "items were dead-lettered while the breaker was open"
mock_control '{"fail_all_500":false}'
wait "$PRODUCER_PID" || fail "producer exit $? after the API recovered"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_accounted 120 "$TMP/results.pos"
[ "$(wc -l <"$TMP/dead.pos")" = 0 ] || fail "dead letters after recovery"

# A worker holding nothing when the breaker opens (here: opened by the fleet's shared key, as
# when another worker tripped it) takes deliveries again once the cooldown ends, to probe.
stops() { grep -c "stopped taking deliveries (circuit breaker open)" "$TMP/worker-$1.log" || true; }
stops1=$(stops 1) stops2=$(stops 2)
redis-cli set "$QUEUE_PREFIX:breaker:{api}" 1 px 3000 >/dev/null
stopped() { [ "$(stops 1)" -gt "$stops1" ] && [ "$(stops 2)" -gt "$stops2" ]; }
wait_until 10 stopped || fail "the workers did not see the fleet's open breaker"
# New terms: the cache would answer the first job's.
{ echo "position,term,type"; seq 1 40 | awk '{printf "%d,probe%d,noun\n", $1, $1}'; } >"$TMP/items2.csv"
timeout 60 "$PRODUCER" "$TMP/items2.csv" --job-id "breaker2-$$" --wait --timeout 45s --output "$TMP/out2.tsv" \
    --report "$TMP/report2.json" >"$TMP/producer2.log" 2>&1 ||
    fail "second job: producer exit $? (a worker stayed blocked after the cooldown)"
[ "$(jq .api_calls "$TMP/report2.json")" = 80 ] || fail "second job: $(jq .api_calls "$TMP/report2.json") API calls, want 80"
tsv_positions "$TMP/out2.tsv" >"$TMP/results2.pos"
assert_accounted 40 "$TMP/results2.pos"
grep -q "taking deliveries to probe the API" "$TMP/worker-1.log" "$TMP/worker-2.log" || fail "no probe delivery logged"
log "ok: $calls_while_failing calls while failing, nothing dead-lettered; idle workers probe after the cooldown"
