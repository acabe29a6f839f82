#!/bin/bash
# Integration test of the limiter's adaptive calls rate and per-job budgets against Redis.
# (1) Simulation (limiter-driver sim): 3 processes with 16 calls in flight each, 20 ms latency,
#     RATE_LIMIT 60/s, against a simulated provider token bucket of 30/s (capacity 30) that
#     answers 429 when empty. Without rate headers (AIMD: fc_limiter_backoff on each 429) and
#     with them (fc_limiter_advise on every answer), after the first 20 s: 429s < 2 % of the
#     calls and >= 90 % of 30/s. Both fleets run at once, in their own namespaces.
# (2) The script's paths, step by step (limiter-driver ops): backoff once per epoch, the floor,
#     advice (rate, mode, pause), the adapted rate applied to reservations and only when
#     adaptive, the key's expiry; a job's budget refusing without reserving, exhausted_ms set
#     once, settle's spend and token correction in one call, the budget key's expiry.
# Needs FC_BUILD_DIR holding bench/limiter-driver, and the Redis of deploy/local/services.sh (keys
# under this test's prefix). About 55 s.
. "$(dirname "$0")/lib.sh"

DRIVER=$BUILD/bench/limiter-driver
[ -x "$DRIVER" ] || fail "limiter-driver not built under $BUILD"
SIM_S=50 WARMUP_S=20 PROV_RATE=30
SIM_PIDS=()
URL=$REDIS_URL
P=$QUEUE_PREFIX
rcli() { redis-cli -u "$REDIS_URL" "$@"; }
pass() { log "ok: $*"; }

# ---- (1) the simulations, in the background while (2) runs ----------------------------
for h in 0 1; do
    "$DRIVER" sim "$URL" "$P" "sim$h" 60 60 "$SIM_S" 3 16 "$PROV_RATE" 30 20 "$h" "$WARMUP_S" \
        >"$TMP/sim$h.out" 2>"$TMP/sim$h.err" &
    SIM_PIDS+=($!)
    PIDS+=($!)
done

# ---- (2) the script's paths -------------------------------------------------------------
# ops NAME RATE BURST ADAPTIVE [TOKENS] < commands: runs them on one limiter (API "api"),
# answers in $TMP/NAME.out.
ops() {
    local name=$1; shift
    "$DRIVER" ops "$URL" "$P" api "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || fail "$name: driver exit $?"
}
# line NAME N: the Nth answer of ops NAME.
line() { sed -n "$2p" "$TMP/$1.out"; }
expect() { # expect NAME N WANT WHAT
    local got
    got=$(line "$1" "$2")
    [ "$got" = "$3" ] && pass "$4" || fail "$4: got '$got', want '$3'"
}
# near A B TOL: |A - B| <= TOL
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }
RATE_KEY="$P:rl:{api}:rate"

# Backoff: once per epoch, and cuts at least a second apart; a stale epoch changes nothing; the floor
# (max(0.05, 10/100) = 0.1) holds.
ops aimd 10 1 1 <<'C'
read
acq 0
backoff 0
backoff 0
backoff cur
sleep 1100
backoff cur
read
C
expect aimd 1 "ok 10.000 0" "no adapted rate yet: the configured one, not advised"
expect aimd 3 "ok 8.000 1" "a 429 under the current epoch cuts the rate to 0.8x and moves the epoch on"
expect aimd 4 "ok 8.000 1" "a 429 of a call granted before the cut changes nothing"
expect aimd 5 "ok 8.000 1" "a 429 under the new epoch within a second of the cut changes nothing"
read -r rc eff ep < <(line aimd 6)
{ [ "$rc" = ok ] && [ "$ep" = 2 ] && near "$eff" 6.43 0.02; } && pass "a 429 under the new epoch a second later cuts again" ||
    fail "second cut: '$rc $eff $ep', want ok ~6.43 2"
read -r rc eff adv < <(line aimd 7)
{ [ "$rc" = ok ] && [ "$adv" = 0 ] && near "$eff" 6.4 0.05; } && pass "rate read back: $eff/s (aimd)" ||
    fail "rate read: '$rc $eff $adv', want ok ~6.4 0"
[ "$(rcli hget "$RATE_KEY" mode)" = aimd ] && [ "$(rcli hget "$RATE_KEY" epoch)" = 2 ] &&
    pass "rate key holds mode aimd, epoch 2" || fail "rate key: $(rcli hgetall "$RATE_KEY" | tr '\n' ' ')"
ttl=$(rcli pttl "$RATE_KEY")
[ "$ttl" -gt 3500000 ] && [ "$ttl" -le 3600000 ] && pass "rate key expires in 1 h ($ttl ms)" || fail "rate key pttl $ttl"

