#!/bin/bash
# Benchmarks fc_limiter_acquire (one EVALSHA round trip of the GCRA script) from 1 and 4
# processes against a redis-server started here on a free loopback port, beside redis-benchmark
# on the same server in the same run: EVALSHA of a trivial script ("return 1", one key) with 1
# and 4 clients, the same round trip without the limiter's work, as the ceiling.
# Prints a table, then one JSON line per scenario (ids limiter1, limiter4; bench/run.sh reads
# them): figures acquires_per_s, p50_us, p99_us; ceilings redis-benchmark's rps, p50, p99;
# ratios figure / ceiling (acquires: 1.0 = as fast as the trivial script; latencies: how many
# times the trivial script's); target p99 < 1 ms.
# Usage: bench/bench_limiter.sh [ACQUIRES_PER_PROC]   (default 20000, BENCH_QUICK=1: 5000;
# FC_BUILD_DIR: the CMake build dir)
set -euo pipefail

BUILD=${FC_BUILD_DIR:-$(dirname "$0")/../build}
BENCH="$BUILD/bench/bench-limiter"
[ -x "$BENCH" ] || { echo "bench-limiter not built under $BUILD" >&2; exit 1; }
if [ -n "${BENCH_QUICK:-}" ]; then N=${1:-5000}; else N=${1:-20000}; fi
TARGET_P99_US=1000
TMP=$(mktemp -d /tmp/fc-bench-limiter.XXXXXX)
REDIS_PID=""
cleanup() {
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    PORT=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
done
/usr/bin/redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP" --save '' --appendonly no \
    --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$PORT" ping >/dev/null || { echo "redis-server did not start on port $PORT" >&2; exit 1; }
SHA=$(redis-cli -p "$PORT" script load "return 1")

echo "== fc_limiter_acquire, $N acquires per process (redis $(redis-server --version | grep -o 'v=[0-9.]*'), $(nproc) CPUs)"

# field NAME FILE: the value of NAME=... in bench-limiter's line.
field() { grep -o "$1=[0-9.]*" "$2" | cut -d= -f2; }

# baseline CLIENTS: redis-benchmark's EVALSHA of the trivial script with CLIENTS connections,
# as many requests in all as the limiter made; prints "rps p50_us p99_us".
baseline() {
    redis-benchmark -p "$PORT" -c "$1" -n $(( N * $1 )) --csv EVALSHA "$SHA" 1 bench:key >"$TMP/rb$1.csv"
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    tail -1 "$TMP/rb$1.csv" | tr -d '"' | awk -F, '{ printf "%.0f %.1f %.1f\n", $2, $5 * 1000, $7 * 1000 }'
}

# scenario_json ID PROCS RATE P50 P99 RB_RATE RB_P50 RB_P99: the scenario's JSON line.
scenario_json() {
    jq -cn --arg id "$1" --argjson procs "$2" --argjson rate "$3" --argjson p50 "$4" --argjson p99 "$5" \
        --argjson rbrate "$6" --argjson rbp50 "$7" --argjson rbp99 "$8" --argjson target "$TARGET_P99_US" '
        {scenario: $id,
         figures: {acquires_per_s: $rate, p50_us: $p50, p99_us: $p99, processes: $procs},
         ceilings: {acquires_per_s: $rbrate, p50_us: $rbp50, p99_us: $rbp99},
         ratios: {acquires_per_s: ($rate / $rbrate),
                  p50_us: (if $rbp50 > 0 then $p50 / $rbp50 else null end),
                  p99_us: (if $rbp99 > 0 then $p99 / $rbp99 else null end)},
         targets: {p99_us: "< \($target)"},
         met: {p99_us: ($p99 < $target)}}'
}

ROWS=()
JSONS=()
STATUS=0
for procs in 1 4; do
    "$BENCH" "redis://127.0.0.1:$PORT" "$procs" "$N" >"$TMP/lim$procs.out"
    cat "$TMP/lim$procs.out"
    read -r rbrate rbp50 rbp99 < <(baseline "$procs")
    rate=$(field rate "$TMP/lim$procs.out") p50=$(field p50 "$TMP/lim$procs.out") p99=$(field p99 "$TMP/lim$procs.out")
    ROWS+=("$(awk -v p="$procs" -v r="$rate" -v a="$p50" -v b="$p99" -v R="$rbrate" -v A="$rbp50" -v B="$rbp99" \
        'BEGIN { printf "%5d %12.0f %9.1f %9.1f   %12.0f %9.1f %9.1f   %6.2f %6.2f\n", p, r, a, b, R, A, B, r / R,
                 (A > 0 ? a / A : 0) }')")
    JSONS+=("$(scenario_json "limiter$procs" "$procs" "$rate" "$p50" "$p99" "$rbrate" "$rbp50" "$rbp99")")
    awk -v b="$p99" -v t="$TARGET_P99_US" 'BEGIN { exit !(b < t) }' || STATUS=1
done

echo
echo "fc_limiter_acquire beside redis-benchmark (EVALSHA of 'return 1', same server, same run; latencies in µs)"
printf '%5s %12s %9s %9s   %12s %9s %9s   %6s %6s\n' procs acquires/s p50 p99 rb-rps rb-p50 rb-p99 rps÷rb p50÷rb
for r in "${ROWS[@]}"; do echo "$r"; done
echo "(rb: redis-benchmark with as many clients as processes; its latencies have a 1 µs resolution but include"
echo " its own event loop. Target: p99 < $TARGET_P99_US µs.)"
[ $STATUS = 0 ] && echo "== ok: p99 below $TARGET_P99_US µs" || echo "== p99 over $TARGET_P99_US µs (a figure, not a failure: see met)"
for j in "${JSONS[@]}"; do echo "$j"; done
exit 0
