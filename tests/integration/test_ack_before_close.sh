#!/usr/bin/env bash
# Acks sent just before a worker closes its connection are not lost, so no batch is done twice.
# RabbitMQ 3.10's quorum queue client, in the channel process, sends the queue at most
# quorum_commands_soft_limit (32) commands its log has not applied yet, holds the acks beyond
# them until it has, and drops the ones it still holds when the channel closes: their batches
# came back and were done again. fc_amqp_close now waits for them (common/fc_amqp.c).
# The worker acks a batch only after its outcome is confirmed and recorded in Redis, so its acks
# trickle (about one per 0.6 ms here); to lose some, the queue's log must fall behind them. The
# test's own node (rabbit_nodes.sh, beside the main broker) therefore plays a slow disk: its
# write-ahead log is stalled 100 ms of every 120 around the stop, and its soft limit is 1, so
# the few acks sent within one stall are held back (at 32 it takes 33 of them).
# A worker holds one-item batches (BATCH_SIZE=1, PREFETCH=200) with 100 calls in flight when it
# is sent SIGTERM; the calls end together and their batches are acked just before it closes.
# A second worker finishes the job: every (stage, item) pair is called exactly once (no cache: a
# batch done twice calls the API twice) and every item ends once.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

N=150
make_csv $N "$TMP/items.csv"
t_start=$SECONDS
mkdir -p "$RN_DIR/n1"
echo "[{rabbit, [{quorum_commands_soft_limit, 1}]}]." >"$RN_DIR/n1/advanced.config"
rn_start n1
start_mock --latency-ms 1500
rn_await n1
log "node n1 up in $((SECONDS - t_start)) s (AMQP port $(rn_port n1))"
rn_checks_on n1
[ "$(rn_ctl n1 eval 'application:get_env(rabbit, quorum_commands_soft_limit).')" = "{ok,1}" ] ||
    fail "quorum_commands_soft_limit is not 1 on n1"

export AMQP_URL
AMQP_URL=$(rn_url n1)
export API_KEY=sk-ackclose WORKER_COUNT=100 PREFETCH=200 BATCH_SIZE=1 RATE_LIMIT=0 CACHE_TTL=0 \
    SHUTDOWN_TIMEOUT=20s
JOB=ackclose-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"

start_worker 1
W1=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-1.log" || fail "worker 1 did not start"
# The stall: a process on n1 suspends the log writer (sys:suspend: it ends the write in hand,
# then waits) for 100 ms and lets it run 20 ms, for at most 60 s (500 turns) or until it is sent
# stop, below once worker 1 is gone. fc_amqp_close's wait (300 ms) spans two of its turns. It
# starts before the job (rabbitmqctl may take seconds on a busy machine; SIGTERM must not wait).
rn_ctl n1 eval 'W = whereis(ra_log_wal), P = spawn(fun() -> group_leader(whereis(user), self()),
    L = fun Loop(0) -> ok; Loop(K) -> sys:suspend(W), R = receive stop -> stop after 100 -> go end,
        sys:resume(W), R =:= go andalso begin timer:sleep(20), Loop(K - 1) end end, L(500) end),
    register(ackclose_stall, P), ok.' >/dev/null || fail "cannot stall the log of n1"
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"

# The first wave of 100 calls is answered together and the second starts (each takes 1.5 s):
# SIGTERM once most of the second has reached the mock.
wait_until 60 answered_at_least 100 || fail "worker 1 never got going"
second_wave() { [ "$(mock_requests)" -ge 180 ]; }
wait_until 20 second_wave || fail "worker 1 did not start its second wave of calls"
answered_at_term=$(mock_answered)
kill -TERM "$W1"
rc=0
timeout 30 tail -s 0.1 --pid="$W1" -f /dev/null || fail "worker 1 still running 30 s after SIGTERM"
wait "$W1" || rc=$?
stalling=$(rn_ctl n1 eval 'case whereis(ackclose_stall) of undefined -> gone; P -> P ! stop, stopped end.')
[ "$stalling" = stopped ] || fail "the stall of n1's log was over before worker 1 stopped ($stalling)"
[ $rc = 0 ] || fail "worker 1 exit $rc after SIGTERM"
grep -q "stopped cleanly" "$TMP/worker-1.log" || fail "worker 1 did not stop cleanly"
! grep -q "not confirmed within SHUTDOWN_TIMEOUT" "$TMP/worker-1.log" || fail "worker 1's outcomes were not confirmed"
# Each call answered after SIGTERM ended a different batch (one item each), acked before the close.
acked_late=$(($(mock_answered) - answered_at_term))
log "worker 1: $acked_late calls answered after SIGTERM, their batches acked just before its close"
[ "$acked_late" -ge 40 ] || fail "only $acked_late batches ended after SIGTERM: nothing tested"

mock_control '{"latency_ms":20}'
start_worker 2
W2=$LAST_PID
all_done() { [ "$(redis-cli hlen "$OUTCOME")" = $N ]; }
wait_until 90 all_done || fail "the job did not finish: $(redis-cli hlen "$OUTCOME") of $N"

# The mock's request log: time status stage position user-agent ...
awk '$2 != 200' "$TMP/mock-requests.log" >"$TMP/not200"
[ ! -s "$TMP/not200" ] || fail "calls not answered 200: $(head -3 "$TMP/not200")"
awk '{print $3, $4}' "$TMP/mock-requests.log" | sort | uniq -d >"$TMP/twice"
[ ! -s "$TMP/twice" ] || fail "$(wc -l <"$TMP/twice") stage/item pairs called twice (acked batches delivered \
again): $(head -5 "$TMP/twice" | tr '\n' ';')"
[ "$(wc -l <"$TMP/mock-requests.log")" = $((2 * N)) ] || fail "$(wc -l <"$TMP/mock-requests.log") calls for $N items"

prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 45s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"
assert_all_succeeded $N "$TMP/out.tsv" "dead letters after a graceful stop"
kill -0 "$W2" || fail "worker 2 died"
log "ok in $((SECONDS - t_start)) s"