# The adapted rate paces reservations (burst 1): 2nd call 1/6.4 s = 156 ms after the first;
# a limiter that is not adaptive ignores it (100 ms).
rcli del "$P:rl:{api}:calls" >/dev/null
printf 'acq 0\nacq 0\n' | ops paced 10 1 1
w=$(line paced 2 | awk '{print $2}')
[ "$w" -ge 150 ] && [ "$w" -le 157 ] && pass "adaptive reservations at 6.4/s (wait $w ms)" || fail "adaptive wait $w ms, want ~156"
rcli del "$P:rl:{api}:calls" >/dev/null
printf 'acq 0\nacq 0\nbackoff 0\nrate\n' | ops fixed 10 1 0
w=$(line fixed 2 | awk '{print $2}')
[ "$w" -ge 95 ] && [ "$w" -le 100 ] && pass "non-adaptive reservations at 10/s (wait $w ms)" || fail "non-adaptive wait $w ms, want ~100"
expect fixed 3 "ok 10.000 0" "backoff is a no-op when not adaptive"
[ "$(rcli hget "$RATE_KEY" epoch)" = 2 ] || fail "a non-adaptive backoff changed the rate key"

# The floor: a new process knows no epoch (0, stale: no cut); a cut from 0.1/s (0.05 a second ago)
# stops at the floor, 0.1/s.
echo "backoff cur" | ops floor 10 1 1
read -r rc eff epoch < <(line floor 1)
{ [ "$rc $epoch" = "ok 2" ] && near "$eff" 6.43 0.05; } && pass "a process that saw no grant yet cuts nothing (epoch 0 is stale)" ||
    fail "first backoff of a new process: '$rc $eff $epoch', want ok ~6.4 2"
read -r secs usecs < <(rcli time | paste -sd' ')
rcli hset "$RATE_KEY" rate 0.05 changed "$(((secs - 1) * 1000000 + usecs))" >/dev/null
printf 'backoff cur\nbackoff cur\n' | ops floor 10 1 1
expect floor 2 "ok 0.100 3" "a cut stops at the floor (0.1/s)"

# Advice: empty bucket of 30 refilling in 1 s -> 29.1/s (ceiling 60), pause 1000/30 = 34 ms; a
# lower rate than in force moves the epoch on; the rate is then read back as advised.
rcli del "$RATE_KEY" >/dev/null
printf 'backoff 0\nadvise 30 0 1000\npause_left\nread\nadvise 30 15 500\n' | ops advice 60 60 1
expect advice 1 "ok 48.000 1" "cut to 48/s"
expect advice 2 "ok 29.100 2" "advice sets 97 % of the provider's refill rate and, lower, moves the epoch on"
p=$(line advice 3)
[ "$p" -ge 20 ] && [ "$p" -le 34 ] && pass "remaining 0 paused the fleet ($p ms left of 34)" || fail "pause left $p ms, want <= 34"
expect advice 4 "ok 29.100 1" "the rate reads back as advised"
grep -q "advice_sent=1 " "$TMP/advice.err" && pass "calm advice (the same rate) within 200 ms of the last one is not sent" ||
    fail "calm advice was sent: $(cat "$TMP/advice.err")"
[ "$(rcli hget "$RATE_KEY" mode)" = advice ] || fail "rate key mode $(rcli hget "$RATE_KEY" mode), want advice"

# Budgets: refusals reserve nothing and set exhausted_ms once; settle adds the spend (7 days)
# and corrects the token bucket in the same call.
rcli del "$P:rl:{api}:calls" "$P:rl:{api}:tokens" "$P:rl:{api}:pause" >/dev/null
ops budget 10 1 0 1000 <<'C'
job j1 100 0 60 0
settle 0 j1 60 1500
spent j1
job j1 100 0 41 0
job j1 100 0 40 0
spent j1
sleep 20
job j1 100 0 50 0
spent j1
job j2 0 500 0 500
job j2 0 500 0 501
job j1 0 0 5000 0
C
expect budget 1 "ok 0" "a call within the budget is granted"
expect budget 3 "ok 60 1500 0" "settle recorded 60 tokens and 1500 uusd"
expect budget 4 "budget 0" "60 + 41 > 100 tokens: refused"
w=$(line budget 5 | awk '{print $2}')
[ "$(line budget 5 | awk '{print $1}')" = ok ] && [ "$w" -ge 90 ] && [ "$w" -le 100 ] &&
    pass "60 + 40 = 100 granted, one interval after the first: the refusal reserved nothing (wait $w ms)" ||
    fail "after a refusal: '$(line budget 5)', want ok ~100 ms"
read -r _ _ _ ex1 < <(line budget 6)
read -r _ _ _ ex2 < <(line budget 8)
now_ms=$(($(date +%s%N) / 1000000))
[ "$ex1" -gt $((now_ms - 10000)) ] && [ "$ex1" -le "$now_ms" ] && pass "exhausted_ms set at the refusal ($ex1)" ||
    fail "exhausted_ms $ex1, now $now_ms"
