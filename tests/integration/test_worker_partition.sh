#!/usr/bin/env bash
# Network partition of a worker: worker 1 runs in its own network namespace, joined to the root
# namespace by a veth pair (RabbitMQ, Redis and the mock API reached through forwarders on the
# root side). Mid-batch, with calls in flight and batches unacked, its link goes down: the broker
# misses its heartbeats (HEARTBEAT=4s), closes its connection and redelivers what it held to
# worker 2, in the root namespace. When the link returns, worker 1 reconnects by itself and
# consumes again. Its late work duplicates nothing: each item is once in the output, the queues of
# the prefix end empty, and a second job done by worker 1 alone shows it works again.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns.sh"
trap 'netns_down; cleanup' EXIT

N=160
make_csv $N "$TMP/items.csv"
netns_need_socat
netns_up
start_mock --latency-ms 200 # 4 calls in flight: 20 calls/s for worker 1, 10 for worker 2 (2 in flight)
export API_KEY=sk-partition RATE_LIMIT=0 BATCH_SIZE=8 WORKER_COUNT=4
JOB=partition-$$

# Worker 1 reaches the services through the forwarders only. (Started with ip netns exec, not a
# shell function, so that $! is the worker itself: the subshell and ip exec it.)
netns_via "$AMQP_URL" 5672
W1_AMQP=$NS_URL
netns_via "$REDIS_URL" 6379
W1_REDIS=$NS_URL
netns_via "$API_BASE_URL" 80
W1_API=$NS_URL
for port in "${NS_FORWARDED_PORTS[@]}"; do
    netns_reaches "$port" || fail "port $port of $NS_ROOT_IP is not reachable from the namespace"
done

# (The URLs go through the environment, not argv: they may hold passwords.)
(
    export AMQP_URL=$W1_AMQP REDIS_URL=$W1_REDIS API_BASE_URL=$W1_API HEARTBEAT=4s
    exec ip netns exec "$NS_NAME" "$WORKER"
) >"$TMP/worker-1.log" 2>&1 &
W1=$!
PIDS+=("$W1")
wait_until 10 netns_holds $W1 || fail "worker 1 is not in the namespace"
wait_until 20 grep -q "consuming $QUEUE_PREFIX.batches" "$TMP/worker-1.log" || fail "worker 1 did not start consuming"
# w1_connection: the broker's name of worker 1's connection (empty if it has none).
w1_connection() {
    mgmt "$MGMT/connections" | jq -r --arg n "$(hostname):$W1" \
        '[.[] | select(.client_properties.connection_name == $n)][0].name // empty'
}
w1_connected() { [ -n "$(w1_connection)" ]; }
wait_until 20 w1_connected || fail "worker 1's connection is not listed by the broker"

# (Not under timeout(1): the cleanup's kill -9 would not reach the producer. --timeout bounds it.)
"$PRODUCER" "$TMP/items.csv" --job-id $JOB --wait --timeout 100s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")

# now_ms: sets NOW_MS to the wall clock in ms (the mock logs its arrival times on it), without a fork.
now_ms() { local t=${EPOCHREALTIME/[.,]/}; NOW_MS=$((t / 1000)); }

# The cut: once worker 1 has done a few batches (16 calls each) and is busy with the next ones.
w1_calls() { awk -v w=":$W1)" 'index($5, w) {n++} END {print n + 0}' "$TMP/mock-requests.log" 2>/dev/null; }
w1_busy() { [ "$(w1_calls)" -ge 40 ] && [ "$(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq .in_flight)" -gt 0 ]; }
wait_until 60 w1_busy || fail "worker 1 never got going ($(w1_calls) calls)"
netns_cut || fail "cannot cut the link"
now_ms; cut_ms=$NOW_MS # just after the cut: no answer sent later than this reached worker 1
log "link cut after $(w1_calls) calls of worker 1"
# Worker 2 is slower: work is left when worker 1 comes back (about 15 s after the cut).
start_worker 2 --worker-count 2
W2=$LAST_PID

# The broker misses worker 1's heartbeats and closes its connection (with the link down, nothing
# else can close it), requeueing what worker 1 held; worker 1 notices the silence too, and drops
# what it held.
w1_disconnected() { local c; c=$(w1_connection) && [ -z "$c" ]; }
wait_until 40 w1_disconnected || fail "the broker kept worker 1's connection"
wait_until 40 grep -q "broker connection lost" "$TMP/worker-1.log" || fail "worker 1 did not notice the partition"
grep -q "broker connection lost.*dropping held batches" "$TMP/worker-1.log" ||
    fail "worker 1 held no batch when its link went down: nothing tested"
now_ms
log "the broker closed worker 1's connection, worker 1 dropped its batches: $((NOW_MS - cut_ms)) ms after the cut"
# The link stays down until worker 1 has failed to reconnect at least once (its connect times out).
wait_until 40 grep -q "cannot reach the broker" "$TMP/worker-1.log" || fail "worker 1 did not try to reconnect"
netns_restore || fail "cannot restore the link"
now_ms
log "link back $((NOW_MS - cut_ms)) ms after the cut"

