#!/usr/bin/env bash
# A 429 storm with a Retry-After longer than the breaker's cooldown opens the workers' circuit
# breakers (one failure opens one; the fleet shares the open state through Redis) while the fleet
# is paused. When a breaker's cooldown ends its probe is due, but the pause and then the rate
# limiter hold it back: the fleet's probes get slots a fraction of a second
# apart after the pause, the first one is answered 429 again, and the others find the fleet
# paused when their slot comes. A probe that could not be made must not leave its breaker
# half-open for good (the worker would keep consuming, say it is ready, hold each batch to
# HOLD_LIMIT and continue it, and nothing would progress): once the API recovers, the job
# finishes, every item once and none dead-lettered. HOLD_LIMIT stays long (5m), so a worker
# stuck that way shows as a job that does not finish.
. "$(dirname "$0")/lib.sh"

N=20
NW=3           # workers
STORM_S=6      # the API answers 429 to everything for this long after the first 429
RETRY_AFTER=3  # seconds
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --fail-all-status 429 --retry-after $RETRY_AFTER
# 4 calls/s with a burst of 1: after a pause the fleet's calls get slots 250 ms apart.
export API_KEY=sk-breaker429 WORKER_COUNT=2 RATE_LIMIT=240 RATE_BURST=1 BATCH_SIZE=2 BREAKER_FAILURES=1 \
    BREAKER_COOLDOWN=1s HOLD_LIMIT=5m RETRY_DELAYS=500ms MAX_ATTEMPTS=20 CACHE_TTL=0
WPIDS=()
for i in $(seq 1 $NW); do
    start_worker "$i"
    WPIDS+=("$LAST_PID")
done
for i in $(seq 1 $NW); do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

JOB=brk429-$$
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout 45s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
PIDS+=("$PRODUCER_PID")
stats() { curl -fsS "http://127.0.0.1:$MOCK_PORT/stats"; }
answered_429() { [ "$(stats | jq '.by_status["429"] // 0')" -ge "$1" ]; }
# The storm is timed from the first 429 (publishing may be delayed by the broker).
wait_until 30 answered_429 1 || fail "no call reached the API"
t0=$SECONDS
wait_until 10 grep -q "circuit breaker opened" "$TMP"/worker-*.log || fail "the breaker never opened under the 429 storm"
# Keep the storm up past the first pause, so that the probes after it are answered 429 too.
sleep_left=$((t0 + STORM_S - SECONDS))
[ $sleep_left -gt 0 ] && sleep $sleep_left
s429=$(stats | jq '.by_status["429"] // 0')
[ "$s429" -ge 2 ] || fail "only $s429 answers of 429 during the storm: no probe fell inside it"
mock_control '{"fail_all_status":0}'
recovered_at=$(mock_answered)
log "API recovered $((SECONDS - t0)) s after the first 429, after $s429 answers of 429"

prc=0
wait "$PRODUCER_PID" || prc=$?
took=$((SECONDS - t0))  # since the first 429
# idle_workers: the workers that made no call after the API recovered (a stuck breaker's).
idle_workers() {
    for p in "${WPIDS[@]}"; do
        tail -n +$((recovered_at + 1)) "$TMP/mock-requests.log" | grep -q ":$p)" || echo -n "$p "
    done
}
[ $prc = 0 ] || fail "producer exit $prc, $took s after the first 429: the job did not finish after the API recovered" \
    "($(redis-cli hlen "$QUEUE_PREFIX:job:{$JOB}:outcome") of $N items done; mock: $(stats | jq -c .by_status);" \
    "workers with no call since: $(idle_workers))"
assert_all_succeeded $N "$TMP/out.tsv" "items dead-lettered: the storm should only have delayed them"
[ "$(jq .items_succeeded "$TMP/report.json")" = $N ] || fail "report: items_succeeded $(jq .items_succeeded "$TMP/report.json")"
for p in "${WPIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail "worker $p died"; done
log "ok: $s429 answers of 429, the job finished $took s after the first"
