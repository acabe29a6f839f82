#!/usr/bin/env bash
# Soak: FC_SOAK_SECONDS (default 600) of steady load on a RabbitMQ node of the test's own, with
# victim workers killed (kill -9 or SIGTERM) and restarted every 20-40 s and the broker stopped
# once around the middle and started again with its data 10 s later. Checked: every job's items
# each once in its output (2 cards each), none failed or dead-lettered, the producer's exit code,
# report and output agree; at the end every queue of the prefix is empty; every SIGTERM'd worker
# exits 0 within SHUTDOWN_TIMEOUT; the survivor (a worker never killed) keeps a flat RSS and fd
# count after warm-up, is alive at the end and exits 0 on SIGTERM.
#
# Load: the mock API answers in 20-50 ms with 1 % 500s (items retried through the retry queues)
# and 0.1 % 429s (the fleet pauses 1 s); the fleet's limit is 50 calls/s (25 items/s), well
# under what 4 workers x 4 calls could do, so the pace is the limiter's, not the machine's, and
# the machine (2 cores, other suites running) is not saturated. Two producer lanes run jobs back
# to back (each job about JOB_S seconds of the fleet's work when both run), so the fleet never
# idles at a job's tail; each job has terms of its own, so the answer cache never serves it.
#
# Seeded: FC_SOAK_SEED (printed) fixes the kill schedule (times, victims, signals) and the
# mock's fault dice. The schedule is drawn before anything else uses $RANDOM.
#
# Memory: the survivor's VmRSS and open fds are sampled every SAMPLE_S s from /proc into
# $TMP/soak-rss.csv (copied to $FC_SOAK_CSV if set). Warm-up is the first WARM_S s (D/5, at most
# 120 s: caches, curl's connection pool, the rate of deliveries reach their steady state).
# Growth = mean RSS of the last WIN_S s (D/6, at most 60 s) against the mean of the first WIN_S s
# after warm-up; it must be under 5 %. The broker restart is not excluded: a one-off step there
# would stay in the last window, and the figures printed around the restart show whether there
# is one. fds: max - min after warm-up at most WORKER_COUNT + 3 (curl's pool may open and close
# up to WORKER_COUNT API connections as calls come and go; the AMQP socket is closed while the
# broker is away and a reconnect attempt holds one; Redis may be reconnected).
#
# Summary line (for the CI log): "soak: N items, K kills (a kill -9, b SIGTERM), broker restart
# at T s, survivor RSS first/warm/last/max MB, growth X %, fds min/max", then the RSS by minute.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/../integration/rabbit_nodes.sh"

D=${FC_SOAK_SECONDS:-600}
SEED=${FC_SOAK_SEED:-20261201}
[[ $D =~ ^[0-9]+$ ]] && [ "$D" -ge 60 ] || fail "FC_SOAK_SECONDS must be a whole number of seconds, at least 60"
[[ $SEED =~ ^[0-9]+$ ]] || fail "FC_SOAK_SEED must be a whole number"

VICTIMS=3
SHUTDOWN_S=10
RATE=3000                          # calls per minute for the fleet: 50 calls/s, 25 items/s
JOB_S=$((D >= 300 ? 60 : 30))      # a job's length in seconds when both lanes run
J=$((RATE / 120 * JOB_S / 2))      # items per job
WARM_S=$((D / 5 < 120 ? D / 5 : 120))
WIN_S=$((D / 6 < 60 ? D / 6 : 60))
BROKER_AT=$((D / 2))
DOWN_S=10
SAMPLE_S=5
TAIL_S=600                         # longest the last jobs may take after the soak's time
PTIMEOUT=$((JOB_S * 8 + 120))      # each producer's --timeout
FD_BOUND=$((4 + 3))                # WORKER_COUNT + 3, see above
CSV=$TMP/soak-rss.csv

# The kill schedule, from the seed alone.
RANDOM=$SEED
KILL_AT=() KILL_V=() KILL_SIG=()
t=0
for _ in $(seq 1 1000); do
    t=$((t + 20 + RANDOM % 21))
    [ $t -lt "$D" ] || break
    KILL_AT+=("$t")
    KILL_V+=($((RANDOM % VICTIMS + 1)))
    if [ $((RANDOM % 2)) = 0 ]; then KILL_SIG+=(KILL); else KILL_SIG+=(TERM); fi
