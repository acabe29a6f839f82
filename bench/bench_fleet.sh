#!/usr/bin/env bash
# Scenario 2 ("fleet100"): a fleet of worker processes on one token bucket. 100 workers x
# WORKER_COUNT=8 against the mock API at 1 s latency (a call bound of 800/s) share RATE_LIMIT=300/s
# (18000/min, RATE_BURST default: 300) for about 60 s. Measured from the mock's request log:
# the busiest 1 s window (all windows, and those starting once the initial burst is spent), the
# sustained rate over the steady part, each process's calls against a fair share; and from the
# run's own redis-server (started here on a free port, so no other test's load is counted):
# its CPU per 1,000 limiter acquires (EVALSHA calls, INFO commandstats) beside what
# redis-benchmark costs it for the same script and for SET, in the same run.
# Prints a table, then one JSON line {"scenario":"fleet100",...} as its last line.
#   BENCH_QUICK=1      25 workers at 100/s, about 15 s
#   FLEET_WORKERS, FLEET_SECS, FLEET_RATE (calls/s)   override the shape
#   FC_BUILD_DIR       the CMake build dir (default ./build)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
. "$SRC/tests/integration/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
TICK=$(getconf CLK_TCK)

# The call bound (workers x 8 / 1 s) stays well above the limit: 800/s for 300/s, 200/s for 100/s.
if [ -n "${BENCH_QUICK:-}" ]; then NW=${FLEET_WORKERS:-25} SECS=${FLEET_SECS:-15} RATE=${FLEET_RATE:-100}
else NW=${FLEET_WORKERS:-100} SECS=${FLEET_SECS:-60} RATE=${FLEET_RATE:-300}; fi
BATCH=10 # small batches: every process holds work (PREFETCH 2 x 10 items) all the way through
# Calls for SECS at RATE plus the initial burst; two calls per item.
ITEMS=$(((RATE * SECS + RATE) / 2))
export API_KEY=sk-bench LOG_LEVEL=info CACHE_TTL=0 RETRY_DELAYS=1s WORKER_COUNT=8 BATCH_SIZE=$BATCH
export RATE_LIMIT=$((RATE * 60))

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# cmdstats: "evalsha_calls evalsha_usec all_usec" from INFO commandstats (usec: time Redis spent
# inside the commands, the scripts' own GET/SET/TIME counted under EVALSHA).
cmdstats() {
    redis-cli -p "$RPORT" info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ {u += $5}
        $1 == "cmdstat_evalsha" {c = $3; e = $5} END {print c + 0, e + 0, u + 0}'
}

# The run's own Redis: its CPU and command counts are this run's alone.
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")
redis_up() { redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG; }
wait_until 20 redis_up || fail "own redis-server did not start"
export REDIS_URL="redis://127.0.0.1:$RPORT/0"

start_mock --latency-ms 1000
# Staggered start, 10 at a time, each group connected before the next.
WPIDS=()
for i in $(seq 1 "$NW"); do
    start_worker "f$i"
    WPIDS+=("$LAST_PID")
    if [ $((i % 10)) = 0 ] || [ "$i" = "$NW" ]; then
        all_up() { local j; for j in $(seq $(((i - 1) / 10 * 10 + 1)) "$i"); do grep -q consuming "$TMP/worker-f$j.log" || return 1; done; }
        wait_until 60 all_up || fail "workers up to $i did not start consuming"
    fi
done
log "$NW workers consuming"

make_csv "$ITEMS" "$TMP/fleet.csv"
r_cpu0=$(cpu_ticks "$RPID")
read -r ev0 evu0 allu0 < <(cmdstats)
T_START=$SECONDS
timeout 900 "$PRODUCER" "$TMP/fleet.csv" --job-id "bench-fleet-$$" --batch-size "$BATCH" --wait --timeout 800s \
    --output "$TMP/fleet.tsv" --report "$TMP/fleet.report.json" >"$TMP/producer.log" 2>&1 ||
    fail "producer exit $?"
r_ticks=$(($(cpu_ticks "$RPID") - r_cpu0))
read -r ev1 evu1 allu1 < <(cmdstats)
acquires=$((ev1 - ev0))
ev_usec_k=$(awk -v u=$((evu1 - evu0)) -v a="$acquires" 'BEGIN {printf "%.3f", a ? u / a : 0}') # us per call = ms per 1k
ev_share=$(awk -v e=$((evu1 - evu0)) -v t=$((allu1 - allu0)) 'BEGIN {printf "%.2f", t ? e / t : 0}')
log "job done in $((SECONDS - T_START)) s"
ok=$(jq .items_succeeded "$TMP/fleet.report.json")
[ "$ok" = "$ITEMS" ] || log "WARNING only $ok of $ITEMS items succeeded"
w_ticks=0
for p in "${WPIDS[@]}"; do w_ticks=$((w_ticks + $(cpu_ticks "$p"))); done
for p in "${WPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${WPIDS[@]}"; do wait "$p" 2>/dev/null || true; done