[ "$ex2" = "$ex1" ] && pass "a later refusal keeps the first exhausted_ms" || fail "exhausted_ms moved: $ex1 -> $ex2"
expect budget 7 "budget 0" "60 + 50 > 100 tokens: refused again"
first() { line "$1" "$2" | awk '{print $1}'; }
[ "$(first budget 9)" = ok ] && pass "uusd: 0 + 500 <= 500 granted" || fail "uusd 500 of 500: $(line budget 9)"
expect budget 10 "budget 0" "uusd: 0 + 501 > 500 refused"
[ "$(first budget 11)" = ok ] && pass "a job without limits is not checked" || fail "job without limits: $(line budget 11)"
ttl=$(rcli pttl "$P:job:{j1}:budget")
[ "$ttl" -gt 604000000 ] && [ "$ttl" -le 604800000 ] && pass "budget key expires in 7 days" || fail "budget key pttl $ttl"
# Settle without a job: the token bucket's correction alone, 2000 tokens at 1000/s = 2 s more.
tokens_ahead() { echo $(( $(rcli get "$P:rl:{api}:tokens") / 1000 - $(rcli time | head -1) * 1000 )); }
before=$(tokens_ahead)
echo "settle 2000 - 0 0" | ops settle 10 1 0 1000
after=$(tokens_ahead)
expect settle 1 "ok" "settle without a job"
[ $((after - before)) -ge 1900 ] && [ $((after - before)) -le 2000 ] &&
    pass "settle corrected the token bucket by 2 s ($before -> $after ms ahead)" ||
    fail "token bucket $before -> $after ms ahead, want +2000"
# And with a job: spend and correction in one call.
echo "settle -1000 j3 7 9" | ops settle2 10 1 0 1000
after2=$(tokens_ahead)
[ "$(rcli hget "$P:job:{j3}:budget" tokens) $(rcli hget "$P:job:{j3}:budget" uusd)" = "7 9" ] &&
    [ $((after - after2)) -ge 1000 ] && [ $((after - after2)) -le 1100 ] &&
    pass "settle with a job: spend recorded and 1000 tokens refunded in one call" ||
    fail "settle with a job: $(rcli hgetall "$P:job:{j3}:budget" | tr '\n' ' '), bucket $after -> $after2 ms"
grep -q "redis_calls=1 " "$TMP/settle2.err" || fail "settle with a job took more than one round trip: $(cat "$TMP/settle2.err")"

# ---- (1) results ------------------------------------------------------------------------
for i in 0 1; do wait "${SIM_PIDS[$i]}" || fail "sim$i: driver failed: $(tail -3 "$TMP/sim$i.err")"; done
SIM_PIDS=()
for h in 0 1; do
    what=$([ "$h" = 1 ] && echo "with rate headers" || echo "without headers (AIMD)")
    read -r _ ok r429 rate share < <(tr '=' ' ' <"$TMP/sim$h.out" | awk '{print $1, $3, $5, $7, $9}')
    early=$(grep -o 'r429=[0-9]*' "$TMP/sim$h.err" | head -"$WARMUP_S" | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
    echo "sim $what: from ${WARMUP_S}s: $ok ok, $r429 429s ($share), $rate/s; $early 429s before"
    awk -v r="$rate" -v p="$PROV_RATE" 'BEGIN { exit !(r >= 0.9 * p) }' && pass "$what: $rate/s >= 90 % of $PROV_RATE/s" ||
        fail "$what: $rate/s, want >= $(awk -v p="$PROV_RATE" 'BEGIN { print 0.9 * p }')/s"
    awk -v s="$share" 'BEGIN { exit !(s < 0.02) }' && pass "$what: 429s $share of calls (< 2 %)" ||
        fail "$what: 429s $share of calls, want < 2 %"
    awk -v r="$rate" -v p="$PROV_RATE" 'BEGIN { exit !(r <= 1.05 * p) }' || fail "$what: $rate/s above the provider's $PROV_RATE/s?"
done
# The provider was binding (the fleet started at 60/s): 429s at the start, and the fleet reacted.
stat_sum() { grep -o "$2=[0-9]*" "$TMP/$1.err" | cut -d= -f2 | awk '{s += $1} END {print s + 0}'; }
[ "$(stat_sum sim0 backoffs)" -ge 2 ] && pass "AIMD: $(stat_sum sim0 backoffs) cuts" || fail "AIMD: $(stat_sum sim0 backoffs) cuts"
[ "$(stat_sum sim1 advice_sent)" -ge 10 ] && pass "advice: $(stat_sum sim1 advice_sent) sent" || fail "advice: none sent"
[ "$(stat_sum sim0 redis_failures)" = 0 ] && [ "$(stat_sum sim1 redis_failures)" = 0 ] || fail "sim: redis failures"

log "all adaptive limiter checks passed"
