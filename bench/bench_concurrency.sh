#!/usr/bin/env bash
# Concurrency per process (issue 13, scenario 1): ONE worker holding WORKER_COUNT calls in flight
# against the mock API at 2 s latency, no rate limit, no cache. Scenarios:
#   c1024  WORKER_COUNT=1024: the bound is 1024 / 2 s = 512 calls/s
#   c4096  WORKER_COUNT=4096: the bound is 2,048 calls/s
# Each scenario first measures the mock's own ceiling in the same run: h2load (HTTP/1.1, the same
# number of connections, one request at a time on each, the same body) against a fresh mock. Then
# one worker and a producer --wait job of 10 x WORKER_COUNT items (about 40 s at the bound).
# Prints a table, then one JSON line per scenario ({"scenario":ID,"figures":...}); the last line is
# the last scenario's.
# Usage: bench/bench_concurrency.sh [c1024|c4096]...   (default both)
#   FC_BUILD_DIR   the CMake build dir (default ./build)
#   BENCH_QUICK=1  3 x WORKER_COUNT items (about 12 s at the bound) and a shorter load-generator run
#   BENCH_PERF     a path prefix: perf-record the worker to PREFIX.ID
# Every measurement holds /tmp/fc-bench.lock (flock) unless FC_BENCH_LOCK_HELD is set (by a caller that
# holds it already). Needs h2load (Debian: nghttp2-client).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
. "$SRC/tests/integration/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
TICK=$(getconf CLK_TCK)
LATENCY_MS=2000
SCENARIOS=${*:-c1024 c4096}
ROWS=()
JSONS=()
command -v h2load >/dev/null || fail "h2load not found (apt-get install nghttp2-client)"

export API_KEY=sk-bench LOG_LEVEL=warn CACHE_TTL=0 RETRY_DELAYS=1s RATE_LIMIT=0

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }
mock_stat() { curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq ".$1"; }

# lock / unlock: hold the shared benchmark lock around a measurement.
lock() { [ -n "${FC_BENCH_LOCK_HELD:-}" ] || { exec 9>/tmp/fc-bench.lock && flock 9; }; }
unlock() { [ -n "${FC_BENCH_LOCK_HELD:-}" ] || flock -u 9; }

stop_mock() {
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
}

# The worker refuses a WORKER_COUNT its hard open-files limit cannot hold, and says how to fix it.
check_fd_message() {
    local out rc=0
    out=$(WORKER_COUNT=4096 prlimit --nofile=1024:1024 "$WORKER" 2>&1) || rc=$?
    [ "$rc" = 2 ] || fail "WORKER_COUNT=4096 under a hard limit of 1024: exit $rc, expected 2 ($out)"
    grep -q "WORKER_COUNT=4096 needs .* hard limit RLIMIT_NOFILE is 1024" <<<"$out" || fail "unclear message: $out"
    log "fd-limit check: $out"
}

# loadgen ID N: the mock's ceiling with h2load holding N connections; sets LG_CPS, LG_MAXCONN, LG_MOCK_CPU_K.
loadgen() {
    local id=$1 n=$2 per=${BENCH_QUICK:+3}
    per=${per:-8}
    local total=$((n * per))
    printf '{"model":"m","messages":[{"role":"user","content":"{\\"term\\":\\"단어7\\",\\"position\\":7,\\"type\\":\\"noun\\"}"}]}' \
        >"$TMP/body.json"
    rm -f "$TMP/mock-requests.log"
    start_mock --latency-ms "$LATENCY_MS"
    local t0
    t0=$(cpu_ticks "$MOCK_PID")
    timeout 300 h2load --h1 -c "$n" -t 2 -n "$total" -d "$TMP/body.json" -H 'content-type: application/json' \
        "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" >"$TMP/h2load-$id.log" 2>&1 || fail "h2load failed"
    LG_MOCK_CPU_K=$(calc %.3f "($(cpu_ticks "$MOCK_PID") - $t0) / $TICK / $total * 1000")
    LG_MAXCONN=$(mock_stat connections_max)
    stop_mock
    LG_CPS=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$TMP/h2load-$id.log")
    local ok
    ok=$(awk '/^requests:/ {print $8}' "$TMP/h2load-$id.log")
    [ "$ok" = "$total" ] || fail "h2load: $ok of $total requests succeeded ($(grep -m1 '^requests:' "$TMP/h2load-$id.log"))"
}