# redis-benchmark on the same server: the limiter's own script (a reserve with a zero
# increment, so it is granted every time and writes its key, as a real reserve does) and SET.
"$BUILD/bench/bench-limiter" --script >"$TMP/limiter.lua" || fail "bench-limiter --script failed"
# The workers loaded the same script (checked by its SHA).
SHA=$(sha1sum "$TMP/limiter.lua" | cut -c1-40)
[ "$(redis-cli -p "$RPORT" script exists "$SHA")" = 1 ] ||
    fail "the script bench-limiter printed is not the one the workers ran"
bench_cmd() { # bench_cmd N ARGS...: prints "requests/s cpu_ms_per_1k" for redis-benchmark ARGS
    local n=$1 t0 t1 out c0 u0 c1 u1; shift
    read -r c0 u0 _ < <(cmdstats)
    t0=$(cpu_ticks "$RPID")
    out=$(redis-benchmark -p "$RPORT" -c 50 -n "$n" -q "$@" 2>/dev/null | tr '\r' '\n' | grep -E 'requests per second' | tail -1)
    t1=$(cpu_ticks "$RPID")
    read -r c1 u1 _ < <(cmdstats)
    B_EV_USEC=$(awk -v u=$((u1 - u0)) -v c=$((c1 - c0)) 'BEGIN {printf "%.3f", c ? u / c : 0}')
    out=$(sed -E 's/.* ([0-9.]+) requests per second.*/\1/' <<<"$out")
    awk -v r="${out:-0}" -v t=$((t1 - t0)) -v k="$TICK" -v n="$n" 'BEGIN {printf "%.0f %.3f\n", r, t / k / n * 1e6}'
}
# A reserve as the worker sends it without tokens, adaptation or budget (see the comment on the
# script in fc_limiter.c): keys pause, calls, tokens, rate; mode r, max wait, calls tau and
# increment, then the empty tokens and adaptive arguments and zero costs.
RESERVE=(4 bench:pause bench:calls bench:tokens bench:rate r 30000000 1000000 0 "" "" "" 0 0 0 0 0 0 0)
[ "$(redis-cli -p "$RPORT" evalsha "$SHA" "${RESERVE[@]}" | head -1)" = 0 ] || fail "a reserve through redis-cli was not granted"
BN=$([ -n "${BENCH_QUICK:-}" ] && echo 20000 || echo 100000)
bench_cmd "$BN" evalsha "$SHA" "${RESERVE[@]}" >"$TMP/bench.ev"
read -r b_ev_rps b_ev_cpu <"$TMP/bench.ev"
b_ev_usec=$B_EV_USEC
read -r b_set_rps b_set_cpu < <(bench_cmd "$BN" -t set)

L=$TMP/mock-requests.log
read -r t0 t1 calls < <("$MOCKLOG" span "$L")
read -r maxw _ < <("$MOCKLOG" maxwin "$L" 1000)
read -r maxs _ < <("$MOCKLOG" maxwin "$L" 1000 $((t0 + 1500)))
# Steady part: from 3 s after the first call (the burst spent) to 5 s before the last (the tail,
# where fewer items than call slots are left).
s_from=$((t0 + 3000)) s_to=$((t1 - 5000))
sust=$("$MOCKLOG" steadyrate "$L" "$s_from" "$s_to")
# Shares over the first 60 % after the burst: once the queue is empty, processes run out of work
# one by one (each holds up to two batches, about 7 s of calls), which is no unfairness.
f_to=$((s_from + (t1 - t0) * 6 / 10))
"$MOCKLOG" shares "$L" "$s_from" "$f_to" >"$TMP/shares"
nproc_seen=$(wc -l <"$TMP/shares")
s_calls=$(awk '{s += $1} END {print s + 0}' "$TMP/shares")
fair=$(awk -v c="$s_calls" -v n="$NW" 'BEGIN {printf "%.1f", c / n}')
# Processes that made no call in the steady part count as 0.
smin=$(awk -v n="$NW" -v seen="$nproc_seen" 'NR == 1 {m = $1} END {print (seen < n ? 0 : m)}' "$TMP/shares")
smax=$(tail -1 "$TMP/shares" | awk '{print $1}')
r_cpu_k=$(awk -v t="$r_ticks" -v k="$TICK" -v a="$acquires" 'BEGIN {printf "%.3f", a ? t / k / a * 1e6 : 0}')
w_cpu_k=$(awk -v t="$w_ticks" -v k="$TICK" -v c="$calls" 'BEGIN {printf "%.3f", t / k / c * 1000}')
per_call=$(awk -v a="$acquires" -v c="$calls" 'BEGIN {printf "%.2f", a / c}')
burst=$RATE

