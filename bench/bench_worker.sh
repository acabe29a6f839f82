#!/usr/bin/env bash
# Worker throughput benchmark against the mock API, on the local RabbitMQ and Redis
# (deploy/local/services.sh up). Runs scenarios and prints one table:
#   a  2 workers x 16 calls in flight, 5 ms API, no rate limit, no cache   (JSON id t2x16)
#   b  3 workers, same settings                                            (JSON id t3x16)
#   c  the fleet limit: 2 workers x 16, RATE_LIMIT=6000/min (100/s), default burst; the most
#      calls the mock saw in any 1 s window
#   s1, s2, s4  1, 2, 4 workers x SCALE_WC (256) at 50 ms: scaling until the cores are the limit
#      (JSON ids scale1, scale2, scale4; bench/bench_scaling.sh runs these)
# After the table, one JSON line per scenario with an id, {"scenario":ID,"figures":...}, the last
# lines of the output (bench/run.sh reads them).
# Usage: bench/bench_worker.sh [ITEMS]   (default 20000, BENCH_QUICK=1: 3000; each item is 2 calls)
#   FC_BUILD_DIR  the CMake build dir (default ./build)
#   BENCH_ONLY    e.g. "a c" to run some scenarios only (default "a b c"; BENCH_QUICK=1: "a b")
#   BENCH_PERF    a path prefix: perf-record the first worker of each scenario to PREFIX.NAME
#                 (perf report -i PREFIX.a --no-children; CPU figures then include perf's cost)
#   BENCH_KEEP    a directory: keep each scenario's mock request log there as NAME.requests
# See bench/README.md for what each figure means.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
# Borrow the integration helpers: own queue prefix, temp dir, cleanup of processes and queues.
. "$SRC/tests/integration/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
if [ -n "${BENCH_QUICK:-}" ]; then ITEMS=${1:-3000} ONLY=${BENCH_ONLY:-a b}
else ITEMS=${1:-20000} ONLY=${BENCH_ONLY:-a b c}; fi
TICK=$(getconf CLK_TCK)
SCALE_WC=${SCALE_WC:-256}
RESULTS=()
JSONS=()

export API_KEY=sk-bench LOG_LEVEL=warn CACHE_TTL=0 RETRY_DELAYS=1s WORKER_COUNT=16