done
plan=""
for i in "${!KILL_AT[@]}"; do plan+="${KILL_AT[$i]}s:v${KILL_V[$i]}/${KILL_SIG[$i]} "; done
log "seed $SEED, $D s: ${#KILL_AT[@]} kills planned ($plan), broker stop at ${BROKER_AT}s, jobs of $J items"

t_boot=$SECONDS
rn_start n1
rn_await n1 180
rn_checks_on n1
export AMQP_URL
AMQP_URL=$(rn_url n1)
log "node n1 up in $((SECONDS - t_boot)) s on port $(rn_port n1)"

start_mock --latency-ms 20 --jitter-ms 30 --fail-500 0.01 --fail-429 0.001 --retry-after 1 --seed "$SEED"
export API_KEY=sk-soak-$$ WORKER_COUNT=4 RATE_LIMIT=$RATE BATCH_SIZE=25 RETRY_DELAYS=2s,5s,10s \
    SHUTDOWN_TIMEOUT=${SHUTDOWN_S}s CACHE_TTL=1h

# forget_pid PID: PID was reaped; it leaves the cleanup list (the number may be reused by then).
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Workers: the survivor, never killed, and the victims v1..v3, each incarnation logging to
# worker-vV-I.log.
declare -A VPID=() VINC=() VLOG=() TERM_AT=() TERM_T=()
start_victim() {
    local v=$1
    VINC[$v]=$((${VINC[$v]:-0} + 1))
    start_worker "v$v-${VINC[$v]}"
    VPID[$v]=$LAST_PID
    VLOG[$v]=$TMP/worker-v$v-${VINC[$v]}.log
}
start_worker survivor
SURV=$LAST_PID
for v in $(seq 1 $VICTIMS); do start_victim "$v"; done
wait_until 60 grep -q consuming "$TMP/worker-survivor.log" || fail "the survivor did not start"
for v in $(seq 1 $VICTIMS); do wait_until 60 grep -q consuming "${VLOG[$v]}" || fail "victim $v did not start"; done

N_KILL9=0 N_TERM=0 TERM_MAX=0
do_kill() {
    local v=$1 sig=$2 pid=${VPID[$1]}
    kill -0 "$pid" 2>/dev/null || fail "victim $v (incarnation ${VINC[$v]}) died on its own"
    if [ "$sig" = KILL ]; then
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        forget_pid "$pid"
        N_KILL9=$((N_KILL9 + 1))
        start_victim "$v"
    else
        TERM_T[$v]=$(date +%s.%N)
        TERM_AT[$v]=$SECONDS
        kill -TERM "$pid"
        N_TERM=$((N_TERM + 1))
    fi
}

# check_terms: a victim sent SIGTERM has exited 0 within SHUTDOWN_TIMEOUT (its "stopped cleanly"
# line's time, to the log's milliseconds); it is then started again.
check_terms() {
    local v pid rc took
    for v in "${!TERM_AT[@]}"; do
        pid=${VPID[$v]}
        if kill -0 "$pid" 2>/dev/null; then
            [ $((SECONDS - TERM_AT[$v])) -le $((SHUTDOWN_S + 10)) ] ||
                fail "victim $v still running $((SECONDS - TERM_AT[$v])) s after SIGTERM"
            continue
        fi
        rc=0
        wait "$pid" || rc=$?
        forget_pid "$pid"
        [ $rc = 0 ] || fail "victim $v exit $rc after SIGTERM (${VLOG[$v]})"
        took=$(rn_first_after "${TERM_T[$v]}" "${VLOG[$v]}" "stopped cleanly")
        [ -n "$took" ] || fail "victim $v exited without 'stopped cleanly'"
        awk -v t="$took" -v l="$SHUTDOWN_S" 'BEGIN { exit !(t <= l + 1) }' ||
            fail "victim $v took $took s to stop (SHUTDOWN_TIMEOUT ${SHUTDOWN_S}s)"
        TERM_MAX=$(awk -v a="$TERM_MAX" -v b="$took" 'BEGIN { print (b > a ? b : a) }')
        unset "TERM_AT[$v]" "TERM_T[$v]"
        start_victim "$v"
    done
}

