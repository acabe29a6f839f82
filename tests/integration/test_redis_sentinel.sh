#!/usr/bin/env bash
# Redis failover under Sentinel: a primary and a replica (requirepass) and three sentinels, all
# on free loopback ports of their own; workers and producer find the primary through
# REDIS_SENTINELS (REDIS_URL gives only the password). The primary is killed with SIGKILL in
# the middle of a rate-limited job: the sentinels promote the replica, the clients follow, the
# job completes (producer --wait exit 0), every item is in the output exactly once and no queue
# holds anything; the busiest 1 s window at the mock around the failover is measured against the
# limit (figures in docs/redis.md). Then the old primary comes back as a replica and a
# switchover (SENTINEL FAILOVER) promotes it while the workers idle: they leave the old primary
# within seconds (before it is demoted) and a second job completes on the new one.
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
REDIS_SERVER=${REDIS_SERVER:-redis-server}

N=${N:-400}
RATE=${RATE:-40} # calls/s for the fleet; RATE_BURST defaults to one second of it
PW="sen-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# rcli PORT ARGS: redis-cli with the password from the environment (never in argv).
rcli() { local p=$1; shift; REDISCLI_AUTH=$PW redis-cli --no-auth-warning -p "$p" "$@"; }
# scli PORT ARGS: redis-cli to a sentinel (no password).
scli() { local p=$1; shift; redis-cli -p "$p" "$@"; }

# launch PORT CMD...: runs CMD (a redis-server or a sentinel on PORT) in the background, its PID in
# LAUNCHED; returns 0 once PORT answers, 1 if the process exits first: the port was taken since
# free_port saw it free (an outgoing connection may hold any port of the range it draws from).
launch() {
    local port=$1
    shift
    "$@" &
    LAUNCHED=$!
    PIDS+=("$LAUNCHED")
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping 2>&1 | grep -q 'PONG\|NOAUTH' && return 0
        kill -0 "$LAUNCHED" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

USED=" "
# new_port VAR: a free port not drawn before by this test, written to VAR.
new_port() {
    local p
    for _ in $(seq 1 20); do
        p=$(free_port) || continue
        case $USED in *" $p "*) continue ;; esac
        USED="$USED$p "
        printf -v "$1" %s "$p"
        return 0
    done
    fail "no free port"
}

# run_node NAME PORT [ARGS]: launch of a redis-server with the password on PORT; PID in LAUNCHED.
run_node() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$TMP/$name"
    launch "$port" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$TMP/$name" --save '' --appendonly no \
        --requirepass "$PW" --masterauth "$PW" --logfile "$TMP/redis-$name.log" "$@"
}

# start_node VAR NAME [ARGS]: run_node on a new port (up to 5 tried), written to VAR.
start_node() {
    local var=$1 name=$2
    shift 2
    for _ in 1 2 3 4 5; do
        new_port "$var"
        run_node "$name" "${!var}" "$@" && return 0
    done
    fail "redis $name did not start"
}

start_node P1 primary
P1_PID=$LAUNCHED
start_node P2 replica --replicaof 127.0.0.1 "$P1"
link_up() { rcli "$1" info replication | grep -q 'master_link_status:up'; }
wait_until 20 link_up "$P2" || fail "the replica did not sync"

# start_sentinel I: sentinel I (its conf in $TMP/sentinelI) on a new port, written to S<I>.
start_sentinel() {
    local i=$1 var=S$1
    mkdir -p "$TMP/sentinel$i"
    for _ in 1 2 3 4 5; do
        new_port "$var"
        cat >"$TMP/sentinel$i/sentinel.conf" <<EOF
port ${!var}
bind 127.0.0.1
dir $TMP/sentinel$i
logfile $TMP/sentinel-$i.log
sentinel monitor mymaster 127.0.0.1 $P1 2
sentinel auth-pass mymaster $PW
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 4000
sentinel parallel-syncs mymaster 1
EOF
        chmod 600 "$TMP/sentinel$i/sentinel.conf"
        launch "${!var}" "$REDIS_SERVER" "$TMP/sentinel$i/sentinel.conf" --sentinel && return 0
    done
    fail "sentinel $i did not start"
}
for i in 1 2 3; do start_sentinel "$i"; done
# Each sentinel sees the other two and the replica before anything is failed.
sentinels_ready() {
    for s in "$S1" "$S2" "$S3"; do
        scli "$s" sentinel ckquorum mymaster 2>/dev/null | grep -q "OK 3 usable" || return 1
        scli "$s" sentinel replicas mymaster 2>/dev/null | grep -qx "$P2" || return 1
    done
}
wait_until 30 sentinels_ready || fail "the sentinels did not see each other and the replica"
primary_port() { scli "$S1" sentinel get-master-addr-by-name mymaster | tail -1; }
[ "$(primary_port)" = "$P1" ] || fail "the sentinels do not name the primary"

