#!/usr/bin/env bash
# A rolling restart (as for an upgrade) of a three-node cluster during one job. The cluster is
# the test's own (rabbit_nodes.sh). The producer (AMQP_URL n1,n2,n3), worker A (n1,n2,n3) and
# worker B (n2,n3,n1) run one job while n1, n2 and n3 are stopped gracefully (rabbitmqctl stop)
# and started again in turn; before each stop, every quorum queue must have its members back
# (rabbitmq-queues check_if_node_is_quorum_critical passes for the node), so a majority is kept
# all along. Each client loses its node once or more and moves on along its list (checked at
# each stop for the clients that were on the node). The job
# completes: producer --wait exits 0, every item once in the output, nothing left in any queue.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

N=700
make_csv $N "$TMP/items.csv"
t_start=$SECONDS
rn_cluster 3
log "cluster of 3 up in $((SECONDS - t_start)) s (AMQP ports $(rn_port n1) $(rn_port n2) $(rn_port n3))"
rn_checks_on n1

# 70 s of work for the fleet, however fast the machine: 1,400 calls at 20 calls/s (the fleet's
# rate limit); the three restarts take some 40 s.
rn_fleet_job "rolling-$$" 170s
on_n1() { rn_clients n1 | grep -qx "flashcard-producer $JOB"; }
wait_until 30 on_n1 || fail "the producer is not on n1"

under_way() { [ "$(done_items)" -ge 50 ]; }
wait_until 60 under_way || fail "the job did not get going: $(done_items) items done"

# moved WHO CLIENT LOG PATTERN: if the connection named CLIENT was on the stopped node ($on), its
# log $TMP/LOG.log must show PATTERN (consuming again on another node) after $t_stop within 30 s;
# appends "WHO seconds" to $moved.
moved() {
    local t=""
    grep -qx "$2" <<<"$on" || return 0
    line_after() { t=$(rn_first_after "$t_stop" "$TMP/$3.log" "$4") && [ -n "$t" ]; }
    wait_until 30 line_after "$@" || fail "$1 did not consume again after its node stopped"
    moved+=" $1 $t"
}

# restart NODE OTHER: stops NODE once no quorum queue depends on it, starts it again, and waits
# until it is back in the cluster (asked of OTHER) with every queue's members online. Logs how
# long the clients that were on NODE took to consume again elsewhere (from the stop command to
# their log line).
restart() {
    local node=$1 other=$2 t0=$SECONDS
    not_critical() { rn_queues "$node" check_if_node_is_quorum_critical >/dev/null 2>&1; }
    wait_until 60 not_critical || fail "$node stays quorum critical: $(rn_queues "$node" check_if_node_is_quorum_critical 2>&1 | tail -3)"
    kill -0 $PROD 2>/dev/null || fail "the producer exited before $node's restart: $(tail -3 "$TMP/producer.log")"
    local d=$(done_items)
    on="" moved="" t_stop=""
    [ "$d" -lt $N ] || fail "the job finished before $node's restart: nothing tested"
    on=$(rn_clients "$node")
    t_stop=$(date +%s.%N)
    rn_stop "$node"
    log "$node stopped with $d of $N items done; it held: $(tr '\n' ';' <<<"$on")"
    moved A "$(hostname):$WA" worker-a "reconnected to the broker"
    moved B "$(hostname):$WB" worker-b "reconnected to the broker"
    moved producer "flashcard-producer $JOB" producer "connected to the broker again"
    rn_restart "$node"
    rn_await "$node"
    back() { [ "$(rn_running_nodes "$other" | wc -l)" = 3 ]; }
    wait_until 60 back || fail "$node did not rejoin: $(rn_running_nodes "$other" | tr '\n' ' ')"
    wait_until 60 rn_members_online "$other" 3 ||
        fail "queues without 3 members online after $node's restart: $(tr '\n' ';' <"$TMP/online")"
    log "$node back, queues whole again, in $((SECONDS - t0)) s; $(done_items) items done; consuming elsewhere after (s):$moved"
}
restart n1 n2
restart n2 n3
restart n3 n1

rn_job_done n1 150 "dead letters after a rolling restart"

# Every client lost its node at least once and consumed again elsewhere (restart checks each
# move). A and the producer start on n1 and then sit on n2 or n3, which restart later: at least
# two moves each; B at least one. Each may move more: RabbitMQ 3.10 sometimes refuses a client
# that arrives during a quorum queue's leader election (541 INTERNAL_ERROR), and it moves on.
a=$(grep -c "reconnected to the broker" "$TMP/worker-a.log" || true)
b=$(grep -c "reconnected to the broker" "$TMP/worker-b.log" || true)
p=$(grep -c "connected to the broker again" "$TMP/producer.log" || true)
[ "$a" -ge 2 ] && [ "$b" -ge 1 ] && [ "$p" -ge 2 ] ||
    fail "reconnections: worker A $a (expected 2 or more), worker B $b (1 or more), producer $p (2 or more)"
log "ok: $N items through a rolling restart; reconnections A $a, B $b, producer $p (run $((SECONDS - t_start)) s)"
