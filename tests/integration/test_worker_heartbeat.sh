#!/usr/bin/env bash
# Heartbeats keep flowing while API calls are slow: HEARTBEAT=2s and every call takes 10 s
# (API_TIMEOUT=30s). The event loop serves the AMQP socket while the calls are in flight, so
# the broker never drops the connection: no "connection lost" in the log, and no batch is
# redelivered (the mock saw each position's stage-1 and stage-2 call exactly once).
. "$(dirname "$0")/lib.sh"

N=16
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 10000
export API_KEY=sk-heartbeat WORKER_COUNT=16 RATE_LIMIT=0 BATCH_SIZE=8 HEARTBEAT=2s API_TIMEOUT=30s
start_worker 1
prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id hb-$$ --wait --timeout 50s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"

# The broker agreed to the 2 s heartbeat (so missing ones would have been noticed).
conn=$(mgmt "$MGMT/connections" | jq -r --arg n "$(hostname):$LAST_PID" \
    '[.[] | select(.client_properties.connection_name == $n)][0].timeout')
[ "$conn" = 2 ] || fail "worker connection heartbeat is '$conn', expected 2"
! grep -qi "connection lost" "$TMP/worker-1.log" || fail "the worker lost its broker connection"
! grep -qi "missed heartbeats" "$TMP/worker-1.log" || fail "missed heartbeats"
for stage in 1 2; do
    awk -v s=$stage '$3 == s {print $4}' "$TMP/mock-requests.log" | sort -n >"$TMP/stage$stage.pos"
    [ "$(wc -l <"$TMP/stage$stage.pos")" = $N ] || fail "stage $stage: $(wc -l <"$TMP/stage$stage.pos") calls for $N items"
    seq 1 $N | diff -q - "$TMP/stage$stage.pos" >/dev/null || fail "stage $stage: some position called twice"
done
# The calls really were slow.
awk '$6 < 9500 {bad++} END {exit bad > 0}' "$TMP/mock-requests.log" || fail "some calls were faster than 9.5 s"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
# The management API's queue figures lag up to 5 s (collect_statistics_interval).
work_drained() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_drained || fail "work queue not empty: $(queue_depth batches) messages"
assert_accounted $N "$TMP/results.pos"
log "ok"
