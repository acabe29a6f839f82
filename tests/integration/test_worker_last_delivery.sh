#!/usr/bin/env bash
# Every item that enters the system gets exactly one final outcome, whatever path it takes:
# 1. Last delivery: the worker holding a batch on its last allowed delivery (x-delivery-count =
#    DELIVERY_LIMIT) dies before it can record the items (its Redis is unreachable, so it holds
#    the delivery). The job's work queue's x-delivery-limit dead-letters the batch to P.crashed, where
#    another worker records its items as failed and dead-letters them to P.dead: --wait ends at
#    once with exit 1 and the items named as failed, instead of waiting until --timeout.
# 2. Poison naming a job: a batch of a real job corrupted so that it cannot be read (schema 99)
#    but still names its job id and item positions goes to P.dead as it came, and its items are
#    recorded as failed: --wait ends at once with exit 1 and the items named as failed.
. "$(dirname "$0")/lib.sh"

N=5
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 60000 # calls never finish: a worker holds its batch until it dies
export API_KEY=sk-last WORKER_COUNT=2 RATE_LIMIT=0 BATCH_SIZE=$N DELIVERY_LIMIT=2 API_TIMEOUT=90s
EX="$QUEUE_PREFIX.batches"
WAIT_FOR=20 # --timeout of --wait; a job whose items all have an outcome ends long before

# wait_job JOB NAME: runs producer --resume --wait for JOB; sets WRC (exit code) and WSECS (seconds).
wait_job() {
    local t0=$SECONDS
    WRC=0
    timeout $((WAIT_FOR + 30)) "$PRODUCER" "$TMP/items.csv" --job-id "$1" --resume --wait --timeout ${WAIT_FOR}s \
        --output "$TMP/$2.tsv" --report "$TMP/$2.json" >"$TMP/producer-wait-$2.log" 2>&1 || WRC=$?
    WSECS=$((SECONDS - t0))
}
# assert_all_failed NAME CLASS: the report of wait_job NAME names positions 1..N as failed with the
# error class CLASS, and no item succeeded; --wait did not time out.
assert_all_failed() {
    local r="$TMP/$1.json"
    [ -s "$r" ] || fail "$1: no report"
    [ "$(jq .timed_out "$r")" = false ] || fail "$1: --wait timed out instead of seeing the failed items"
    [ "$(jq .items_failed "$r")" = $N ] || fail "$1: report items_failed $(jq .items_failed "$r"), want $N"
    [ "$(jq .items_succeeded "$r")" = 0 ] || fail "$1: report items_succeeded $(jq .items_succeeded "$r")"
    [ "$(jq -r '[.failed[].position] | sort | map(tostring) | join(" ")' "$r")" = "$(seq -s ' ' 1 $N)" ] ||
        fail "$1: failed items in the report: $(jq -c '[.failed[].position]' "$r"), want 1..$N"
    local other
    other=$(jq -c --arg c "$2" '[.failed[] | select(.error.class != $c) | .position]' "$r")
    [ "$other" = "[]" ] || fail "$1: failed items not of class $2: $other"
}
# work_drained JOB: the shared work queue is empty, and JOB's own is empty or gone.
work_drained() { [ "$(queue_depth batches)" = 0 ] && job_queue_empty "$1"; }
work_left() { echo "$(queue_depth batches) in the shared work queue, $(queue_depth "$(job_queue "$1")") in the job's"; }
crashed_drained() { [ "$(queue_depth crashed)" = 0 ]; }