# cpu_ticks PID: utime + stime of a live process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# hwm_kb PID: peak resident set (VmHWM), kB.
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# machine_ticks: "busy total" clock ticks of all CPUs since boot (/proc/stat).
machine_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# scenario NAME WORKERS RATE_LIMIT ITEMS [LATENCY_MS [WORKER_COUNT [ID]]]: one job; fills the
# globals the table uses, and a JSON line if ID is given.
scenario() {
    local name=$1 nw=$2 rl=$3 n=$4 latency=${5:-5} wc=${6:-16} id=${7:-} pids=() i
    export RATE_LIMIT=$rl WORKER_COUNT=$wc
    rm -f "$TMP/mock-requests.log"
    start_mock --latency-ms "$latency"
    for i in $(seq 1 "$nw"); do
        start_worker "$name-$i"
        pids+=("$LAST_PID")
    done
    sleep 0.5 # let the workers connect and declare the topology; their start-up CPU is not counted
    local -A cpu0
    for p in "${pids[@]}"; do cpu0[$p]=$(cpu_ticks "$p"); done
    make_csv "$n" "$TMP/$name.csv"
    local mock_cpu0 perf_pid="" m_busy0 m_all0 m_busy1 m_all1
    mock_cpu0=$(cpu_ticks "$MOCK_PID")
    read -r m_busy0 m_all0 < <(machine_ticks)
    local wall0 wall1
    wall0=$(date +%s%3N)
    if [ -n "${BENCH_PERF:-}" ]; then
        perf record -q -F 999 --call-graph dwarf,16384 -p "${pids[0]}" -o "$BENCH_PERF.$name" 2>"$TMP/perf-$name.log" &
        perf_pid=$!
    fi
    timeout 600 "$PRODUCER" "$TMP/$name.csv" --job-id "bench-$name-$$" --wait --timeout 540s \
        --output "$TMP/$name.tsv" --report "$TMP/$name.report.json" >"$TMP/producer-$name.log" 2>&1 ||
        fail "$name: producer exit $?"
    read -r m_busy1 m_all1 < <(machine_ticks)
    wall1=$(date +%s%3N)
    # Read the counters while the workers are still alive (idle now), then stop them.
    local ticks=0 hwm_max=0 hwm_sum=0 p h
    for p in "${pids[@]}"; do
        ticks=$((ticks + $(cpu_ticks "$p") - cpu0[$p]))
        h=$(hwm_kb "$p")
        hwm_sum=$((hwm_sum + h))
        [ "$h" -gt "$hwm_max" ] && hwm_max=$h
    done
    local mock_ticks=$(($(cpu_ticks "$MOCK_PID") - mock_cpu0))
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    mv "$TMP/mock-requests.log" "$TMP/$name.requests"
    [ -z "${BENCH_KEEP:-}" ] || cp "$TMP/$name.requests" "$BENCH_KEEP/"

    local L=$TMP/$name.requests t0 t1 calls
    read -r t0 t1 calls < <("$MOCKLOG" span "$L")
    local ok
    ok=$(jq .items_succeeded "$TMP/$name.report.json")
    [ "$ok" = "$n" ] || log "$name: WARNING only $ok of $n items succeeded"
    local secs cps ips cpu_per_k cpu_per_ki bound ratio maxw
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1000}')
    cps=$(awk -v c="$calls" -v s="$secs" 'BEGIN {printf "%.0f", c / s}')
    ips=$(awk -v c="$ok" -v s="$secs" 'BEGIN {printf "%.0f", c / s}')
    cpu_per_k=$(awk -v t="$ticks" -v k="$TICK" -v c="$calls" 'BEGIN {printf "%.3f", t / k / c * 1000}')
    cpu_per_ki=$(awk -v t="$ticks" -v k="$TICK" -v c="$ok" 'BEGIN {printf "%.3f", t / k / c * 1000}')
    bound=$((nw * wc * 1000 / latency))
    ratio=$(awk -v c="$cps" -v b="$bound" 'BEGIN {printf "%.2f", c / b}')
    read -r maxw _ < <("$MOCKLOG" maxwin "$L" 1000)
    local maxs
    read -r maxs _ < <("$MOCKLOG" maxwin "$L" 1000 $((t0 + 1500)))
    # Mean time the mock held a call, and mean calls held (Little's law over the span).
    local lat conc
    lat=$(awk '{s += $7} END {printf "%.2f", s / NR / 1000}' "$L")
    conc=$(awk -v l="$lat" -v c="$cps" 'BEGIN {printf "%.1f", l * c / 1000}')
    local limit="-"
    [ "$rl" -gt 0 ] && limit="$((rl / 60))/s (+burst $((rl / 60)))"
    # Machine CPU busy over the job (all processes, ours and anyone else's), and the cores our
    # workers and the mock used, over the same wall time (the producer's run).
    local busy wcores mcores wsecs
    busy=$(awk -v b=$((m_busy1 - m_busy0)) -v a=$((m_all1 - m_all0)) 'BEGIN {printf "%.2f", a ? b / a : 0}')
    wsecs=$(awk -v a="$wall0" -v b="$wall1" 'BEGIN {printf "%.3f", (b - a) / 1000}')
    wcores=$(awk -v t="$ticks" -v k="$TICK" -v s="$wsecs" 'BEGIN {printf "%.2f", t / k / s}')
    mcores=$(awk -v t="$mock_ticks" -v k="$TICK" -v s="$wsecs" 'BEGIN {printf "%.2f", t / k / s}')
    RESULTS+=("$(printf '%-2s %2d %3d %4d %-16s %6d %6.2f %7d %6d %6.2f %6.2f %6.1f %8.3f %8.3f %7.1f %7.1f %6.2f %6d %6d %5.2f %5.2f %5.2f' \
        "$name" "$nw" "$wc" "$latency" "$limit" "$calls" "$secs" "$cps" "$ips" "$ratio" "$lat" "$conc" "$cpu_per_k" "$cpu_per_ki" \
        "$(awk -v h="$hwm_max" 'BEGIN {print h / 1024}')" "$(awk -v h="$hwm_sum" -v n="$nw" 'BEGIN {print h / n / 1024}')" \
        "$(awk -v t="$mock_ticks" -v k="$TICK" -v c="$calls" 'BEGIN {printf "%.2f", t / k / c * 1000}')" "$maxw" "$maxs" \
        "$busy" "$wcores" "$mcores")")
    log "$name done: $calls calls in ${secs}s"
    [ -z "$id" ] || JSONS+=("$(scenario_json "$id" "$nw" "$wc" "$latency" "$calls" "$cps" "$bound" "$lat" "$cpu_per_k" \
        "$(awk -v h="$hwm_max" 'BEGIN {printf "%.1f", h / 1024}')" "$busy" "$wcores" "$mcores" "$ok" "$n")")
}

