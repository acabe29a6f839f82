#!/usr/bin/env bash
# The fleet-wide call limit, measured where it matters: at the mock API's request log. Four
# worker processes (16 calls in flight each) share RATE_LIMIT: no 1-second window holds more
# than rate + burst calls, once the burst is spent no window holds much more than the rate,
# the steady rate is >= 97% of the limit, and each process gets a fair share. Run at 50/s,
# then at 10/s; every item is accounted for after each run.
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh

export API_KEY=sk-ratelimit WORKER_COUNT=16 RETRY_DELAYS=200ms CACHE_TTL=0
WORKER_PIDS=()

start_fleet() {
    WORKER_PIDS=()
    for i in 1 2 3 4; do
        start_worker "$1-$i"
        WORKER_PIDS+=("$LAST_PID")
    done
    for i in 1 2 3 4; do
        wait_until 15 grep -q consuming "$TMP/worker-$1-$i.log" || fail "worker $1-$i did not start consuming"
    done
}

stop_fleet() {
    for p in "${WORKER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${WORKER_PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
}

work_queue_empty() { [ "$(queue_depth batches)" = 0 ]; }

# run_phase NAME RATE_PER_MIN ITEMS: one job through a fresh mock and a fresh fleet, then the checks.
run_phase() {
    local name=$1 per_min=$2 n=$3
    local rate=$((per_min / 60))
    local burst=$rate # RATE_BURST default: one second of the rate
    export RATE_LIMIT=$per_min
    start_mock --latency-ms 20
    start_fleet "$name"
    make_csv "$n" "$TMP/$name.csv"
    timeout 120 "$PRODUCER" "$TMP/$name.csv" --job-id "rl-$name-$$" --wait --timeout 100s \
        --output "$TMP/$name.tsv" >"$TMP/producer-$name.log" 2>&1 || fail "$name: producer exit $?"
    stop_fleet
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    mv "$TMP/mock-requests.log" "$TMP/$name.requests"
    local L=$TMP/$name.requests

    tsv_positions "$TMP/$name.tsv" >"$TMP/$name.pos"
    [ "$(wc -l <"$TMP/$name.pos")" = "$n" ] || fail "$name: $(wc -l <"$TMP/$name.pos") of $n items in the output"
    # The management API's counters lag by up to its stats interval (5 s).
    wait_until 15 work_queue_empty || fail "$name: work queue not empty"
    assert_accounted "$n" "$TMP/$name.pos"
    local calls
    calls=$(wc -l <"$L")
    [ "$calls" -ge $((2 * n)) ] || fail "$name: only $calls calls logged for $n items"

    read -r t0 t1 _ < <("$MOCKLOG" span "$L")
    # 1. No 1-second window above rate + burst, anywhere in the run. GCRA grants at most
    #    burst + rate - 1 in [t, t+1s) by Redis time; the mock sees arrivals, a few ms later
    #    (the first calls also open their connections), so the window starting at the least
    #    delayed call may also catch calls granted up to that delay after it: allow 100 ms of
    #    arrival jitter (a per-process limit, or a burst counted twice, is far above this).
    local jitter=$(((rate + 9) / 10))
    read -r maxw at < <("$MOCKLOG" maxwin "$L" 1000)
    [ "$maxw" -le $((rate + burst + jitter)) ] ||
        fail "$name: $maxw calls in the 1 s window from $at, limit $((rate + burst)) (+$jitter jitter)"
    # 2. Once the burst is spent (it goes in the first ~100 ms), windows hold the rate; 20%
    #    margin for arrival jitter on a busy machine (a wrong limiter gives 2x here).
    read -r maxs ats < <("$MOCKLOG" maxwin "$L" 1000 $((t0 + 1500)) $((t1 - 500)))
    [ "$maxs" -le $((rate * 12 / 10)) ] || fail "$name: $maxs calls in the steady 1 s window from $ats, rate $rate/s"
    # 3. The limit is used: steady rate >= 97%.
    local steady
    steady=$("$MOCKLOG" steadyrate "$L" $((t0 + 2000)) $((t1 - 1000)))
    awk -v s="$steady" -v r="$rate" 'BEGIN {exit !(s >= 0.97 * r)}' ||
        fail "$name: steady rate $steady/s, want >= 97% of $rate/s"
    # 4. Fairness over the steady part: each process within 25% of an equal share.
    "$MOCKLOG" shares "$L" $((t0 + 1000)) $((t1 - 1000)) >"$TMP/$name.shares"
    [ "$(wc -l <"$TMP/$name.shares")" = 4 ] || fail "$name: $(wc -l <"$TMP/$name.shares") processes called, want 4"
    awk '{c[NR] = $1; s += $1} END {for (i = 1; i <= NR; i++) if (c[i] < 0.75 * s / NR || c[i] > 1.25 * s / NR) exit 1}' \
        "$TMP/$name.shares" || fail "$name: unfair shares: $(awk '{printf "%s ", $1}' "$TMP/$name.shares")"
    log "$name: $calls calls in $(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100)) s; max 1 s window $maxw" \
        "(limit $((rate + burst))), steady max $maxs, steady rate $steady/s of $rate/s," \
        "shares $(awk '{printf "%s ", $1}' "$TMP/$name.shares")"
}

export BATCH_SIZE=5 PREFETCH=0
run_phase r50 3000 240
# At 10/s keep few items per process, so that every process has work until the end.
export BATCH_SIZE=2 PREFETCH=2
run_phase r10 600 60
log "ok"