# ---- 1. the worker holding the last delivery dies ------------------------------------------
JOB=last-$$
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"
# take_batch NAME: starts worker NAME and waits until it takes the batch: it has made its
# WORKER_COUNT calls for it (which never end), so that the count of calls stays put after.
take_batch() {
    local before
    before=$(mock_requests)
    start_worker "$1"
    calling() { [ "$(mock_requests)" -ge $((before + WORKER_COUNT)) ]; }
    wait_until 20 calling || fail "worker $1 never took the batch"
}
# kill_holder PID NAME: the worker holding the batch dies.
kill_holder() {
    kill -9 "$1"
    wait "$1" 2>/dev/null || true
    log "worker $2 killed holding the batch"
}
# Deliveries 0 and 1: a worker takes the batch, then dies.
take_batch A
kill_holder "$LAST_PID" A
take_batch B
WB=$LAST_PID
# Delivery 2 (= DELIVERY_LIMIT) goes to a worker whose Redis is unreachable: it gives the batch up
# but cannot record its items, so it holds the delivery, retrying; it dies holding it. A worker
# learns of a job's queue from Redis (P:active), so worker C reaches Redis through a proxy until it
# follows the job (worker B holds the batch meanwhile), and the proxy is gone before B dies.
redis_port=$(sed -nE 's|^redis://([^@/]*@)?[^@/:]+:([0-9]+).*|\2|p' <<<"$REDIS_URL")
[ -n "$redis_port" ] || fail "no host:port in REDIS_URL"
perl "$(dirname "$0")/tcp_proxy.pl" "$TMP/redis-proxy.port" "$redis_port" 2>"$TMP/redis-proxy.log" &
RPROXY=$!
PIDS+=("$RPROXY")
wait_until 10 test -s "$TMP/redis-proxy.port" || fail "the Redis proxy did not start"
calls_before=$(mock_requests)
REDIS_URL=$(sed -E "s|^redis://([^@/]*@)?[^@/:]+:[0-9]+|redis://\1127.0.0.1:$(cat "$TMP/redis-proxy.port")|" <<<"$REDIS_URL") \
    start_worker C
WC=$LAST_PID
wait_until 20 grep -q "following job $JOB " "$TMP/worker-C.log" || fail "worker C does not follow the job"
{ kill -9 $RPROXY && wait $RPROXY; } 2>/dev/null || true
kill_holder $WB B
wait_until 20 grep -q "came back unsettled 2 times" "$TMP/worker-C.log" ||
    fail "worker C did not give the batch up on its last delivery"
wait_until 20 grep -q "cannot record outcomes in Redis" "$TMP/worker-C.log" ||
    fail "worker C did not fail to record the outcomes (is its Redis really unreachable?)"
[ "$(mock_requests)" = "$calls_before" ] || fail "worker C called the API for a batch it gave up on"
kill -0 $WC || fail "worker C exited"
kill -9 $WC
wait $WC 2>/dev/null || true
log "worker C killed holding the batch on its last delivery, its outcomes unrecorded"
[ "$(redis-cli hlen "$QUEUE_PREFIX:job:{$JOB}:outcome")" = 0 ] || fail "outcomes recorded before worker D ran"
# The broker dead-letters the batch (x-delivery-limit); a worker with Redis records its items.
start_worker D
WD=$LAST_PID
wait_job $JOB last
[ $WRC = 1 ] || fail "producer --wait exit $WRC after ${WSECS}s, want 1"
[ $WSECS -lt $WAIT_FOR ] || fail "producer --wait took ${WSECS}s: it waited for --timeout"
assert_all_failed last crashed
log "last delivery: --wait ended in ${WSECS}s, exit 1, $N items failed (crashed)"
# Every item is in P.dead, only as crashed dead letters (worker C's own, confirmed before it died,
# and worker D's), and nothing is left in the work queues.
dead_messages >"$TMP/dead-last.json"
[ "$(jq '[.[] | select(.properties.headers["x-error-class"] != "crashed")] | length' "$TMP/dead-last.json")" = 0 ] ||
    fail "dead letters that are not crashed batches: $(jq -c '[.[].properties.headers["x-error-class"]]' "$TMP/dead-last.json")"
[ "$(jq -r '[.[].payload | fromjson | .items[].position] | unique | map(tostring) | join(" ")' "$TMP/dead-last.json")" = \
    "$(seq -s ' ' 1 $N)" ] || fail "P.dead does not hold every item: $(jq -c '[.[].payload | fromjson | .items[].position]' "$TMP/dead-last.json")"
[ "$(jq '[.[].payload | fromjson | .items[] | select(.error.class != "crashed")] | length' "$TMP/dead-last.json")" = 0 ] ||
    fail "dead items whose error class is not crashed"
