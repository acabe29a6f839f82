#!/usr/bin/env bash
# Walking skeleton end to end: 500 items, 2 worker processes, the mock API: every item has
# exactly one result and the queues end empty.
. "$(dirname "$0")/lib.sh"

make_csv 500 "$TMP/items.csv"
start_mock --latency-ms 5
export API_KEY=sk-e2e-secret WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=50
start_worker 1
start_worker 2
# Both must be consuming before the job starts, or one may do it all.
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id e2e-$$ --wait --timeout 90s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || fail "producer exit $?"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = 500 ] || fail "expected 500 items in the output, got $(wc -l <"$TMP/results.pos")"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = 1000 ] || fail "expected 2 cards per item"
assert_accounted 500 "$TMP/results.pos"
[ "$(jq .items_succeeded "$TMP/report.json")" = 500 ] || fail "report: items_succeeded"
[ "$(jq .api_calls "$TMP/report.json")" = 1000 ] || fail "report: api_calls $(jq .api_calls "$TMP/report.json")"
# Both workers took part, and the results queue of the job was removed after collection.
for i in 1 2; do grep -q "consuming" "$TMP/worker-$i.log" || fail "worker $i never consumed"; done
[ "$(cut -d' ' -f5 "$TMP/mock-requests.log" | sort -u | wc -l)" = 2 ] || fail "expected calls from 2 workers"
! grep -rq "sk-e2e-secret" "$TMP"/*.log || fail "the API key appeared in a log"
log "ok"
