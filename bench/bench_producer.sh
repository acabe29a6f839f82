#!/usr/bin/env bash
# Benchmarks flashcard-producer against the local RabbitMQ and Redis: a generated CSV (1,000,000
# rows by default, in /tmp) published from a file in batches of 100 and of 10, and from stdin
# with --batch-size auto; reports rows/s, confirmed messages/s and peak RSS, which must stay
# flat (below RSS_LIMIT_KB, default 20 MB) whatever the input size. Uses its own QUEUE_PREFIX
# and deletes its queues, exchanges and Redis keys at the end.
# Usage: bench/bench_producer.sh [ROWS]   (FC_BUILD_DIR: the CMake build dir)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
# Borrow the integration helpers: own queue prefix, temp dir, cleanup of processes and queues.
. "$SRC/tests/integration/lib.sh"
[ -x "$PRODUCER" ] || { echo "flashcard-producer not built under $BUILD" >&2; exit 1; }
ROWS=${1:-1000000}
RSS_LIMIT_KB=${RSS_LIMIT_KB:-20480}
export LOG_LEVEL=warn

# purge: empties the work queue between runs, so RabbitMQ does not hold millions of items.
purge() { mgmt -X DELETE "$MGMT/queues/%2F/$QUEUE_PREFIX.batches/contents" >/dev/null 2>&1 || true; }

# measure NAME CMD...: runs CMD (the producer) with stdout/stderr in $TMP/NAME.*; sets WALL (s) and
# PEAK_KB, the peak RSS: from /usr/bin/time -v (package time) when present, else the highest VmHWM
# read from /proc every 20 ms (a peak after the last sample would be missed, but VmHWM only grows).
measure() {
    local name=$1; shift
    local t0 t1 rc=0 hwm=0 v
    t0=$(date +%s%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v -o "$TMP/$name.time" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
        hwm=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$TMP/$name.time")
    else
        "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
        local pid=$!
        while kill -0 "$pid" 2>/dev/null; do
            v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
            sleep 0.02
        done
        wait "$pid" || rc=$?
    fi
    t1=$(date +%s%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    PEAK_KB=${hwm:-0}
    if [ $rc -ne 0 ]; then
        echo "FAIL: $name exited $rc" >&2
        tail -5 "$TMP/$name.err" >&2
        exit 1
    fi
}

STATUS=0
# row NAME ROWS MESSAGES: prints one result line and checks the RSS limit.
row() {
    local name=$1 rows=$2 msgs=$3 verdict=ok
    [ "$PEAK_KB" -gt 0 ] && [ "$PEAK_KB" -le "$RSS_LIMIT_KB" ] || { verdict="OVER ${RSS_LIMIT_KB} kB"; STATUS=1; }
    awk -v n="$name" -v r="$rows" -v m="$msgs" -v w="$WALL" -v k="$PEAK_KB" -v v="$verdict" \
        'BEGIN { printf "%-34s %9d rows %7d msgs %6.2f s %9.0f rows/s %8.0f msgs/s  peak RSS %6.1f MB  %s\n",
                 n, r, m, w, r / w, m / w, k / 1024, v }'
}

echo "== generating $ROWS rows in $TMP/bench.csv"
{
    echo "position,term,type,definition"
    seq 1 "$ROWS" | awk '{ printf "%d,단어%d,noun,\"meaning %d, with a comma\"\n", $1, $1, $1 }'
} >"$TMP/bench.csv"
echo "   $(du -h "$TMP/bench.csv" | cut -f1), $(nproc) CPUs, RabbitMQ $(mgmt "$MGMT/overview" | jq -r .rabbitmq_version)"

# report_of NAME: checks the run's report and prints its batches_published.
report_of() {
    local items
    items=$(jq .items_published "$TMP/$1.json")
    [ "$items" = "$ROWS" ] || { echo "FAIL: $1 published $items of $ROWS items" >&2; exit 1; }
    jq .batches_published "$TMP/$1.json"
}

# Small runs first: the peak RSS must not grow with the input.
head -n 10001 "$TMP/bench.csv" >"$TMP/small.csv"
measure small "$PRODUCER" "$TMP/small.csv" --job-id bench-small --batch-size 100 --report "$TMP/small.json"
SMALL_KB=$PEAK_KB
purge

measure file100 "$PRODUCER" "$TMP/bench.csv" --job-id bench-file100 --batch-size 100 --report "$TMP/file100.json"
b=$(report_of file100) # not inside row's arguments: report_of's exit must end the script
row "file, --batch-size 100" "$ROWS" "$b"
purge

measure file10 "$PRODUCER" "$TMP/bench.csv" --job-id bench-file10 --batch-size 10 --report "$TMP/file10.json"
b=$(report_of file10)
row "file, --batch-size 10" "$ROWS" "$b"
purge

measure stdin_auto "$PRODUCER" - --format csv --job-id bench-stdin --batch-size auto --report "$TMP/stdin_auto.json" \
    <"$TMP/bench.csv"
b=$(report_of stdin_auto)
row "stdin, --batch-size auto (RATE_LIMIT=${RATE_LIMIT:-60})" "$ROWS" "$b"
want=$(( ${RATE_LIMIT:-60} > 0 ? ${RATE_LIMIT:-60} / 2 : 100 ))
[ "$want" -ge 1 ] || want=1
[ "$want" -le 100 ] || want=100
[ "$b" = $(( (ROWS + want - 1) / want )) ] || { echo "FAIL: --batch-size auto: $b batches, want batches of $want" >&2; STATUS=1; }
purge

echo "   peak RSS of the 10,000-row run: $(awk -v k="$SMALL_KB" 'BEGIN { printf "%.1f MB", k / 1024 }')"
[ $STATUS = 0 ] && echo "== ok: peak RSS below $((RSS_LIMIT_KB / 1024)) MB in every run" || echo "== FAIL" >&2
exit $STATUS