wait_until 15 work_drained $JOB || fail "work queues not empty: $(work_left $JOB)"
wait_until 15 crashed_drained || fail "P.crashed not empty: $(queue_depth crashed)"
[ "$(tail -n +2 "$TMP/last.tsv" 2>/dev/null | wc -l)" = 0 ] || fail "results for items that failed"
kill -TERM $WD
wait $WD || fail "worker D exit $? after SIGTERM"
take_messages dead "$TMP/dead-last.ids" '.[].properties.message_id'

# ---- 2. a poison message that names a job -----------------------------------------------------
# A real job, published while no worker runs; its batch is taken out of the job's work queue,
# corrupted into a schema the workers do not read (still naming the job and its items), and put
# back through the shared work exchange (every worker consumes the shared queue).
JOB2=poison-$$
"$PRODUCER" "$TMP/items.csv" --job-id $JOB2 >"$TMP/producer-publish2.log" 2>&1 || fail "publish 2 failed"
Q2=$(job_queue $JOB2)
one_batch() { [ "$(queue_depth "$Q2")" = 1 ]; }
wait_until 15 one_batch || fail "expected the job's batch in its work queue, got $(queue_depth "$Q2")"
mgmt -X POST -H 'content-type: application/json' -d '{"count":1,"ackmode":"ack_requeue_false","encoding":"auto"}' \
    "$MGMT/queues/%2F/$QUEUE_PREFIX.$Q2/get" >"$TMP/batch.json"
[ "$(jq length "$TMP/batch.json")" = 1 ] || fail "could not take the batch from the work queue"
[ "$(jq -r '.[0].payload_encoding' "$TMP/batch.json")" = string ] || fail "the batch is not readable text"
BODY=$(jq -r '.[0].payload | fromjson | .schema = 99 | tojson' "$TMP/batch.json")
[ "$(jq -r .job_id <<<"$BODY")" = "$JOB2" ] && [ "$(jq '.items | length' <<<"$BODY")" = $N ] ||
    fail "unexpected batch: $BODY"
MID=$(jq -r '.[0].properties.message_id' "$TMP/batch.json")
jq -n --arg id "$MID" --arg body "$BODY" '{properties: {delivery_mode: 2, message_id: $id,
    content_type: "application/json"}, routing_key: "", payload: $body, payload_encoding: "string"}' |
    mgmt -X POST -H 'content-type: application/json' -d @- "$MGMT/exchanges/%2F/$EX/publish" |
    jq -e '.routed' >/dev/null || fail "publishing the corrupted batch was not routed"
start_worker E
WE=$LAST_PID
wait_job $JOB2 poison
grep -q "poison message '$MID'" "$TMP/worker-E.log" || fail "worker E did not log the poison message"
[ $WRC = 1 ] || fail "producer --wait exit $WRC after ${WSECS}s, want 1"
[ $WSECS -lt $WAIT_FOR ] || fail "producer --wait took ${WSECS}s: it waited for --timeout"
assert_all_failed poison poison
log "poison: --wait ended in ${WSECS}s, exit 1, $N items failed (poison)"
# P.dead holds the message once, as it came, marked poison.
dead_messages >"$TMP/dead-poison.json"
[ "$(jq length "$TMP/dead-poison.json")" = 1 ] || fail "expected 1 dead letter, got $(jq length "$TMP/dead-poison.json")"
[ "$(jq -r '.[0].payload' "$TMP/dead-poison.json")" = "$BODY" ] ||
    fail "the dead letter is not the original body: $(jq -r '.[0].payload' "$TMP/dead-poison.json")"
[ "$(jq -r '.[0].properties.headers["x-error-class"]' "$TMP/dead-poison.json")" = poison ] || fail "x-error-class"
[ "$(jq -r '.[0].properties.headers["x-error"] | length' "$TMP/dead-poison.json")" -gt 0 ] || fail "no x-error"
wait_until 15 work_drained $JOB2 || fail "work queues not empty: $(work_left $JOB2)"
[ "$(mock_requests)" = "$calls_before" ] || fail "API calls for items that were given up on"
kill -0 $WE || fail "worker E died on a poison message"
kill -TERM $WE
wait $WE || fail "worker E exit $? after SIGTERM"
log "ok"