# scenario ID N: one worker with WORKER_COUNT=N; appends a table row and a JSON line.
scenario() {
    local id=$1 n=$2 items
    items=$((n * 10))
    [ -z "${BENCH_QUICK:-}" ] || items=$((n * 3))
    lock
    loadgen "$id" "$n"
    export WORKER_COUNT=$n
    rm -f "$TMP/mock-requests.log"
    start_mock --latency-ms "$LATENCY_MS"
    LOG_LEVEL=info start_worker "$id" # "consuming" is an info line
    local wpid=$LAST_PID
    wait_until 60 grep -q consuming "$TMP/worker-$id.log" || fail "$id: the worker did not start"
    make_csv "$items" "$TMP/$id.csv"
    local cpu0 mock0 perf_pid=""
    cpu0=$(cpu_ticks "$wpid")
    mock0=$(cpu_ticks "$MOCK_PID")
    if [ -n "${BENCH_PERF:-}" ]; then
        perf record -q -F 499 -g -p "$wpid" -o "$BENCH_PERF.$id" 2>"$TMP/perf-$id.log" &
        perf_pid=$!
    fi
    timeout 900 "$PRODUCER" "$TMP/$id.csv" --job-id "bench-$id-$$" --wait --timeout 800s --output "$TMP/$id.tsv" \
        --report "$TMP/$id.report.json" >"$TMP/producer-$id.log" 2>&1 || fail "$id: producer exit $?"
    local ticks mock_ticks hwm maxconn
    ticks=$(($(cpu_ticks "$wpid") - cpu0))
    mock_ticks=$(($(cpu_ticks "$MOCK_PID") - mock0))
    hwm=$(hwm_kb "$wpid")
    maxconn=$(mock_stat connections_max)
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
    kill -TERM "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    stop_mock
    unlock

    local L=$TMP/mock-requests.log t0 t1 calls ok
    read -r t0 t1 calls < <("$MOCKLOG" span "$L")
    ok=$(jq .items_succeeded "$TMP/$id.report.json")
    local secs cps steady bound ratio cpu_k rss_mb mock_k
    secs=$(calc %.2f "($t1 - $t0) / 1000")
    cps=$(calc %.0f "$calls / $secs")
    steady=$("$MOCKLOG" steadyrate "$L" $((t0 + 2 * LATENCY_MS)) $((t1 - LATENCY_MS)))
    bound=$((n * 1000 / LATENCY_MS))
    ratio=$(calc %.3f "$cps / $bound")
    cpu_k=$(calc %.4f "$ticks / $TICK / $calls * 1000")
    rss_mb=$(calc %.1f "$hwm / 1024")
    mock_k=$(calc %.3f "$mock_ticks / $TICK / $calls * 1000")
    local met_ratio met_rss met_cpu met_ok
    met_ratio=$(calc %d "($ratio >= 0.90)")
    met_rss=$(calc %d "($rss_mb < 64)")
    met_cpu=$(calc %d "($cpu_k < 0.10)")
    met_ok=$([ "$ok" = "$items" ] && echo 1 || echo 0)
    [ "$met_ok" = 1 ] || log "$id: WARNING only $ok of $items items succeeded"
    ROWS+=("$(printf '%-6s %5d %6d %6d %6.2f %7d %7.0f %6d %6.3f %8.4f %7.1f %7.3f %6d %8.0f %6.3f %6d' "$id" "$n" "$items" \
        "$calls" "$secs" "$cps" "$steady" "$bound" "$ratio" "$cpu_k" "$rss_mb" "$mock_k" "$maxconn" "$LG_CPS" \
        "$(calc %.3f "$cps / $LG_CPS")" "$LG_MAXCONN")")
    JSONS+=("$(jq -cn --arg id "$id" --argjson n "$n" --argjson items "$items" --argjson ok "$ok" \
        --argjson calls "$calls" --argjson secs "$secs" --argjson cps "$cps" --argjson steady "$steady" \
        --argjson bound "$bound" --argjson cpu "$cpu_k" --argjson rss "$rss_mb" --argjson mock "$mock_k" \
        --argjson maxconn "$maxconn" --argjson lg "$LG_CPS" --argjson lgconn "$LG_MAXCONN" \
        --argjson lgmock "$LG_MOCK_CPU_K" \
        --argjson mr "$met_ratio" --argjson mm "$met_rss" --argjson mc "$met_cpu" --argjson mo "$met_ok" '
        {scenario: $id,
         figures: {worker_count: $n, items: $items, items_succeeded: $ok, calls: $calls, seconds: $secs,
                   calls_per_s: $cps, steady_calls_per_s: $steady, worker_cpu_s_per_1k_calls: $cpu,
                   worker_rss_mb: $rss, mock_cpu_s_per_1k_calls: $mock, mock_max_connections: $maxconn,
                   loadgen_mock_max_connections: $lgconn, loadgen_mock_cpu_s_per_1k_calls: $lgmock},
         ceilings: {bound_calls_per_s: $bound, mock_loadgen_calls_per_s: $lg},
         ratios: {calls_per_s: ($cps / $bound), calls_per_s_vs_loadgen: ($cps / $lg),
                  loadgen_vs_bound: ($lg / $bound)},
         targets: {calls_per_s_ratio_min: 0.90, worker_rss_mb_max: 64, worker_cpu_s_per_1k_calls_max: 0.10},
         met: {calls_per_s: ($mr == 1), worker_rss_mb: ($mm == 1), worker_cpu_s_per_1k_calls: ($mc == 1),
               all_items_succeeded: ($mo == 1)}}')")
    log "$id done: $calls calls in ${secs}s ($cps/s, bound $bound)"
}

check_fd_message
for s in $SCENARIOS; do
    case $s in
    c1024) scenario c1024 1024 ;;
    c4096) scenario c4096 4096 ;;
    *) fail "unknown scenario $s (c1024, c4096)" ;;
    esac