# Jobs: lane L runs job K (soak-$$-K, J items with terms of its own) with --wait. New jobs start
# until JOB_S/2 before the end, so that the last ones end about when the soak's time is up.
declare -A LPID=() LJOB=() LSTART=()
JOBS=0 ITEMS=0
start_job() {
    local l=$1 k=$((JOBS + 1))
    JOBS=$k
    { echo "position,term,type"; seq 1 "$J" | awk -v k="$k" '{ printf "%d,단어%dx%d,noun\n", $1, k, $1 }'; } \
        >"$TMP/job-$k.csv"
    "$PRODUCER" "$TMP/job-$k.csv" --job-id "soak-$$-$k" --wait --timeout "${PTIMEOUT}s" --output "$TMP/out-$k.tsv" \
        --report "$TMP/report-$k.json" >"$TMP/producer-$k.log" 2>&1 &
    LPID[$l]=$!
    PIDS+=("${LPID[$l]}")
    LJOB[$l]=$k
    LSTART[$l]=$SECONDS
}
lane_publishing() {
    [ -n "${LPID[$1]:-}" ] && ! grep -q "published and confirmed" "$TMP/producer-${LJOB[$1]}.log"
}
# check_job K RC: the producer's exit code, report and output agree: every item once, 2 cards each.
check_job() {
    local k=$1 rc=$2
    local r=$TMP/report-$k.json
    [ "$rc" = 0 ] || fail "job $k: producer exit $rc: $(tail -3 "$TMP/producer-$k.log" | tr '\n' ' ')"
    [ -s "$r" ] || fail "job $k: no report"
    [ "$(jq -r '[.items_published, .items_succeeded, .items_failed, .timed_out, .cancelled, (.failed | length)]
        | map(tostring) | join(" ")' "$r")" = "$J $J 0 false false 0" ] ||
        fail "job $k: the report disagrees with exit 0: $(jq -c '{items_published, items_succeeded, items_failed}' "$r")"
    tsv_positions "$TMP/out-$k.tsv" >"$TMP/pos-$k"
    seq 1 "$J" | diff -q - "$TMP/pos-$k" >/dev/null ||
        fail "job $k: not every item in the output once: $(seq 1 "$J" | diff - "$TMP/pos-$k" | grep '^[<>]' | head -5 | tr '\n' ' ')"
    [ "$(tail -n +2 "$TMP/out-$k.tsv" | wc -l)" = $((2 * J)) ] || fail "job $k: duplicate or missing cards in the output"
    ITEMS=$((ITEMS + J))
    rm -f "$TMP/job-$k.csv" "$TMP/pos-$k"
}
# check_lanes: a lane whose producer ended has its job checked.
check_lanes() {
    local l pid rc
    for l in 1 2; do
        pid=${LPID[$l]:-}
        [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null || continue
        rc=0
        wait "$pid" || rc=$?
        forget_pid "$pid"
        check_job "${LJOB[$l]}" $rc
        log "job ${LJOB[$l]} (lane $l): $J items in $((SECONDS - LSTART[$l])) s"
        LPID[$l]=""
    done
}

# The broker: up -> pending (stop due: no kill; the stop waits for no SIGTERM'd victim, no producer
# publishing and one waiting, so that a producer rides the outage out) -> down (stopped, DOWN_S s;
# no job starts) -> recovering (booted; until every worker says it reconnected) -> after.
B_STATE=up B_STOP=-1 B_BACK=-1 B_RECONN=-1
declare -A RECONN_BEFORE=()
current_logs() {
    echo "$TMP/worker-survivor.log"
    for v in $(seq 1 $VICTIMS); do echo "${VLOG[$v]}"; done
}
reconnects_in() { grep -c "reconnected to the broker" "$1" || true; }
broker_step() {
    local now=$1 f
    case $B_STATE in
    up) [ "$now" -ge $BROKER_AT ] && B_STATE=pending || true ;;
    pending)
        if [ ${#TERM_AT[@]} = 0 ] && ! lane_publishing 1 && ! lane_publishing 2 &&
            [ -n "${LPID[1]:-}${LPID[2]:-}" ]; then
            for f in $(current_logs); do RECONN_BEFORE[$f]=$(reconnects_in "$f"); done
            B_STOP=$now
            rn_stop n1
            log "broker stopped at $B_STOP s (took $((SECONDS - T0 - now)) s)"
            B_STATE=down
        fi
        ;;
    down)
        if [ $((SECONDS - T0 - B_STOP)) -ge $DOWN_S ]; then
            rn_restart n1
            rn_await n1 180
            B_BACK=$((SECONDS - T0))
            log "broker back at $B_BACK s"
            B_STATE=recovering
        fi
        ;;
    recovering)
        for f in $(current_logs); do
            [ "$(reconnects_in "$f")" -gt "${RECONN_BEFORE[$f]}" ] || {
                [ $((now - B_BACK)) -le 120 ] || fail "$(basename "$f") did not reconnect within 120 s of the broker's return"
                return 0
            }
        done
        B_RECONN=$now
        log "every worker reconnected by $B_RECONN s"
        B_STATE=after
        ;;
    esac
}
broker_steady() { [ $B_STATE = up ] || [ $B_STATE = after ]; }

