#!/usr/bin/env bash
# The result cache: the 1,000-word dataset through 2 workers gives 1,000 items with cards; a
# second run of the same file (a new job) makes zero API calls at the mock, and its output
# equals the first run's.
. "$(dirname "$0")/lib.sh"

cp "$SRC/tests/data/vocabulary_1000.csv" "$TMP/items.csv"
start_mock --latency-ms 2
export API_KEY=sk-cache WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=100
start_worker 1
start_worker 2
run_job() {
    timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id "cache-$1-$$" --wait --timeout 60s \
        --output "$TMP/out-$1.tsv" --report "$TMP/report-$1.json" >"$TMP/producer-$1.log" 2>&1 ||
        fail "producer run $1 exit $?"
}
run_job 1
calls_first=$(wc -l <"$TMP/mock-requests.log")
[ "$calls_first" = 2000 ] || fail "first run: expected 2000 API calls, the mock saw $calls_first"
run_job 2
calls_second=$(($(wc -l <"$TMP/mock-requests.log") - calls_first))
[ "$calls_second" = 0 ] || fail "second run made $calls_second API calls, expected 0"
[ "$(jq .api_calls "$TMP/report-2.json")" = 0 ] || fail "report of run 2 counts API calls"
[ "$(jq .cache_hits "$TMP/report-2.json")" = 2000 ] || fail "report of run 2: cache_hits $(jq .cache_hits "$TMP/report-2.json")"
cmp -s "$TMP/out-1.tsv" "$TMP/out-2.tsv" || fail "cached output differs from the first run's"
tsv_positions "$TMP/out-2.tsv" >"$TMP/results.pos"
[ "$(tail -n +2 "$TMP/out-1.tsv" | wc -l)" = 2000 ] || fail "expected 2 cards for each of 1,000 items"
assert_accounted 1000 "$TMP/results.pos"
log "ok: 2000 calls, then 0"