# scenario_json ID WORKERS WC LATENCY CALLS CALLS_S BOUND LAT CPU_1K RSS BUSY WCORES MCORES OK N:
# the scenario's JSON line. Ceilings: the concurrency bound (workers x WORKER_COUNT / latency)
# and the same over the hold time the mock measured in this run.
scenario_json() {
    jq -cn --arg id "$1" --argjson nw "$2" --argjson wc "$3" --argjson latency "$4" --argjson calls "$5" \
        --argjson cps "$6" --argjson bound "$7" --argjson lat "$8" --argjson cpuk "$9" --argjson rss "${10}" \
        --argjson busy "${11}" --argjson wcores "${12}" --argjson mcores "${13}" --argjson ok "${14}" --argjson n "${15}" '
        ($nw * $wc * 1000 / $lat) as $mbound |
        {scenario: $id,
         figures: {calls_per_s: $cps, cpu_s_per_1k_calls: $cpuk, rss_max_mb: $rss, calls: $calls, workers: $nw,
                   worker_count: $wc, latency_ms: $latency, mock_hold_ms: $lat, machine_busy: $busy,
                   worker_cores: $wcores, mock_cores: $mcores, items_succeeded: $ok, items: $n},
         ceilings: {bound_per_s: $bound, bound_at_measured_hold_per_s: ($mbound | floor), machine_cores: '"$(nproc)"'},
         ratios: {calls_per_s: ($cps / $bound), calls_per_s_vs_measured_hold: ($cps / $mbound),
                  machine_busy: $busy},
         targets: (if ($id | startswith("scale")) then {} else {calls_per_s: ">= 0.85", cpu_s_per_1k_calls: "< 0.10"} end),
         met: (if ($id | startswith("scale")) then {} else
               {calls_per_s: ($cps >= 0.85 * $bound), cpu_s_per_1k_calls: ($cpuk < 0.10), all_succeeded: ($ok == $n)} end)}'
}

for s in $ONLY; do
    case $s in
    a) scenario a 2 0 "$ITEMS" 5 16 t2x16 ;;
    b) scenario b 3 0 "$ITEMS" 5 16 t3x16 ;;
    c) scenario c 2 6000 600 ;;
    s1) scenario s1 1 0 "$ITEMS" 50 "$SCALE_WC" scale1 ;;
    s2) scenario s2 2 0 "$ITEMS" 50 "$SCALE_WC" scale2 ;;
    s4) scenario s4 4 0 "$ITEMS" 50 "$SCALE_WC" scale4 ;;
    *) fail "unknown scenario $s" ;;
    esac
done

echo
echo "flashcard-worker benchmark: CACHE_TTL=0, $(nproc) CPUs"
printf '%-2s %2s %3s %4s %-16s %6s %6s %7s %6s %6s %6s %6s %8s %8s %7s %7s %6s %6s %6s %5s %5s %5s\n' \
    sc wk wc lat limit calls secs calls/s items/s /bound hold conc cpu/1kc cpu/1ki rss_max rss_avg mock/k max1s max1s+ \
    busy wcore mcore
for r in "${RESULTS[@]}"; do echo "$r"; done
echo "(wc: WORKER_COUNT; lat: the mock's latency, ms; cpu/1kc, cpu/1ki: worker CPU seconds per 1,000 calls / items,"
echo " all processes; rss in MB (VmHWM); busy: the machine's CPU busy share over the job (all processes);"
echo " wcore, mcore: CPU cores the workers and the mock used;"
echo " /bound: calls/s over workers x WORKER_COUNT / lat; hold: mean ms the mock held a call; conc: mean calls"
echo " the mock held (lat x calls/s; the workers allow workers x WORKER_COUNT); mock/k: the mock's CPU s per 1,000 calls;"
echo " max1s: most calls at the mock in any 1 s window; max1s+: the same for windows starting 1.5 s after the"
echo " first call (the burst spent). Celery: ~1,850 calls/s, 0.84 CPU s/1k calls, 362 MB;"
echo " BullMQ: ~3,180 calls/s, 0.39, 151 MB.)"
for j in "${JSONS[@]}"; do echo "$j"; done
