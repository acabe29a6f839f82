#!/bin/bash
# Integration test of the fleet-wide rate limiter against its own redis-server: 4 processes
# at 50/s burst 5 must never put more than 55 calls in any 1-second window and must get
# >= 97% of the rate; SCRIPT FLUSH (NOSCRIPT path) and a Redis restart mid-run must keep
# working; a 2 s fleet pause must hold every call reserved after it.
# Needs FC_BUILD_DIR (set by CTest) holding bench/limiter-driver, and /usr/bin/redis-server.
set -euo pipefail
. "$(dirname "$0")/ports.sh"

BUILD=${FC_BUILD_DIR:-$(dirname "$0")/../../build}
DRIVER=""
for d in "$BUILD/bench/limiter-driver" "$BUILD/tests/limiter-driver"; do
    [ -x "$d" ] && DRIVER=$d && break
done
[ -n "$DRIVER" ] || { echo "FAIL: limiter-driver not built under $BUILD"; exit 1; }
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}

RATE=50 BURST=5 PROCS=4 SECONDS_RUN=4
TMP=$(mktemp -d /tmp/fc-limiter-test.XXXXXX)
REDIS_PID=""
DRIVER_PIDS=()

cleanup() {
    for p in "${DRIVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
    ports_release
}
trap cleanup EXIT

FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }


# start_redis starts redis-server in $TMP on $PORT (loading $TMP/dump.rdb if present).
start_redis() {
    "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$TMP" --dbfilename dump.rdb --save '' \
        --appendonly no --logfile "$TMP/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        "$REDIS_CLI" -p "$PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "FAIL: redis-server did not start"; cat "$TMP/redis.log"; exit 1
}

# restart_redis stops Redis with a save (the buckets survive, as with RDB/AOF in production)
# and starts it again after a short outage.
restart_redis() {
    "$REDIS_CLI" -p "$PORT" shutdown save >/dev/null 2>&1 || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
    sleep 0.3
    start_redis
}

# run_fleet PHASE: starts $PROCS drivers for SECONDS_RUN in the background, namespace PHASE.
run_fleet() {
    DRIVER_PIDS=()
    for i in $(seq 1 "$PROCS"); do
        "$DRIVER" run "redis://127.0.0.1:$PORT" "$1" api "$RATE" "$BURST" "$SECONDS_RUN" \
            >"$TMP/$1.$i.out" 2>"$TMP/$1.$i.err" &
        DRIVER_PIDS+=($!)
    done
}

wait_fleet() {
    local rc=0
    for p in "${DRIVER_PIDS[@]}"; do wait "$p" || rc=1; done
    DRIVER_PIDS=()
    [ "$rc" = 0 ] || { fail "$1: a driver failed"; cat "$TMP/$1".*.err; }
}

# grants PHASE prints every grant time, sorted.
grants() { cat "$TMP/$1".*.out | awk '{print $2}' | sort -n; }

# max_window PHASE prints the most grants in any 1-second window [t, t+1).
max_window() {
    grants "$1" | awk '{t[NR] = $1} END {j = 1; m = 0; for (i = 1; i <= NR; i++) {
        while (j <= NR && t[j] < t[i] + 1.0) j++; if (j - i > m) m = j - i } print m}'
}

# Grant times are taken when the driver wakes up from its sleep, so a late wake-up in the
# window that holds the initial burst can count one grant of the next second: allow RATE/10.
check_window() {
    local m lim=$((RATE + BURST + RATE / 10))
    m=$(max_window "$1")
    if [ "$m" -le $lim ]; then pass "$1: max $m calls in a 1 s window (rate + burst $((RATE + BURST)), jitter allowed to $lim)"
    else fail "$1: $m calls in a 1 s window, limit $((RATE + BURST)) (+$((RATE / 10)) jitter)"; fi
}

