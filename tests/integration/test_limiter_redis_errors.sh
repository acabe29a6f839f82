#!/usr/bin/env bash
# A Redis that answers errors must not turn the fleet limit off. A worker is pointed at a
# redis-server of its own that refuses every grant: (a) one with requirepass, the worker given
# a wrong password (AUTH fails at every connect); (b) one at maxmemory 1 with noeviction (every
# write, so every reservation, is refused with OOM). The producer records its job in the normal
# Redis. With RATE_LIMIT_FALLBACK=local the mock API sees no more calls than the local share
# allows; with RATE_LIMIT_FALLBACK=pause it sees none. Neither Redis log nor worker log holds
# the password.
. "$(dirname "$0")/lib.sh"
REDIS_SERVER=${REDIS_SERVER:-redis-server}

N=100        # items: 200 calls, far more than any bounded run may make
RUN_S=6      # how long each worker runs
BURST=2
PASSWORD="right-$$-pass"
WRONG="wrong-$$-pass"

# start_bad_redis NAME ARGS...: a redis-server on a free loopback port with extra ARGS; sets
# BAD_PORT. A port free_port found unused may still be taken by the time redis-server binds it
# (it only sees listeners, not the ephemeral ports of client connections): then another one.
start_bad_redis() {
    local name=$1; shift
    local cli=(redis-cli --no-auth-warning)
    [ "$name" = auth ] && cli+=(-a "$PASSWORD")
    mkdir -p "$TMP/redis-$name"
    for _ in 1 2 3 4 5; do
        BAD_PORT=$(free_port) || fail "no free port"
        "$REDIS_SERVER" --port "$BAD_PORT" --bind 127.0.0.1 --dir "$TMP/redis-$name" --save '' --appendonly no \
            --logfile "$TMP/redis-$name.log" "$@" &
        local pid=$!
        PIDS+=("$pid")
        for _ in $(seq 1 100); do
            "${cli[@]}" -p "$BAD_PORT" ping >/dev/null 2>&1 && return 0
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    done
    fail "redis-server ($name) did not start"
}

# run_worker NAME URL FALLBACK: runs one worker against URL for RUN_S seconds; sets CALLS (the
# requests the mock received meanwhile) and ELAPSED_MS (from the worker's start to its kill).
run_worker() {
    local name=$1 url=$2 fallback=$3 before t0 pid
    before=$(mock_requests)
    t0=$(date +%s%3N)
    REDIS_URL=$url RATE_LIMIT_FALLBACK=$fallback start_worker "$name"
    pid=$LAST_PID
    wait_until 10 grep -q consuming "$TMP/worker-$name.log" || fail "worker $name did not start"
    sleep "$RUN_S"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ELAPSED_MS=$(($(date +%s%3N) - t0))
    sleep 0.3 # a request sent just before the kill reaches the mock's count
    CALLS=$(($(mock_requests) - before))
}

# check_log NAME WHY: the worker said Redis was unavailable and why, and never the password.
check_log() {
    local f="$TMP/worker-$1.log"
    grep -q "redis unavailable.*$2" "$f" || fail "worker $1 did not say Redis was unavailable ($2)"
    ! grep -q -e "$WRONG" -e "$PASSWORD" "$f" || fail "worker $1 logged the password"
}

# check_local NAME: the local share is RATE_LIMIT / FLEET_SIZE = 1/s with burst 2, so at most
# BURST + elapsed seconds (rounded up) calls, + 1 of slack for a call granted at the very edge
# of the window. At least one call shows the local share was applied rather than a pause.
check_local() {
    local max=$((BURST + (ELAPSED_MS + 999) / 1000 + 1))
    [ "$CALLS" -le "$max" ] || fail "$1: $CALLS calls in $ELAPSED_MS ms, the local share allows $max"
    [ "$CALLS" -ge 1 ] || fail "$1: no call in $ELAPSED_MS ms: the local share was not applied"
    log "$1: $CALLS calls in $ELAPSED_MS ms (at most $max)"
}

check_paused() {
    [ "$CALLS" -eq 0 ] || fail "$1: $CALLS calls in $ELAPSED_MS ms while paused"
    log "$1: no calls in $ELAPSED_MS ms"
}

make_csv "$N" "$TMP/items.csv"
start_mock --latency-ms 5
export API_KEY=sk-redis-errors WORKER_COUNT=8 CACHE_TTL=0 BATCH_SIZE=10 RETRY_DELAYS=200ms
export RATE_LIMIT=60 RATE_BURST=$BURST FLEET_SIZE=1
# The producer records the job in the normal Redis ($REDIS_URL); only the workers get the bad one.
# The shared work queue: a worker learns of jobs with a queue of their own from Redis, which it cannot read here.
FAIR_SHARE=0 timeout 30 "$PRODUCER" "$TMP/items.csv" --job-id "rlerr-$$" >"$TMP/producer.log" 2>&1 ||
    fail "producer exit $?"

# (a) Wrong password: AUTH fails at every (re)connect.
start_bad_redis auth --requirepass "$PASSWORD"
run_worker auth-local "redis://:$WRONG@127.0.0.1:$BAD_PORT/0" local
check_local "wrong password, local"
check_log auth-local WRONGPASS
run_worker auth-pause "redis://:$WRONG@127.0.0.1:$BAD_PORT/0" pause
check_paused "wrong password, pause"
check_log auth-pause WRONGPASS

# (b) maxmemory with noeviction: every reservation (a write) is refused with OOM.
start_bad_redis oom --maxmemory 1 --maxmemory-policy noeviction
run_worker oom-local "redis://127.0.0.1:$BAD_PORT/0" local
check_local "OOM, local"
check_log oom-local OOM
run_worker oom-pause "redis://127.0.0.1:$BAD_PORT/0" pause
check_paused "OOM, pause"
check_log oom-pause OOM
log "ok"
