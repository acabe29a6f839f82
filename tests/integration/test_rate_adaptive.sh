#!/usr/bin/env bash
# A rate that adapts to the provider. The mock API enforces a hidden 30 calls/s (a token bucket of 30)
# and answers 429 above it; the fleet (3 workers, 16 calls in flight each) is configured for 60/s.
# With the provider's x-ratelimit headers, and without them (AIMD on 429s alone), after the first 20 s
# the 429s must be under 2 % of the calls and the fleet must get at least 90 % of 30/s; every item ends
# in its job's output exactly once. Today's behaviour without adapting (RATE_ADAPT=0: a 429 pauses the
# fleet, then calls resume at the full rate) is measured beside them as the baseline.
. "$(dirname "$0")/lib.sh"

WARMUP_S=20 HIDDEN=30 ITEMS=${FC_ADAPT_ITEMS:-600}
make_csv "$ITEMS" "$TMP/items.csv"
export API_KEY=sk-adapt WORKER_COUNT=16 RATE_LIMIT=3600 BATCH_SIZE=10 CACHE_TTL=0

# measure LOG WARMUP [SECONDS]: after the warm-up, "calls 429s share rate span": the 429s' share of the calls and
# the 2xx per second, over SECONDS when given (a run stopped after that long), else up to the last call.
measure() {
    awk -v w="$2" -v span="${3:-0}" 'NR == 1 {t0 = $1} $1 >= t0 + w * 1000 {n++; if ($2 == 429) e++; if ($2 == 200) ok++;
        if (!s) s = $1; l = $1} END {d = span > 0 ? span - w : (l - s) / 1000; if (d <= 0) d = 1
        printf "%d %d %.4f %.2f %.1f\n", n, e, n ? e / n : 0, ok / d, d}' "$1"
}

# scenario NAME ADAPT HEADERS SECONDS: runs a job of ITEMS on a fresh mock and 3 workers (the limiter's state is
# the API's, API_NAME apart for each); SECONDS > 0 stops the run after that long (the baseline), else it waits
# for the whole job and checks it.
scenario() {
    local name=$1 adapt=$2 headers=$3 secs=$4
    for p in "${RUN_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null || true
    : >"$TMP/mock-requests.log"
    start_mock --latency-ms 20 --hidden-rate $HIDDEN --ratelimit-headers "$headers"
    RUN_PIDS=("$MOCK_PID")
    for i in 1 2 3; do
        RATE_ADAPT=$adapt API_NAME="adapt-$name-$$" start_worker "$name-$i"
        RUN_PIDS+=("$LAST_PID")
    done
    for i in 1 2 3; do wait_until 15 grep -q consuming "$TMP/worker-$name-$i.log" || fail "worker $name-$i did not start"; done
    if [ "$secs" -gt 0 ]; then
        "$PRODUCER" "$TMP/items.csv" --job-id "$name-$$" >"$TMP/producer-$name.log" 2>&1 || fail "producer $name exit $?"
        sleep "$secs"
    else
        timeout 200 "$PRODUCER" "$TMP/items.csv" --job-id "$name-$$" --wait --timeout 180s --output "$TMP/$name.tsv" \
            >"$TMP/producer-$name.log" 2>&1 || fail "producer $name exit $?"
        tsv_positions "$TMP/$name.tsv" >"$TMP/$name.pos"
        seq 1 "$ITEMS" | diff -q - "$TMP/$name.pos" >/dev/null || fail "$name: not every item once in the output"
        [ "$(tail -n +2 "$TMP/$name.tsv" | wc -l)" = $((2 * ITEMS)) ] || fail "$name: duplicate or missing cards"
    fi
    cp "$TMP/mock-requests.log" "$TMP/requests-$name.log"
    local warmup=$WARMUP_S
    [ "$secs" -gt 0 ] && warmup=0 # the baseline: the whole run, which it spends mostly paused
    read -r CALLS E429 SHARE RATE SPAN < <(measure "$TMP/requests-$name.log" $warmup "$secs")
    log "$name: after ${warmup}s, $CALLS calls in $SPAN s: $E429 429s ($SHARE), $RATE successful calls/s (hidden limit $HIDDEN/s)"
}

RUNS=${FC_ADAPT_RUNS:-headers aimd baseline} # a subset when looking into one
RESULTS=()
for run in $RUNS; do
    case $run in
    headers) scenario headers 1 1 0 ;;
    aimd)
        scenario aimd 1 0 0
        grep -q "rate adapts" "$TMP"/worker-aimd-*.log || fail "aimd: no worker said the rate adapts" ;;
    baseline) scenario baseline 0 0 30 ;;
    esac
    RESULTS+=("$run $SHARE $RATE")
done
[ "$(dead_messages | jq length)" = 0 ] || fail "dead letters"

for s in "${RESULTS[@]}"; do
    read -r name share rate <<<"$s"
    [ "$name" = baseline ] && continue
    awk -v s="$share" 'BEGIN {exit !(s < 0.02)}' || fail "$name: 429s are $share of the calls (want < 2 %)"
    awk -v r="$rate" -v h=$HIDDEN 'BEGIN {exit !(r >= 0.9 * h)}' || fail "$name: $rate calls/s (want >= 90 % of $HIDDEN)"
done
log "ok: $(printf '%s; ' "${RESULTS[@]}")(name, 429s' share of the calls, successful calls/s after ${WARMUP_S}s; baseline: pause on 429, resume at 60/s)"