stat_sum() { cat "$TMP/$1".*.err | grep -o "$2=[0-9]*" | cut -d= -f2 | awk '{s += $1} END {print s + 0}'; }

PORT=$(free_port)
start_redis

# Phase 1: steady rate, with SCRIPT FLUSH mid-run. Load the script first, so every EVAL
# fallback counted during the phase comes from the flush.
"$DRIVER" seq "redis://127.0.0.1:$PORT" warmup api 1 1 1 >/dev/null 2>&1
run_fleet steady
sleep 2
"$REDIS_CLI" -p "$PORT" script flush >/dev/null
wait_fleet steady
check_window steady
total=$(grants steady | wc -l)
want=$((RATE * SECONDS_RUN * 97 / 100))
if [ "$total" -ge "$want" ]; then pass "steady: $total calls in ${SECONDS_RUN}s (>= $want)"
else fail "steady: $total calls in ${SECONDS_RUN}s, want >= $want"; fi
# EVAL caches the script again, so the first caller after the flush re-sends it (others may race).
fallbacks=$(stat_sum steady eval_fallbacks)
if [ "$fallbacks" -ge 1 ]; then pass "steady: NOSCRIPT after SCRIPT FLUSH re-sent with EVAL ($fallbacks times)"
else fail "steady: no NOSCRIPT fallback after SCRIPT FLUSH"; fi

# Phase 2: Redis restart mid-run (about 0.3 s down; reconnect attempts back off from 100 ms).
SECONDS_RUN=5
run_fleet restart
sleep 1.5
restart_redis
restarted=$(date +%s.%N)
wait_fleet restart
check_window restart
gap=$(grants restart | awk 'NR > 1 && $1 - prev > g {g = $1 - prev} {prev = $1} END {printf "%.2f", g}')
after=$(grants restart | awk -v r="$restarted" '$1 >= r + 1.0 && $1 < r + 2.0' | wc -l)
if [ "$after" -ge $((RATE * 9 / 10)) ]; then pass "restart: $after calls in the 2nd second after the restart (longest gap ${gap}s)"
else fail "restart: only $after calls in the 2nd second after the restart (longest gap ${gap}s)"; fi
[ "$(stat_sum restart reconnect_tries)" -ge 1 ] || fail "restart: no reconnect attempt recorded"

# Phase 3: a 2 s fleet pause mid-run.
run_fleet pause
sleep 1.5
read -r p0 p1 < <("$DRIVER" pause "redis://127.0.0.1:$PORT" pause api 2000 2>/dev/null)
wait_fleet pause
check_window pause
# Reserved after the pause was written: must not run before its end (>= p0 + 2 s).
early=$(cat "$TMP"/pause.*.out | awk -v p0="$p0" -v p1="$p1" '$1 > p1 && $2 < p0 + 2.0 - 0.001' | wc -l)
# Reserved before it (in flight, at most ~PROCS/RATE ahead): none may run after p1 + 0.2 s.
inside=$(grants pause | awk -v p0="$p0" -v p1="$p1" '$1 > p1 + 0.2 && $1 < p0 + 2.0 - 0.001' | wc -l)
resumed=$(grants pause | awk -v p0="$p0" '$1 >= p0 + 2.0 && $1 < p0 + 3.0' | wc -l)
[ "$early" = 0 ] && pass "pause: no call reserved after the pause ran during it" ||
    fail "pause: $early calls reserved after the pause ran during it"
[ "$inside" = 0 ] && pass "pause: no call in the 2 s pause" || fail "pause: $inside calls during the pause"
if [ "$resumed" -ge $((RATE * 9 / 10)) ] && [ "$resumed" -le $((RATE + BURST)) ]; then
    pass "pause: $resumed calls in the second after it (resumed at the limit)"
else fail "pause: $resumed calls in the second after it, want $((RATE * 9 / 10))..$((RATE + BURST))"; fi

if [ "$FAILS" -gt 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
echo "all limiter integration checks passed"
