#!/usr/bin/env bash
# Losing a node of a three-node cluster in the middle of a job. The cluster is the test's own
# (rabbit_nodes.sh: three nodes on this machine, beside the main broker). The producer
# (AMQP_URL n1,n2,n3) and worker A (n1,n2,n3) are on n1, worker B (n2,n3,n1) on n2; with batches
# held, n1 is killed (SIGKILL: no goodbye to its clients or peers), stays down 10 s, then boots
# again and rejoins. The quorum queues keep a majority (2 of 3) all along: the producer and
# worker A move to the next node of their lists, the batches A held come again, and the job
# completes: producer --wait exits 0, every item once in the output, nothing left in any queue.
# The failover times (kill -> worker A / the producer consuming again elsewhere) are logged.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

N=500
make_csv $N "$TMP/items.csv"
t_start=$SECONDS
rn_cluster 3
log "cluster of 3 up in $((SECONDS - t_start)) s (AMQP ports $(rn_port n1) $(rn_port n2) $(rn_port n3))"
rn_checks_on n2

# 50 s of work for the fleet, however fast the machine: 1,000 calls at 20 calls/s (the fleet's
# rate limit). n1 is killed after 10 s and is back some 20-25 s later, well before the end.
rn_fleet_job "nodeloss-$$" 150s

# Who is where, as the nodes see it.
on_n1() { rn_clients n1 >"$TMP/n1.clients" && grep -qx "flashcard-producer $JOB" "$TMP/n1.clients" &&
    grep -qx "$(hostname):$WA" "$TMP/n1.clients"; }
wait_until 30 on_n1 || fail "n1 does not hold the producer and worker A: $(tr '\n' ';' <"$TMP/n1.clients")"
rn_clients n2 | grep -qx "$(hostname):$WB" || fail "n2 does not hold worker B"
log "n1 holds: $(tr '\n' ';' <"$TMP/n1.clients") n2 holds: $(rn_clients n2 | tr '\n' ';')"

under_way() { [ "$(done_items)" -ge 100 ]; }
wait_until 60 under_way || fail "the job did not get going: $(done_items) items done"
# held_count: the batches the workers hold (unacked) of the job's queue and the shared one.
held_count() {
    rn_ctl n2 list_queues --no-table-headers name messages_unacknowledged 2>/dev/null |
        awk -v q="$QUEUE_PREFIX.batches" -v j="$QUEUE_PREFIX.$(job_queue "$JOB")" '$1 == q || $1 == j { n += $2; seen++ }
            END { if (seen) print n }'
}
held() { [ "$(held_count)" -gt 0 ] 2>/dev/null; }
wait_until 15 held || fail "no batch held by the workers"
kill -0 $PROD 2>/dev/null || fail "the producer exited before the node loss: $(tail -3 "$TMP/producer.log")"

rn_kill n1
t_kill=$(date +%s.%N)
done_at_kill=$(done_items)
log "n1 killed with $done_at_kill of $N items done, batches held"
[ "$done_at_kill" -lt $((N * 2 / 3)) ] || fail "the job was nearly done at the node loss: nothing tested"

# Failover: worker A consumes again on another node, and the producer too.
wait_until 30 grep -q "reconnected to the broker" "$TMP/worker-a.log" || fail "worker A did not reconnect"
line=$(grep -m1 "reconnected to the broker" "$TMP/worker-a.log")
grep -q "localhost:$(rn_port n1) " <<<"$line" && fail "worker A reconnected to the dead n1?"
failover_a=$(rn_since "$t_kill" "$line")
wait_until 30 grep -q "connected to the broker again" "$TMP/producer.log" || fail "the producer did not reconnect"
line=$(grep -m1 "connected to the broker again" "$TMP/producer.log")
failover_p=$(rn_since "$t_kill" "$line")
log "failover: worker A consuming again after ${failover_a} s, the producer after ${failover_p} s"
progress() { [ "$(done_items)" -gt $((done_at_kill + 20)) ]; }
wait_until 30 progress || fail "no progress with n1 down: $(done_items) items done"
log "with n1 down: $(done_items) items done"

# The outage itself lasts a fixed 10 s (what is being simulated, not a wait for something).
sleep 10
t_up=$SECONDS
rn_restart n1
rn_await n1
rejoined() { [ "$(rn_running_nodes n2 | wc -l)" = 3 ]; }
wait_until 60 rejoined || fail "n1 did not rejoin: $(rn_running_nodes n2 | tr '\n' ' ')"
log "n1 back in the cluster $((SECONDS - t_up)) s after its start, $(done_items) items done"

rn_job_done n2 120 "dead letters after a node loss"
# Every quorum queue has its three members online again.
wait_until 30 rn_members_online n2 3 || fail "queues without 3 members online: $(tr '\n' ';' <"$TMP/online")"
log "ok: $N items, node loss survived (run $((SECONDS - t_start)) s)"
