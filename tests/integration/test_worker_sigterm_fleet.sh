#!/usr/bin/env bash
# A graceful stop seen from the rest of the fleet: three workers x 16 calls in flight, one of
# them sent SIGTERM mid-run. It drains its calls and hands its unfinished items back as
# continuations; the others take them up. No call is dropped or made twice anywhere: every
# (stage, item) pair is called exactly once and answered 200, and every item ends once.
. "$(dirname "$0")/lib.sh"

N=1000
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 40
export API_KEY=sk-fleet WORKER_COUNT=16 RATE_LIMIT=0 BATCH_SIZE=20 LOG_LEVEL=debug
JOB=fleet-$$
OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"

for i in 1 2 3; do start_worker $i; eval "W$i=\$LAST_PID"; done
for i in 1 2 3; do wait_until 20 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"
wait_until 60 answered_at_least 500 || fail "the workers never got going"
kill -TERM $W1
[ "$(redis-cli hlen "$OUTCOME")" -lt $((N - 100)) ] || fail "the job was nearly done at SIGTERM: nothing tested"
wait $W1 || fail "worker 1 exit $? after SIGTERM"
grep -q "stopped cleanly" "$TMP/worker-1.log" || fail "worker 1 did not stop cleanly"
all_done() { [ "$(redis-cli hlen "$OUTCOME")" = $N ]; }
wait_until 90 all_done || fail "the job did not finish: $(redis-cli hlen "$OUTCOME") of $N"
prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 45s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer exit $prc"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"

# The mock's request log: time status stage position user-agent ...
awk '$2 != 200' "$TMP/mock-requests.log" >"$TMP/not200"
[ ! -s "$TMP/not200" ] || fail "calls not answered 200 (dropped by a client?): $(head -3 "$TMP/not200")"
awk '{print $3, $4}' "$TMP/mock-requests.log" | sort | uniq -d >"$TMP/twice"
[ ! -s "$TMP/twice" ] || fail "stage/item called more than once: $(head -5 "$TMP/twice" | tr '\n' ';')"
[ "$(wc -l <"$TMP/mock-requests.log")" = $((2 * N)) ] || fail "$(wc -l <"$TMP/mock-requests.log") calls for $N items"
for w in 2 3; do kill -0 "$(eval echo \$W$w)" || fail "worker $w died"; done
log "ok"
