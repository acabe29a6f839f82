#!/usr/bin/env bash
# A batch bigger than the producer's confirm window budget (4 MiB) is still published, alone,
# and confirmed: with BATCH_MAX_BYTES=16777216, small batch, ~7 MiB batch, small batch are all in
# the job's work queue (P.job.<job>) with the right items, the run exits 0 in seconds (it used to wait 30 s for a confirm
# budget that could never be met and exit 3 saying the broker was lost).
. "$(dirname "$0")/lib.sh"

PAD=$(head -c 120000 /dev/zero | tr '\0' x) # one row's extra column: ~117 KiB
{
    echo "position,term,type,note"
    for i in $(seq 1 60); do echo "$i,작은$i,noun,short"; done
    for i in $(seq 61 120); do echo "$i,큰$i,noun,$PAD"; done
    for i in $(seq 121 180); do echo "$i,작은$i,noun,short"; done
} >"$TMP/big.csv"

export BATCH_SIZE=60 BATCH_MAX_BYTES=16777216
t0=$SECONDS
rc=0
timeout 60 "$PRODUCER" "$TMP/big.csv" --job-id big-$$ --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || rc=$?
took=$((SECONDS - t0))
[ $rc = 0 ] || fail "producer exit $rc, want 0: $(tail -3 "$TMP/producer.log")"
[ $took -lt 15 ] || fail "producer took $took s"
[ "$(jq .batches_published "$TMP/report.json")" = 3 ] || fail "report: batches_published $(jq .batches_published "$TMP/report.json"), want 3"
[ "$(jq .items_published "$TMP/report.json")" = 180 ] || fail "report: items_published"

# The quorum queue's counters lag: wait for the three messages, then peek at them.
Q=$(job_queue big-$$)
three() { [ "$(queue_depth "$Q")" = 3 ]; }
wait_until 20 three || fail "the job's work queue holds $(queue_depth "$Q") messages, want 3"
mgmt -X POST -H 'content-type: application/json' -d '{"count":10,"ackmode":"ack_requeue_true","encoding":"auto"}' \
    "$MGMT/queues/%2F/$QUEUE_PREFIX.$Q/get" >"$TMP/peek.json"
jq -c '[.[] | .payload | fromjson | [.batch, (.items | length), .items[0].position, .items[-1].position]] | sort' \
    "$TMP/peek.json" >"$TMP/got"
[ "$(cat "$TMP/got")" = '[[0,60,1,60],[1,60,61,120],[2,60,121,180]]' ] || fail "batches (batch, items, first, last): $(cat "$TMP/got")"
size=$(jq '.[] | .payload | fromjson | select(.batch == 1) | tojson | length' "$TMP/peek.json")
[ "$size" -gt $((6 << 20)) ] && [ "$size" -lt $((8 << 20)) ] || fail "big batch is $size bytes, want 6..8 MiB"
[ "$(jq '.[] | .payload | fromjson | select(.batch == 1) | .items[0].extra.note | length' "$TMP/peek.json")" = 120000 ] ||
    fail "the big batch's extra column was not carried whole"
log "ok: 3 batches confirmed in $took s, the big one $size bytes"
