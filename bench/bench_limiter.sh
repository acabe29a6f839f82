#!/bin/bash
# Benchmarks fc_limiter_acquire (one EVALSHA round trip) from 1 and 4 processes against a
# redis-server started here on a free loopback port, beside redis-benchmark on the same server.
# Usage: bench/bench_limiter.sh [ACQUIRES_PER_PROC]   (FC_BUILD_DIR: the CMake build dir)
set -euo pipefail

BUILD=${FC_BUILD_DIR:-$(dirname "$0")/../build}
BENCH="$BUILD/bench/bench-limiter"
[ -x "$BENCH" ] || { echo "bench-limiter not built under $BUILD" >&2; exit 1; }
N=${1:-20000}
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

echo "== fc_limiter_acquire, $N acquires per process (redis $(redis-server --version | grep -o 'v=[0-9.]*'), $(nproc) CPUs)"
"$BENCH" "redis://127.0.0.1:$PORT" 1 "$N" | tee "$TMP/one.out"
"$BENCH" "redis://127.0.0.1:$PORT" 4 "$N" | tee "$TMP/four.out"
# -q still prints \r-separated progress: keep the final lines only.
echo "== redis-benchmark -q -n 100000 -t ping,incr (50 clients, same server)"
redis-benchmark -p "$PORT" -q -n 100000 -t ping,incr | tr '\r' '\n' | grep 'requests per second'
echo "== redis-benchmark -q -n 100000 -t ping,incr -c 1 (one client: compare with 1 process above)"
redis-benchmark -p "$PORT" -q -n 100000 -t ping,incr -c 1 | tr '\r' '\n' | grep 'requests per second' |
    tee "$TMP/rb1.out"
# The ceiling of one process is one round trip per acquire: PING with one client, same server.
rate() { grep -o 'rate=[0-9]*' "$1" | cut -d= -f2; }
ping1=$(awk '/PING_INLINE/ {print int($2)}' "$TMP/rb1.out")
echo "== ratio: 1 process $(rate "$TMP/one.out") acquires/s = $(awk -v a="$(rate "$TMP/one.out")" -v p="$ping1" \
    'BEGIN {printf "%.2f", a / p}') of one client's PING round trips ($ping1/s); 4 processes $(rate "$TMP/four.out")/s"