export REDIS_SENTINELS="127.0.0.1:$S1, 127.0.0.1:$S2, 127.0.0.1:$S3" REDIS_SENTINEL_MASTER=mymaster
export REDIS_URL="redis://:$PW@127.0.0.1:1/0" # only the password and db: the host comes from the sentinels
make_csv "$N" "$TMP/items.csv"
start_mock --latency-ms 100 --jitter-ms 50
export API_KEY=sk-sentinel WORKER_COUNT=12 RATE_LIMIT=$((RATE * 60)) BATCH_SIZE=10 CACHE_TTL=0 RETRY_DELAYS=500ms \
    RATE_LIMIT_FALLBACK=pause
for i in 1 2; do start_worker "$i"; done
for i in 1 2; do wait_until 20 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
JOB=sentinel-$$
timeout 240 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout 200s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")

# failover_at LABEL GONE_PORT: waits until the sentinels name another primary than GONE_PORT;
# sets NEW_PORT and UP_MS (when it was first seen, polled every 0.2 s).
failover_at() {
    moved() { local p; p=$(primary_port 2>/dev/null) && [ -n "$p" ] && [ "$p" != "$2" ]; }
    wait_until 60 moved _ "$2" || fail "$1: the sentinels named no new primary"
    UP_MS=$(date +%s%3N)
    NEW_PORT=$(primary_port)
}

# 1. SIGKILL the primary a third of the way through the calls.
wait_until 90 answered_at_least $((2 * N / 3)) || fail "the job did not get going ($(mock_answered) calls)"
kill1_ms=$(date +%s%3N)
kill -9 "$P1_PID"
failover_at "kill" "$P1"
up1_ms=$UP_MS
[ "$NEW_PORT" = "$P2" ] || fail "the sentinels named $NEW_PORT, not the replica $P2"
log "primary killed; the replica was named primary $((up1_ms - kill1_ms)) ms later"

prc=0
wait "$PROD" || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"
end_ms=$(date +%s%3N)
assert_all_succeeded "$N" "$TMP/out.tsv" "items dead-lettered across a Redis failover"
# Nothing left in any of the job's queues (the quorum queues' counts lag: poll).
queues_empty() {
    $SUDO rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null >"$TMP/queues.txt" || return 1
    awk -v p="$QUEUE_PREFIX." 'index($1, p) == 1 && $2 != 0 {bad = 1} END {exit bad}' "$TMP/queues.txt"
}
wait_until 20 queues_empty || fail "queues not empty: $(grep "$QUEUE_PREFIX" "$TMP/queues.txt" | tr '\n' ' ')"
final=$(rcli "$P2" hlen "$QUEUE_PREFIX:job:{$JOB}:outcome")
[ "$final" = "$N" ] || fail "$final outcomes of $N on the new primary"

# The limit around the failover: the busiest 1 s window from 2 s before the kill to 10 s after
# the new primary was named, against RATE + RATE_BURST (= 2 x RATE) per 1 s window.
L=$TMP/mock-requests.log
read -r all_max _ < <("$MOCKLOG" maxwin "$L" 1000)
read -r k_max k_at < <("$MOCKLOG" maxwin "$L" 1000 $((kill1_ms - 2000)) $((up1_ms + 10000)))
gap1=$("$MOCKLOG" count "$L" "$kill1_ms" "$up1_ms")
# Calls resume by the limiter's next try (its backoff doubles from 100 ms up to 5 s while Redis fails).
after1=$("$MOCKLOG" count "$L" "$up1_ms" $((up1_ms + 8000)))
resumed=$(awk -v t="$up1_ms" '$1 >= t && (m == "" || $1 < m) {m = $1} END {print m}' "$L")
read -r t0 t1 calls < <("$MOCKLOG" span "$L")
# Bound: one burst over the normal rate + burst (what a lost bucket state can add).
limit=$((3 * RATE + RATE / 10))
[ "$k_max" -le $limit ] || fail "$k_max calls in the 1 s window from $k_at around the kill (bound $limit)"
[ "$after1" -ge "$RATE" ] || fail "only $after1 calls in the 8 s after the new primary was named"

