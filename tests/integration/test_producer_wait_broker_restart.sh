#!/usr/bin/env bash
# The producer waiting on a job rides out its broker going away for 15 s (as a node's restart
# does): its only path to RabbitMQ is a TCP proxy, killed mid-wait and started again on the same
# port 15 s later. The producer reconnects, collects every result and exits 0; the workers,
# connected directly, never notice. Every item is in the output exactly once.
. "$(dirname "$0")/lib.sh"

export RATE_LIMIT=0
N=300
make_csv $N "$TMP/in.csv"
start_mock --latency-ms 100
for i in 1 2; do start_worker w$i --worker-count 4; done
amqp_port=$(sed -E 's|.*@[^:/]+:([0-9]+).*|\1|' <<<"$AMQP_URL")
[[ $amqp_port =~ ^[0-9]+$ ]] || amqp_port=5672
start_proxy() {
    perl "$(dirname "$0")/tcp_proxy.pl" "$TMP/proxy.port" "$amqp_port" "$@" 2>>"$TMP/proxy.log" &
    PROXY=$!
    PIDS+=("$PROXY")
    wait_until 10 test -s "$TMP/proxy.port" || fail "the proxy did not start"
}
start_proxy
port=$(cat "$TMP/proxy.port")
AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f" BATCH_SIZE=10 "$PRODUCER" "$TMP/in.csv" --wait \
    --output "$TMP/out.tsv" --timeout 240s >"$TMP/producer.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")
wait_until 60 answered_at_least 100 || fail "the job did not start"
kill -0 $PROD 2>/dev/null || fail "the producer ended before the broker went away"
rm -f "$TMP/proxy.port"
{ kill -9 $PROXY && wait $PROXY; } 2>/dev/null || true
t_down=$SECONDS
lost() { grep -q "lost the broker while waiting" "$TMP/producer.log"; }
wait_until 20 lost || fail "the producer did not notice the broker went away"
sleep 15
kill -0 $PROD 2>/dev/null || fail "the producer gave up during a 15 s outage: $(tail -3 "$TMP/producer.log")"
start_proxy "$port"
rc=0
wait $PROD || rc=$?
[ $rc = 0 ] || fail "producer exit $rc after the broker came back"
grep -q "connected to the broker again" "$TMP/producer.log" || fail "the producer did not say it reconnected"
assert_all_succeeded $N "$TMP/out.tsv" "items dead-lettered"
log "ok: the producer sat out a $((SECONDS - t_down))-s outage window (broker away 15 s) and collected all $N"