sample() {
    local rss fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SURV/status" 2>/dev/null) || rss=""
    fds=$(ls "/proc/$SURV/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] || fail "the survivor is gone"
    echo "$1,$rss,$fds,$B_STATE" >>"$CSV"
}

echo "t_s,rss_kb,fds,broker" >"$CSV"
T0=$SECONDS
next_kill=0 next_sample=0
for _ in $(seq 1 $(((D + TAIL_S) * 2))); do
    now=$((SECONDS - T0))
    [ "$now" -le $((D + TAIL_S)) ] || fail "the last jobs did not finish within $TAIL_S s of the soak's end"
    if [ "$now" -ge $next_sample ]; then
        sample "$now"
        next_sample=$((next_sample + SAMPLE_S))
    fi
    check_terms
    check_lanes
    if [ $next_kill -lt ${#KILL_AT[@]} ] && [ "$now" -ge "${KILL_AT[$next_kill]}" ] && broker_steady &&
        [ -z "${TERM_AT[${KILL_V[$next_kill]}]:-}" ]; then
        log "at $now s: victim ${KILL_V[$next_kill]} gets SIG${KILL_SIG[$next_kill]}"
        do_kill "${KILL_V[$next_kill]}" "${KILL_SIG[$next_kill]}"
        next_kill=$((next_kill + 1))
    fi
    broker_step "$now"
    busy=0
    for l in 1 2; do
        if [ -z "${LPID[$l]:-}" ] && [ "$now" -lt $((D - JOB_S / 2)) ] && { broker_steady || [ $B_STATE = pending ]; }; then
            start_job $l
        fi
        [ -z "${LPID[$l]:-}" ] || busy=1
    done
    if [ $busy = 0 ] && [ "$now" -ge "$D" ] && [ $B_STATE = after ] && [ ${#TERM_AT[@]} = 0 ]; then break; fi
    sleep 1
done
END=$((SECONDS - T0))
[ $B_STATE = after ] || fail "the soak ended before the broker restart was done (state $B_STATE)"
[ $busy = 0 ] || fail "the loop ran out with jobs running"
preconn=$(grep -l "connected to the broker again" "$TMP"/producer-*.log 2>/dev/null | wc -l)
log "soak loop ended at $END s: $JOBS jobs, $ITEMS items; $next_kill of ${#KILL_AT[@]} planned kills done;" \
    "$preconn producers rode out the broker's restart"
[ "$preconn" -ge 1 ] || fail "no producer was waiting across the broker's restart"

# Nothing left in any queue of the prefix (work, retry, crashed, dead, results).
wait_until 60 rn_all_empty n1 || fail "queues not empty: $(rn_depths n1 | awk '$2 != 0' | tr '\n' ';')"
[ "$(queue_depth dead)" = 0 ] || fail "dead letters: $(queue_depth dead)"

# Victims, then the survivor, stop cleanly: exit 0 within SHUTDOWN_TIMEOUT.
for v in $(seq 1 $VICTIMS); do
    TERM_T[$v]=$(date +%s.%N)
    TERM_AT[$v]=$SECONDS
    kill -TERM "${VPID[$v]}"
done
stops_done() { check_terms_final; [ ${#TERM_AT[@]} = 0 ]; }
check_terms_final() {
    local v pid rc
    for v in "${!TERM_AT[@]}"; do
        pid=${VPID[$v]}
        kill -0 "$pid" 2>/dev/null && continue
        rc=0
        wait "$pid" || rc=$?
        forget_pid "$pid"
        [ $rc = 0 ] || fail "victim $v exit $rc after the final SIGTERM"
        unset "TERM_AT[$v]"
    done
}
wait_until $((SHUTDOWN_S + 10)) stops_done || fail "victims did not stop within $((SHUTDOWN_S + 10)) s"
sample "$((SECONDS - T0))"
# CPU seconds the survivor and the mock used (utime + stime), to show the load was modest.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"; }
cpu="survivor $(cpu_of "$SURV") s, mock $(cpu_of "$MOCK_PID") s, node (since its restart) $(cpu_of "${RN_PID[n1]}") s of CPU in $((SECONDS - T0)) s"
t_term=$(date +%s.%N)
kill -TERM "$SURV"
surv_gone() { ! kill -0 "$SURV" 2>/dev/null; }
wait_until $((SHUTDOWN_S + 10)) surv_gone || fail "the survivor did not stop within $((SHUTDOWN_S + 10)) s"
rc=0
wait "$SURV" || rc=$?
forget_pid "$SURV"
[ $rc = 0 ] || fail "the survivor exit $rc after SIGTERM"
took=$(rn_first_after "$t_term" "$TMP/worker-survivor.log" "stopped cleanly")
[ -n "$took" ] || fail "the survivor exited without 'stopped cleanly'"
[ -n "${FC_SOAK_CSV:-}" ] && cp "$CSV" "$FC_SOAK_CSV"

# The figures. Samples after warm-up; "warm" and "last" are the means of the first and last
# WIN_S s of them.
read -r first warm last max growth fmin fmax nwarm nlast <<<"$(awk -F, -v w="$WARM_S" -v win="$WIN_S" -v end="$END" '
    NR == 1 { next }
    NR == 2 { first = $2 }
    { if ($2 > max) max = $2 }
    $1 >= w { if (fmin == "" || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3 }
    $1 >= w && $1 < w + win { ws += $2; wn++ }
    $1 > end - win && $1 <= end { ls += $2; ln++ }
    END {
        if (!wn || !ln) { print "x"; exit }
        printf "%.1f %.1f %.1f %.1f %.2f %d %d %d %d\n", first / 1024, ws / wn / 1024, ls / ln / 1024, max / 1024,
            (ls / ln - ws / wn) * 100 / (ws / wn), fmin, fmax, wn, ln
    }' "$CSV")"
[ "$first" != x ] || fail "too few RSS samples"
curve=$(awk -F, 'NR > 1 { m = int($1 / 60); s[m] += $2; n[m]++; if (m > top) top = m }
    END { for (i = 0; i <= top; i++) if (n[i]) printf "%s%.2f", (i ? " " : ""), s[i] / n[i] / 1024 }' "$CSV")
# Around the restart: the mean of the 30 s before the stop, of 30-60 s after the return, and the
# growth from the latter to the last window (the curve's trend once the reconnect's step is past).
around=$(awk -F, -v s="$B_STOP" -v b="$B_BACK" -v end="$END" -v win="$WIN_S" '
    NR > 1 && $1 >= s - 30 && $1 < s { bs += $2; bn++ }
    NR > 1 && $1 >= b + 30 && $1 < b + 60 { as += $2; an++ }
    NR > 1 && $1 > end - win && $1 <= end { ls += $2; ln++ }
    END {
        if (bn && an && ln) printf "%.2f MB in the 30 s before the stop, %.2f MB 30-60 s after the return (step %+.2f MB), growth from there to the last window %.2f %%",
            bs / bn / 1024, as / an / 1024, (as / an - bs / bn) / 1024, (ls / ln - as / an) * 100 / (as / an)
    }' "$CSV")
calls=$(mock_answered)
faults=$(awk '$2 == 500 { f5++ } $2 == 429 { f4++ } END { printf "%d 500s, %d 429s", f5, f4 }' "$TMP/mock-requests.log")
log "survivor RSS by minute (MB): $curve"
log "survivor RSS around the broker restart: $around"
log "API calls answered: $calls ($faults); $cpu; SIGTERM stops took at most $TERM_MAX s; the survivor's $took s"
echo "soak: $ITEMS items, $((N_KILL9 + N_TERM)) kills ($N_KILL9 kill -9, $N_TERM SIGTERM), broker restart at $B_STOP s," \
    "survivor RSS first/warm/last/max $first/$warm/$last/$max MB, growth $growth %, fds $fmin/$fmax" \
    "(seed $SEED, $END s, warm-up $WARM_S s, windows $WIN_S s: $nwarm/$nlast samples)"

awk -v g="$growth" 'BEGIN { exit !(g < 5) }' || fail "the survivor's RSS grew $growth % after warm-up (curve: $curve)"
[ $((fmax - fmin)) -le $FD_BOUND ] || fail "the survivor's fds went from $fmin to $fmax after warm-up"
[ $((N_KILL9 + N_TERM)) -ge 1 ] || fail "no victim was killed"
if [ "$D" -ge 300 ]; then
    [ $N_KILL9 -ge 1 ] && [ $N_TERM -ge 1 ] || fail "kills of one kind only ($N_KILL9 kill -9, $N_TERM SIGTERM)"
fi
log "ok"
