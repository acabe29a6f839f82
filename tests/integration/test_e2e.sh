#!/usr/bin/env bash
# Walking skeleton end to end: 500 items, 2 worker processes, the mock API: every item has
# exactly one result, the queues end empty, and the workers' /metrics add up to what happened.
. "$(dirname "$0")/lib.sh"

make_csv 500 "$TMP/items.csv"
start_mock --latency-ms 5
export API_KEY=sk-e2e-secret WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=50
P1=$(free_port) P2=$(free_port)
METRICS_PORT=$P1 start_worker 1
METRICS_PORT=$P2 start_worker 2
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
[ "$(cut -d' ' -f5 "$TMP/mock-requests.log" | sort -u | wc -l)" = 2 ] || fail "expected calls from 2 workers"
! grep -rq "sk-e2e-secret" "$TMP"/*.log || fail "the API key appeared in a log"
# The metrics: counters summed over both workers match the job; gauges are in range.
curl -fsS "http://127.0.0.1:$P1/metrics" >"$TMP/m1.txt" && curl -fsS "http://127.0.0.1:$P2/metrics" >"$TMP/m2.txt" ||
    fail "no /metrics"
# metric NAME [LABELS]: the sum over both workers of the series NAME (with exactly LABELS, e.g. {stage="1"}),
# or of every series of NAME when no labels are given.
metric() {
    awk -v n="flashcard_$1" -v l="${2:-}" '{ split($1, p, "{") } (l == "" && p[1] == n) || $1 == n l {s += $2}
        END {print s + 0}' "$TMP/m1.txt" "$TMP/m2.txt"
}
[ "$(metric items_succeeded_total)" = 500 ] || fail "metrics: items_succeeded_total $(metric items_succeeded_total)"
[ "$(metric api_calls_total)" = 1000 ] || fail "metrics: api_calls_total $(metric api_calls_total)"
for s in 1 2; do
    [ "$(metric api_calls_total "{stage=\"$s\",status=\"2xx\"}")" = 500 ] || fail "metrics: stage $s calls not all 2xx"
    [ "$(metric api_call_duration_seconds_count "{stage=\"$s\"}")" = 500 ] || fail "metrics: stage $s latency count"
    [ "$(metric api_call_duration_seconds_bucket "{stage=\"$s\",le=\"+Inf\"}")" = 500 ] || fail "metrics: +Inf bucket"
done
[ "$(metric items_retried_total)" = 0 ] || fail "metrics: items_retried_total $(metric items_retried_total)"
[ "$(metric items_dead_total)" = 0 ] || fail "metrics: items_dead_total $(metric items_dead_total)"
[ "$(metric rate_limit_wait_seconds_count)" = 1000 ] || fail "metrics: every granted call is in the wait histogram"
[ "$(metric batches_acked_total)" = 10 ] || fail "metrics: batches_acked_total $(metric batches_acked_total)"
[ "$(metric ready)" = 2 ] || fail "metrics: ready $(metric ready)"
[ "$(metric calls_capacity)" = 16 ] || fail "metrics: calls_capacity $(metric calls_capacity)"
awk '$1 == "flashcard_worker_utilization" && !($2 > 0 && $2 <= 1) {bad = 1}
     $1 == "flashcard_tasks_per_second" && !($2 > 0) {bad = 1} END {exit bad}' "$TMP/m1.txt" "$TMP/m2.txt" ||
    fail "metrics: utilization or tasks/s out of range"
for q in batches crashed dead results.unrouted retry.5s; do
    grep -Eq "^flashcard_queue_ready_messages\{queue=\"$q\"\} [0-9]+$" "$TMP/m1.txt" || fail "metrics: no depth of $q"
done
grep -q '^flashcard_build_info{version="[0-9.]*",queue_prefix="'"$QUEUE_PREFIX"'",api=".*"} 1$' "$TMP/m1.txt" ||
    fail "metrics: no build info"
awk '$1 == "process_resident_memory_bytes" && $2 > 1e6 {r = 1} $1 == "process_cpu_seconds_total" && $2 > 0 {c = 1}
     END {exit !(r && c)}' "$TMP/m1.txt" || fail "metrics: no process_* metrics"
if command -v promtool >/dev/null; then
    promtool check metrics <"$TMP/m1.txt" >"$TMP/promtool.log" 2>&1 || { cat "$TMP/promtool.log" >&2; fail "promtool check metrics"; }
fi
! grep -q "^flashcard_rate_limit_usage" "$TMP/m1.txt" || fail "metrics: rate-limit usage without a limit"
log "ok"