done

echo
echo "flashcard-worker concurrency: one worker, mock latency ${LATENCY_MS} ms, no rate limit, CACHE_TTL=0, $(nproc) CPUs"
printf '%-6s %5s %6s %6s %6s %7s %7s %6s %6s %8s %7s %7s %6s %8s %6s %6s\n' \
    sc wc items calls secs calls/s steady bound /bound cpu/1kc rss_mb mock/k mconn lg_c/s /lg lgconn
for r in "${ROWS[@]}"; do echo "$r"; done
echo "(wc: WORKER_COUNT; calls/s: calls over the span of their arrivals at the mock; steady: the same from"
echo " 2 x latency after the first arrival to one latency before the last; bound: wc / latency; cpu/1kc: worker"
echo " CPU s per 1,000 calls; rss_mb: worker VmHWM; mock/k: mock CPU s per 1,000 calls; mconn: most connections"
echo " the mock held at once; lg_c/s: h2load's calls/s against a fresh mock holding wc connections (its ceiling);"
echo " /lg: calls/s over lg_c/s; lgconn: connections the mock held under h2load. Targets: /bound >= 0.90,"
echo " rss_mb < 64 at 4,096, cpu/1kc < 0.10.)"
for j in "${JSONS[@]}"; do echo "$j"; done
