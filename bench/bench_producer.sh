#!/usr/bin/env bash
# Benchmarks flashcard-producer against the local RabbitMQ and Redis: a generated CSV (1,000,000
# rows by default, in /tmp) published from a file in batches of 100 and of 10, each followed by
# its ceiling measured in the same run: bench-publish-min (bench/publish_min.c), a minimal
# rabbitmq-c publisher that sends bodies of the same size (one of the producer's own batches,
# padded to their mean size) to a quorum queue with the work queue's arguments, persistent, with
# the producer's confirm window, and parses nothing. Reports rows/s, confirmed messages/s (and
# their ratio to the minimal publisher's) and peak RSS, which must stay flat (below RSS_LIMIT_KB,
# default 20 MB) whatever the input size. Uses its own QUEUE_PREFIX and deletes its queues,
# exchanges and Redis keys at the end.
# Prints a table, then one JSON line per scenario (ids producer100, producer10; bench/run.sh
# reads them): figures rows_per_s, msgs_per_s, peak_rss_mb; ceiling msgs_per_s; targets: ratio
# >= 0.85, peak RSS < 20 MB.
# Each size is measured PRODUCER_REPS times (default 3), producer and ceiling in turn, and the
# medians count.
# Usage: bench/bench_producer.sh [ROWS]   (FC_BUILD_DIR: the CMake build dir; BENCH_QUICK=1:
# 100,000 rows, one repetition and no stdin run)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
# Borrow the integration helpers: own queue prefix, temp dir, cleanup of processes and queues.
. "$SRC/tests/integration/lib.sh"
MIN=$BUILD/bench/bench-publish-min
[ -x "$PRODUCER" ] || { echo "flashcard-producer not built under $BUILD" >&2; exit 1; }
[ -x "$MIN" ] || { echo "bench-publish-min not built under $BUILD" >&2; exit 1; }
if [ -n "${BENCH_QUICK:-}" ]; then ROWS=${1:-100000}; else ROWS=${1:-1000000}; fi
RSS_LIMIT_KB=${RSS_LIMIT_KB:-20480}
TARGET_RATIO=0.85
export LOG_LEVEL=warn

# The producer publishes a job's batches to the job's own queue, $QUEUE_PREFIX.job.<job> (through the
# exchange $QUEUE_PREFIX.jobs, common/fc_jobs.h), as it does by default (FAIR_SHARE=1): the path a user's
# job takes. The minimal publisher also goes through an exchange to a quorum queue of its own.
job_queue() { echo "$QUEUE_PREFIX.job.$1"; }

# purge JOB: deletes JOB's queue (and empties the shared work queue, which a broker user without the
# permission to declare job queues would publish to), so RabbitMQ does not hold millions of items.
purge() {
    mgmt -X DELETE "$MGMT/queues/%2F/$(job_queue "$1")" >/dev/null 2>&1 || true
    mgmt -X DELETE "$MGMT/queues/%2F/$QUEUE_PREFIX.batches/contents" >/dev/null 2>&1 || true
}

# measure NAME CMD...: runs CMD with stdout/stderr in $TMP/NAME.*; sets WALL (s) and PEAK_KB, the
# peak RSS: from /usr/bin/time -v (package time) when present, else the highest VmHWM read from
# /proc every 20 ms (a peak after the last sample would be missed, but VmHWM only grows).
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
sync # its pages written now, not by the kernel's writeback during the first measurement
echo "   $(du -h "$TMP/bench.csv" | cut -f1), $(nproc) CPUs, RabbitMQ $(mgmt "$MGMT/overview" | jq -r .rabbitmq_version)"

# report_of NAME: checks the run's report and prints its batches_published.
report_of() {
    local items
    items=$(jq .items_published "$TMP/$1.json")
    [ "$items" = "$ROWS" ] || { echo "FAIL: $1 published $items of $ROWS items" >&2; exit 1; }
    jq .batches_published "$TMP/$1.json"
}

# batch_sample NAME BATCHES JOB: writes the first batch in JOB's queue (peeked, requeued) to
# $TMP/NAME.body and sets MEAN_BYTES to the mean body size of the queue's BATCHES messages as the
# management API counts them once its figures caught up (polled, at most ~30 s), else to that
# batch's size (then the ceiling's bodies are a little smaller than the producer's).
batch_sample() {
    local name=$1 want=$2 q="$MGMT/queues/%2F/$(job_queue "$3")" n=0 bytes=0
    mgmt -X POST -H 'content-type: application/json' -d '{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}' \
        "$q/get" | jq -j '.[0].payload' >"$TMP/$name.body"
    [ -s "$TMP/$name.body" ] || { echo "FAIL: no batch to sample in $(job_queue "$3")" >&2; exit 1; }
    MEAN_BYTES=$(stat -c %s "$TMP/$name.body")
    for _ in $(seq 1 60); do
        read -r n bytes < <(mgmt "$q?columns=messages,message_bytes" | jq -r '(if type == "array" then .[0] else . end) | "\(.messages // 0) \(.message_bytes // 0)"')
        # Its byte count can lag its message count: a mean below the first batch's size (the
        # smallest: its positions have the fewest digits) is not caught up yet.
        [ "$n" = "$want" ] && [ $((bytes / n)) -ge "$MEAN_BYTES" ] && { MEAN_BYTES=$((bytes / n)); return 0; }
        sleep 0.5
    done
    echo "   (the management API did not count all $want batches in time: bodies of ${MEAN_BYTES} bytes)"
}