echo
echo "fleet on one bucket: $NW workers x WORKER_COUNT=$WORKER_COUNT, mock latency 1 s, RATE_LIMIT=$RATE_LIMIT/min ($RATE/s), burst $burst, $ITEMS items, $(nproc) CPUs"
printf '%-34s %12s %12s\n' figure measured target
printf '%-34s %12s %12s\n' "calls (span s)" "$calls ($(((t1 - t0) / 1000)))" "-"
printf '%-34s %12s %12s\n' "busiest 1 s window" "$maxw" "<= $((RATE + burst))"
printf '%-34s %12s %12s\n' "busiest 1 s window after burst" "$maxs" "<= $((RATE + burst))"
printf '%-34s %12s %12s\n' "sustained calls/s (steady part)" "$sust" ">= $(awk -v r="$RATE" 'BEGIN {print r * 0.97}')"
printf '%-34s %12s %12s\n' "calls per process min/fair/max" "$smin/$fair/$smax" "+-25 %"
printf '%-34s %12s %12s\n' "processes seen (share window)" "$nproc_seen" "$NW"
printf '%-34s %12s %12s\n' "limiter acquires (EVALSHA)" "$acquires" "-"
printf '%-34s %12s %12s\n' "acquires per call" "$per_call" "-"
printf '%-34s %12s %12s\n' "Redis CPU ms per 1k acquires" "$r_cpu_k" "-"
printf '%-34s %12s %12s\n' "EVALSHA time in Redis ms per 1k" "$ev_usec_k" "-"
printf '%-34s %12s %12s\n' "EVALSHA share of Redis cmd time" "$ev_share" "-"
printf '%-34s %12s %12s\n' "redis-benchmark EVALSHA: ms/1k, /s" "$b_ev_cpu $b_ev_rps" "-"
printf '%-34s %12s %12s\n' "redis-benchmark EVALSHA in Redis" "$b_ev_usec" "-"
printf '%-34s %12s %12s\n' "redis-benchmark SET: ms/1k, /s" "$b_set_cpu $b_set_rps" "-"
printf '%-34s %12s %12s\n' "worker CPU s per 1k calls (all)" "$w_cpu_k" "-"
echo "(sustained: from 3 s after the first call to 5 s before the last; shares: from 3 s over 60 % of the span."
echo " Redis CPU: the run's own redis-server, /proc utime+stime over the job, which includes the job"
echo " records, outcomes and the producer's polling, per 1,000 EVALSHA calls; redis-benchmark: -c 50,"
echo " the limiter's script as a granted reserve, and SET. 'in Redis': INFO commandstats usec per call, the"
echo " time inside the command, like for like; EVALSHA calls include the pause polls, at most 10/s per process.)"

jq -cn --arg sc fleet100 \
    --argjson calls "$calls" --argjson maxw "$maxw" --argjson maxs "$maxs" --argjson sust "$sust" \
    --argjson smin "$smin" --argjson smax "$smax" --argjson fair "$fair" --argjson seen "$nproc_seen" \
    --argjson acq "$acquires" --argjson rk "$r_cpu_k" --argjson bev "$b_ev_cpu" --argjson bevr "$b_ev_rps" \
    --argjson bset "$b_set_cpu" --argjson bsetr "$b_set_rps" --argjson wk "$w_cpu_k" \
    --argjson evu "$ev_usec_k" --argjson evs "$ev_share" --argjson bevu "$b_ev_usec" \
    --argjson rate "$RATE" --argjson burst "$burst" --argjson nw "$NW" '
    {scenario: $sc,
     figures: {calls: $calls, max1s: $maxw, max1s_after_burst: $maxs, sustained_per_s: $sust,
               calls_min_process: $smin, calls_max_process: $smax, processes_seen: $seen, workers: $nw,
               acquires: $acq, redis_cpu_ms_per_1k_acquires: $rk, evalsha_in_redis_ms_per_1k: $evu,
               evalsha_share_of_redis_command_time: $evs, worker_cpu_s_per_1k_calls: $wk},
     ceilings: {limit_per_s: $rate, limit_plus_burst: ($rate + $burst), fair_share: $fair,
                redis_benchmark_evalsha_cpu_ms_per_1k: $bev, redis_benchmark_evalsha_per_s: $bevr,
                redis_benchmark_evalsha_in_redis_ms_per_1k: $bevu,
                redis_benchmark_set_cpu_ms_per_1k: $bset, redis_benchmark_set_per_s: $bsetr},
     ratios: {max1s: ($maxw / ($rate + $burst)), max1s_after_burst: ($maxs / ($rate + $burst)),
              sustained: ($sust / $rate), share_min: ($smin / $fair), share_max: ($smax / $fair),
              redis_cpu_vs_benchmark_evalsha: (if $bev > 0 then $rk / $bev else null end),
              evalsha_in_redis_vs_benchmark: (if $bevu > 0 then $evu / $bevu else null end)},
     targets: {max1s: "<= 1", sustained: ">= 0.97", share_min: ">= 0.75", share_max: "<= 1.25"},
     met: {max1s: ($maxw <= $rate + $burst), max1s_with_100ms_arrival_jitter: ($maxw <= $rate + $burst + ($rate / 10 | ceil)), max1s_after_burst: ($maxs <= $rate + $burst),
           sustained: ($sust >= 0.97 * $rate), fairness: ($smin >= 0.75 * $fair and $smax <= 1.25 * $fair)}}'