# 2. Switchover while the workers are idle: the old primary returns as a replica and
# SENTINEL FAILOVER promotes it. The node the clients are connected to keeps taking writes
# until a sentinel converts it (about 10 s later, discarding them): the clients must leave it
# as soon as the sentinels name the new primary (they ask every second), not wait for READONLY.
# On its own port again (the sentinels know it): retried while something else holds the port.
restarted=""
for _ in $(seq 1 10); do
    run_node primary-again "$P1" --replicaof 127.0.0.1 "$P2" && { restarted=1; break; }
    sleep 0.5
done
[ -n "$restarted" ] || fail "the old primary did not restart on port $P1"
wait_until 30 link_up "$P1" || fail "the old primary did not sync as a replica"
replica_known() {
    scli "$S1" sentinel replicas mymaster >"$TMP/replicas.txt" || return 1
    awk -v p="$P1" 'prev == "port" && $0 == p {f = 1} {prev = $0} END {exit !f}' "$TMP/replicas.txt" &&
        ! grep -q 's_down\|disconnected' "$TMP/replicas.txt"
}
wait_until 30 replica_known || fail "the sentinels did not see the old primary back as a replica"
switch_ms=$(date +%s%3N)
asked=""
for _ in $(seq 1 40); do # refused while a failover is still settling
    scli "$S1" sentinel failover mymaster | grep -q OK && { asked=1; break; }
    sleep 0.5
done
[ -n "$asked" ] || fail "SENTINEL FAILOVER refused"
failover_at "switchover" "$P2"
up2_ms=$UP_MS
[ "$NEW_PORT" = "$P1" ] || fail "the switchover named $NEW_PORT, not $P1"
# Only the sentinels (named sentinel-*) and this redis-cli stay connected to the old primary.
others_on() { rcli "$1" client list | grep -v ' name=sentinel-' | grep -vc ' cmd=client' || true; }
left_p2() { [ "$(others_on "$P2")" = 0 ]; }
wait_until 8 left_p2 || fail "$(others_on "$P2") clients still on the old primary 8 s after the switchover"
left_ms=$(date +%s%3N)
[ "$(rcli "$P2" role | sed -n 1p)" = master ] && zombie="still a primary" || zombie="already a replica"
log "switchover: $P1 named primary $((up2_ms - switch_ms)) ms after asking; the clients left $P2" \
    "($zombie) within $((left_ms - up2_ms)) ms"
N2=60
make_csv "$N2" "$TMP/items2.csv"
prc=0
timeout 120 "$PRODUCER" "$TMP/items2.csv" --job-id "$JOB-2" --wait --timeout 100s --output "$TMP/out2.tsv" \
    >"$TMP/producer-2.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer (after the switchover) exit $prc"
assert_all_succeeded "$N2" "$TMP/out2.tsv" "items dead-lettered after a switchover"
final=$(rcli "$P1" hlen "$QUEUE_PREFIX:job:{$JOB-2}:outcome")
[ "$final" = "$N2" ] || fail "$final outcomes of $N2 on the new primary after the switchover"
! grep -qF "$PW" "$TMP"/*.log || fail "the password appears in a log"
log "ok: $N items, $calls calls in $(((t1 - t0) / 1000)) s at $RATE/s (burst $RATE); kill: no primary for" \
    "$((up1_ms - kill1_ms)) ms, $gap1 calls then (reserved before), busiest 1 s around it $k_max, whole run" \
    "$all_max (normal bound $((2 * RATE))); first call $((resumed - up1_ms)) ms after, $after1 in 8 s;" \
    "$(((end_ms - kill1_ms) / 1000)) s" \
    "from kill to done; then $N2 items after a switchover"