wait_until 60 grep -q "reconnected to the broker" "$TMP/worker-1.log" || fail "worker 1 did not reconnect"
kill -0 $W1 || fail "worker 1 exited"
log "worker 1: $(grep -o "reconnected to the broker.*" "$TMP/worker-1.log" | head -1)"
w1_consuming() {
    local c
    c=$(w1_connection) && [ -n "$c" ] || return 1
    mgmt "$MGMT/consumers/%2F" | jq -e --arg c "$c" --arg q "$QUEUE_PREFIX.batches" \
        'any(.[]; (.channel_details | objects | .connection_name) == $c and .queue.name == $q)' >/dev/null
}
# (A consumer whose channel the statistics do not know yet has "channel_details": [].)
wait_until 30 w1_consuming || fail "worker 1 reconnected but does not consume $QUEUE_PREFIX.batches"

prc=0
wait $PROD || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"

# Worker 1 held unacked batches at the cut: calls it had made were answered after the cut (the
# answers went nowhere), and their batches, never acked, were redelivered: each of those calls
# was made again after the cut.
awk -v w=":$W1)" -v t="$cut_ms" 'index($5, w) && $1 < t && $1 + $6 > t {print $3, $4}' \
    "$TMP/mock-requests.log" | sort -u >"$TMP/cut-inflight.calls"
awk -v t="$cut_ms" '$1 > t {print $3, $4}' "$TMP/mock-requests.log" | sort -u >"$TMP/after-cut.calls"
[ -s "$TMP/cut-inflight.calls" ] || fail "worker 1 had no call in flight at the cut: nothing tested"
lost=$(comm -23 "$TMP/cut-inflight.calls" "$TMP/after-cut.calls" | head -5 | tr '\n' ' ')
[ -z "$lost" ] || fail "calls in flight at the cut were not made again (batch not redelivered?): $lost"
log "$(wc -l <"$TMP/cut-inflight.calls") calls of worker 1 were in flight at the cut, all made again after it"

# No duplicate, though the batches worker 1 held were done twice: each position is in the output
# with exactly its two cards; nothing dead, the work queue empty.
twice=$(tail -n +2 "$TMP/out.tsv" | cut -f1 | sort -n | uniq -c | awk '$1 != 2 {print $2 "(" $1 ")"}' | head -5)
[ -z "$twice" ] || fail "positions not exactly once (with 2 cards) in the output: $twice"
assert_all_succeeded $N "$TMP/out.tsv" "items dead-lettered after a partition"
# Worker 1 came back in time to take part: it made calls of the job after the link returned.
w1_late=$(awk -v w=":$W1)" -v t="$cut_ms" '$1 > t && index($5, w)' "$TMP/mock-requests.log" | wc -l)
[ "$w1_late" -gt 0 ] || fail "worker 1 made no call of the job after the link returned"
log "worker 1 made $w1_late calls of the job after the link returned"

# Worker 1 works again: a second job with worker 2 stopped is done by worker 1 alone.
kill -TERM "$W2"
wrc=0
wait "$W2" || wrc=$?
[ $wrc = 0 ] || fail "worker 2 exit $wrc after SIGTERM"
N2=16 # new terms: answers not cached, so worker 1 calls the API again
{ echo "position,term,type"; seq 1 $N2 | awk '{printf "%d,다시%d,noun\n", $1, $1}'; } >"$TMP/items2.csv"
now_ms; job2_ms=$NOW_MS
prc=0
timeout 60 "$PRODUCER" "$TMP/items2.csv" --job-id $JOB-after --wait --timeout 45s --output "$TMP/out2.tsv" \
    >"$TMP/producer2.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "second job: producer exit $prc (worker 1 not working after the partition?)"
w1_after=$(awk -v w=":$W1)" -v t="$job2_ms" '$1 >= t && index($5, w)' "$TMP/mock-requests.log" | wc -l)
others=$(awk -v w=":$W1)" -v t="$job2_ms" '$1 >= t && !index($5, w)' "$TMP/mock-requests.log" | wc -l)
[ "$others" = 0 ] || fail "second job: $others calls not made by worker 1"
[ "$w1_after" -ge $((2 * N2)) ] || fail "second job: worker 1 made $w1_after calls for $N2 items"
tsv_positions "$TMP/out2.tsv" >"$TMP/results2.pos"
seq 1 $N2 | diff -q - "$TMP/results2.pos" >/dev/null || fail "second job: not every item once in the output"
[ "$(tail -n +2 "$TMP/out2.tsv" | wc -l)" = $((2 * N2)) ] || fail "second job: duplicate or missing cards"

# Nothing left in any queue of the prefix (late results of a finished job included). The quorum
# queue's figures refresh every few seconds: poll.
prefix_queues_empty() {
    local out
    out=$($SUDO rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null) || return 1
    awk -v p="$QUEUE_PREFIX." 'index($1, p) == 1 {seen++; if ($2 != 0) bad++}
        END {exit !(seen > 0 && bad == 0)}' <<<"$out"
}
wait_until 20 prefix_queues_empty ||
    fail "messages left in queues of the prefix: $($SUDO rabbitmqctl list_queues -q --no-table-headers name messages |
        awk -v p="$QUEUE_PREFIX." 'index($1, p) == 1 && $2 != 0' | tr '\n' ' ')"
log "ok"