# ceiling NAME MSGS: runs the minimal publisher with MSGS bodies like $TMP/NAME.body padded to
# MEAN_BYTES; sets MIN_RATE (msgs/s, from its connect to its last confirm).
ceiling() {
    local name=$1 msgs=$2
    measure "min$name" "$MIN" "$AMQP_URL" "$TMP/$name.body" "$msgs" "$MEAN_BYTES" "$QUEUE_PREFIX.min"
    MIN_RATE=$(grep -o 'rate=[0-9]*' "$TMP/min$name.out" | cut -d= -f2)
    printf '%-34s %9s      %7d msgs %6.2f s %16s %8d msgs/s  (%d-byte bodies)\n' "  minimal publisher (ceiling)" "" \
        "$msgs" "$WALL" "" "$MIN_RATE" "$MEAN_BYTES"
}

# scenario_json ID ROWS MSGS WALL PEAK_KB MIN_RATE BYTES: the scenario's JSON line.
scenario_json() {
    jq -cn --arg id "$1" --argjson rows "$2" --argjson msgs "$3" --argjson wall "$4" --argjson kb "$5" \
        --argjson min "$6" --argjson bytes "$7" --argjson target "$TARGET_RATIO" --argjson limit "$RSS_LIMIT_KB" '
        ($msgs / $wall) as $mps |
        {scenario: $id,
         figures: {rows_per_s: (($rows / $wall) | floor), msgs_per_s: ($mps | floor), peak_rss_mb: ($kb / 1024),
                   rows: $rows, msgs: $msgs, msg_bytes: $bytes},
         ceilings: {msgs_per_s: $min},
         ratios: {msgs_per_s: ($mps / $min)},
         targets: {msgs_per_s: ">= \($target)", peak_rss_mb: "< \($limit / 1024)"},
         met: {msgs_per_s: ($mps >= $target * $min), peak_rss_mb: ($kb > 0 and $kb <= $limit)}}'
}

JSONS=()
# Each size runs the producer and the ceiling REPS times, in turn (producer, ceiling, producer, ...), and
# takes the median of each: one run of either is about a second, and the broker's own background work (a
# quorum queue's log being written, a deleted queue being removed) moves single figures by a third.
REPS=${PRODUCER_REPS:-3}
[ -z "${BENCH_QUICK:-}" ] || REPS=${PRODUCER_REPS:-1}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# bench_size N: the producer in batches of N, then the minimal publisher with its batches' size, REPS times.
bench_size() {
    local n=$1 b peak=0 wall walls=() rates=() r job
    for r in $(seq 1 "$REPS"); do
        job="bench-file$n-$r"
        measure "file$n" "$PRODUCER" "$TMP/bench.csv" --job-id "$job" --batch-size "$n" --report "$TMP/file$n.json"
        b=$(report_of "file$n") # not inside row's arguments: report_of's exit must end the script
        row "file, --batch-size $n (run $r of $REPS)" "$ROWS" "$b"
        # The rates count from the start to the last confirm (the report's elapsed_seconds), as the
        # minimal publisher's do: the close after it is left out of both.
        [ "$PEAK_KB" -gt "$peak" ] && peak=$PEAK_KB
        wall=$(jq .elapsed_seconds "$TMP/file$n.json")
        walls+=("$wall")
        echo "   to the last confirm: $wall s, $(awk -v r="$ROWS" -v b="$b" -v w="$wall" 'BEGIN { printf "%.0f rows/s, %.0f msgs/s", r / w, b / w }')"
        [ "$r" -gt 1 ] || batch_sample "file$n" "$b" "$job"
        purge "$job"
        ceiling "file$n" "$b"
        rates+=("$MIN_RATE")
    done
    wall=$(printf '%s\n' "${walls[@]}" | median)
    MIN_RATE=$(printf '%s\n' "${rates[@]}" | median)
    echo "   medians of $REPS: $wall s to the last confirm, ceiling $MIN_RATE msgs/s; ratio:" \
        "$(awk -v b="$b" -v w="$wall" -v m="$MIN_RATE" 'BEGIN { printf "%.2f", b / w / m }') of the minimal publisher's msgs/s (target $TARGET_RATIO)"
    JSONS+=("$(scenario_json "producer$n" "$ROWS" "$b" "$wall" "$peak" "$MIN_RATE" "$MEAN_BYTES")")
}

# Small runs first: the peak RSS must not grow with the input.
head -n 10001 "$TMP/bench.csv" >"$TMP/small.csv"
measure small "$PRODUCER" "$TMP/small.csv" --job-id bench-small --batch-size 100 --report "$TMP/small.json"
SMALL_KB=$PEAK_KB
purge bench-small

bench_size 100
bench_size 10

if [ -z "${BENCH_QUICK:-}" ]; then
    measure stdin_auto "$PRODUCER" - --format csv --job-id bench-stdin --batch-size auto \
        --report "$TMP/stdin_auto.json" <"$TMP/bench.csv"
    b=$(report_of stdin_auto)
    row "stdin, --batch-size auto (RATE_LIMIT=${RATE_LIMIT:-60})" "$ROWS" "$b"
    want=$(( ${RATE_LIMIT:-60} > 0 ? ${RATE_LIMIT:-60} / 2 : 100 ))
    [ "$want" -ge 1 ] || want=1
    [ "$want" -le 100 ] || want=100
    [ "$b" = $(( (ROWS + want - 1) / want )) ] || { echo "FAIL: --batch-size auto: $b batches, want batches of $want" >&2; STATUS=1; }
    purge bench-stdin
fi

echo "   peak RSS of the 10,000-row run: $(awk -v k="$SMALL_KB" 'BEGIN { printf "%.1f MB", k / 1024 }')"
[ $STATUS = 0 ] && echo "== ok: peak RSS below $((RSS_LIMIT_KB / 1024)) MB in every run" || echo "== FAIL" >&2
for j in "${JSONS[@]}"; do echo "$j"; done
exit $STATUS
