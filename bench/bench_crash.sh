#!/usr/bin/env bash
# Scenario 8 ("crash"): the cost of a crash. One worker with 64 calls in flight (WORKER_COUNT=64,
# mock latency 500 ms, the result cache on, no rate limit) is killed with SIGKILL once it has
# finished some batches; a second worker then finishes the job. Counted from the mock's request
# log: API calls repeated (the same stage and position answered twice) against the calls in
# flight at the kill (held by the mock at that moment: from its log, arrival <= kill < arrival +
# hold, and from its /stats just before and just after). Target: repeated <= in flight, i.e. the
# cache covers every call that had finished. Every item must still be in the output once.
# Prints a table, then one JSON line {"scenario":"crash",...} as its last line.
#   BENCH_QUICK=1   600 items instead of 2,000
#   CRASH_AFTER     calls answered before the kill (default: a third of the job's calls)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
. "$SRC/tests/integration/lib.sh"

ITEMS=$([ -n "${BENCH_QUICK:-}" ] && echo 600 || echo 2000)
BATCH=20
AFTER=${CRASH_AFTER:-$((ITEMS * 2 / 3))}
export API_KEY=sk-bench LOG_LEVEL=info CACHE_TTL=1h RATE_LIMIT=0 RETRY_DELAYS=1s WORKER_COUNT=64 BATCH_SIZE=$BATCH

in_flight() { curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq .in_flight; }

start_mock --latency-ms 500
start_worker victim
VICTIM=$LAST_PID
wait_until 30 grep -q consuming "$TMP/worker-victim.log" || fail "worker did not start"
make_csv "$ITEMS" "$TMP/crash.csv"
"$PRODUCER" "$TMP/crash.csv" --job-id "bench-crash-$$" --batch-size "$BATCH" --wait --timeout 600s \
    --output "$TMP/crash.tsv" --report "$TMP/crash.report.json" >"$TMP/producer.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")

# Kill once AFTER calls were answered (some batches finished: a batch of 20 is 40 calls), at a
# moment with the calls in flight at their most.
wait_until 300 answered_at_least "$AFTER" || fail "the worker answered only $(mock_answered) calls"
full() { [ "$(in_flight)" -ge 60 ]; }
wait_until 10 full || log "fewer than 60 calls in flight before the kill: $(in_flight)"
before=$(in_flight)
kill_ms=$(date +%s%3N)
kill -9 "$VICTIM"
after=$(in_flight)
wait "$VICTIM" 2>/dev/null || true
answered_at_kill=$(awk -v k="$kill_ms" '$1 + $6 <= k' "$TMP/mock-requests.log" | wc -l)
log "killed the worker at $kill_ms: in flight $before before, $after after"

start_worker rescuer
wait "$PROD" || fail "producer exit $? after the rescue"
assert_all_succeeded "$ITEMS" "$TMP/crash.tsv" "items dead-lettered after the crash"

L=$TMP/mock-requests.log
# Calls the mock held at the kill: arrived by then and answered after it.
held=$(awk -v k="$kill_ms" '$1 <= k && $1 + $6 > k' "$L" | wc -l)
calls=$(wc -l <"$L")
# Repeats: every answer of a (stage, position) beyond its first, and how many of them were for
# calls that had finished (answered) before the kill.
awk '{n[$3 " " $4]++} END {for (k in n) if (n[k] > 1) print k, n[k] - 1}' "$L" >"$TMP/repeats"
repeated=$(awk '{s += $3} END {print s + 0}' "$TMP/repeats")
# For those, "gap_ms" is how long before the kill the mock answered them: a few ms is the answer
# still on the wire or in the worker's turn (not yet read, or read but its cache write not sent).
awk -v k="$kill_ms" 'NR == FNR {r[$1 " " $2] = 1; next}
    ($3 " " $4) in r && $1 + $6 <= k {print $3, $4, k - $1 - $6}' "$TMP/repeats" "$L" >"$TMP/repeats.finished"
rep_finished=$(wc -l <"$TMP/repeats.finished")
gaps=$(awk '{print $3}' "$TMP/repeats.finished" | sort -n | tr '\n' ' ')
inflight=$held
[ "$after" -gt "$inflight" ] && inflight=$after

echo
echo "cost of a crash: WORKER_COUNT=$WORKER_COUNT, mock latency 500 ms, $ITEMS items, batches of $BATCH, kill -9 after $answered_at_kill answers"
printf '%-44s %8s\n' figure value
printf '%-44s %8s\n' "API calls in all" "$calls"
printf '%-44s %8s\n' "in flight at the kill (mock log)" "$held"
printf '%-44s %8s\n' "in flight (mock /stats just before, after)" "$before, $after"
printf '%-44s %8s\n' "calls repeated (same stage + position)" "$repeated"
printf '%-44s %8s\n' "  of them finished before the kill" "$rep_finished"
[ "$rep_finished" = 0 ] || printf '%-44s %8s\n' "  answered this many ms before the kill" "$gaps"
printf '%-44s %8s\n' "target: repeated <= in flight" "$inflight"
echo "(a finished call repeated means its answer was not in the cache when the worker died)"

jq -cn --argjson calls "$calls" --argjson held "$held" --argjson before "$before" --argjson after "$after" \
    --argjson rep "$repeated" --argjson repf "$rep_finished" --argjson infl "$inflight" \
    --argjson answered "$answered_at_kill" --argjson items "$ITEMS" '
    {scenario: "crash",
     figures: {repeated: $rep, repeated_finished_before_kill: $repf, calls: $calls, answered_at_kill: $answered,
               items: $items, in_flight_stats_before: $before, in_flight_stats_after: $after},
     ceilings: {in_flight_at_kill: $infl, in_flight_log: $held},
     ratios: {repeated: (if $infl > 0 then $rep / $infl else null end)},
     targets: {repeated: "<= in flight at the kill", repeated_finished_before_kill: "0"},
     met: {repeated: ($rep <= $infl), repeated_finished_before_kill: ($repf == 0)}}'
