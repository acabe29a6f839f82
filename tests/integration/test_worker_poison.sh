#!/usr/bin/env bash
# Messages and credentials the worker cannot use.
# 1. Poison: a non-JSON message and a wrong-schema one published straight to the work
#    exchange go to the dead letters as they were, with an x-error header; the worker logs
#    them and carries on (a normal job completes).
# 2. Rejected credentials: the API answers 401. Nothing is dead-lettered; the worker logs one
#    clear error, stops consuming (its batches stay in the work queues) and reports not ready
#    on /readyz, and hands back the batches it holds; it probes every AUTH_RETRY (taking
#    deliveries for the probe if it holds none), and once the key is accepted the job completes.
# 3. A worker with a wrong key next to one with a good key does not hold up the job.
. "$(dirname "$0")/lib.sh"

N=60
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --api-key good
export WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=20
EX="$QUEUE_PREFIX.batches"

# publish_raw ID BODY: publishes BODY as is to the work exchange through the management API.
publish_raw() {
    jq -n --arg id "$1" --arg body "$2" '{properties: {delivery_mode: 2, message_id: $id}, routing_key: "",
        payload: $body, payload_encoding: "string"}' |
        mgmt -X POST -H 'content-type: application/json' -d @- "$MGMT/exchanges/%2F/$EX/publish" |
        jq -e '.routed' >/dev/null || fail "publishing $1 was not routed"
}
# collect JOB OUT [ARGS...]: waits for JOB with the producer; results positions to OUT.
collect() {
    local job=$1 out=$2; shift 2
    local prc=0
    timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "$job" --wait --timeout 45s --output "$TMP/$job.tsv" "$@" \
        >>"$TMP/producer-$job.log" 2>&1 || prc=$?
    [ $prc = 0 ] || fail "producer ($job) exit $prc"
    tsv_positions "$TMP/$job.tsv" >"$out"
    [ "$(tail -n +2 "$TMP/$job.tsv" | wc -l)" = $((2 * N)) ] || fail "$job: duplicate or missing cards"
}
# work_drained JOB: the shared work queue is empty, and JOB's own is empty or gone.
work_drained() { [ "$(queue_depth batches)" = 0 ] && job_queue_empty "$1"; }

# ---- 1. poison messages -------------------------------------------------------------
API_KEY=good start_worker poison
W1=$LAST_PID
wait_until 20 grep -q "consuming" "$TMP/worker-poison.log" || fail "worker did not start"
publish_raw poison-text 'this is not JSON {'
publish_raw poison-schema '{"hello":"world"}'
dead2() { [ "$(dead_messages | jq length)" = 2 ]; }
wait_until 20 dead2 || fail "the poison messages did not reach the dead letters"
dead_messages >"$TMP/poison.json"
for id in poison-text poison-schema; do
    grep -q "poison message '$id'" "$TMP/worker-poison.log" || fail "the worker did not log $id"
done
[ "$(jq -r '[.[].payload] | sort | join("|")' "$TMP/poison.json")" = 'this is not JSON {|{"hello":"world"}' ] ||
    fail "the dead letters do not hold the original bodies: $(jq -c '[.[].payload]' "$TMP/poison.json")"
[ "$(jq '[.[] | select(.properties.headers["x-error-class"] == "poison" and
          (.properties.headers["x-error"] | length) > 0)] | length' "$TMP/poison.json")" = 2 ] ||
    fail "poison dead letters lack x-error / x-error-class headers"
kill -0 $W1 || fail "the worker died on a poison message"
# The worker carries on.
collect poison-$$ "$TMP/job1.pos"
wait_until 15 work_drained poison-$$ || fail "work queue not empty"
# Take the two poison messages out, so the accounting below sees only the job's items.
mgmt -X POST -H 'content-type: application/json' -d '{"count":2,"ackmode":"ack_requeue_false","encoding":"auto"}' \
    "$MGMT/queues/%2F/$QUEUE_PREFIX.dead/get" >/dev/null
assert_accounted $N "$TMP/job1.pos"
kill -TERM $W1
wait $W1 || fail "worker exit $? after SIGTERM"

# ---- 2. rejected credentials ------------------------------------------------------------
MPORT=$(free_port)
# No cache: the same items were answered above, and cache hits would make no API calls.
API_KEY=bad AUTH_RETRY=2s METRICS_PORT=$MPORT CACHE_TTL=0 start_worker auth
W2=$LAST_PID
JOB=auth-$$
"$PRODUCER" "$TMP/items.csv" --job-id $JOB >"$TMP/producer-publish.log" 2>&1 || fail "publish failed"
wait_until 20 grep -q "rejected the credentials" "$TMP/worker-auth.log" || fail "no credentials error in the log"
# Several probes go by while the key stays wrong.
probes() { [ "$(grep -c "probing the API credentials" "$TMP/worker-auth.log")" -ge 2 ]; }
wait_until 20 probes || fail "the worker did not probe the API every AUTH_RETRY"
[ "$(grep -c "rejected the credentials" "$TMP/worker-auth.log")" = 1 ] || fail "the credentials error is not logged once"
grep -q "stopped taking deliveries (API credentials rejected)" "$TMP/worker-auth.log" || fail "the worker kept consuming"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz")" = 503 ] || fail "/readyz is not 503"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz")" = 200 ] || fail "/healthz is not 200"
# (The management API's queue figures lag up to 5 s.)
# (Asked of the node itself: the management API's consumer figures lag, and a quorum queue keeps
# counting a cancelled consumer in .consumers while it holds unacked deliveries.)
# (rabbitmqctl may time out on a busy machine: ask again rather than count nothing as 0.)
count_consumers() {
    local out
    out=$($SUDO rabbitmqctl -q list_consumers -p / queue_name consumer_tag 2>/dev/null) || return 1
    consumers=$(awk -v q="$QUEUE_PREFIX.batches" -v j="$QUEUE_PREFIX.$(job_queue $JOB)" '$1 == q || $1 == j' <<<"$out" |
        wc -l)
}
wait_until 30 count_consumers || fail "rabbitmqctl list_consumers did not answer"
[ "$consumers" = 0 ] || fail "the worker still consumes ($consumers consumers)"
# The 3 batches are in the job's queue, or in the shared one once handed back (as continuations).
held() { echo $(($(queue_depth batches) + $(queue_depth "$(job_queue $JOB)"))); }
held3() { [ "$(held)" = 3 ] 2>/dev/null; }
wait_until 15 held3 || fail "expected the 3 batches in the work queues, got $(queue_depth batches) in the shared one and $(queue_depth "$(job_queue $JOB)") in the job's"
[ "$(dead_messages | jq length)" = 0 ] || fail "something was dead-lettered on a 401"
# While blocked, the worker makes one call per probe, not one per item.
calls401=$(awk '$2 == 401' "$TMP/mock-requests.log" | wc -l)
[ "$calls401" -le 20 ] || fail "$calls401 calls while the credentials were rejected"
kill -0 $W2 || fail "the worker exited"

# The key becomes valid: the next probe succeeds and the job completes.
mock_control '{"api_key":"bad"}'
collect $JOB "$TMP/job2.pos" --resume
grep -q "credentials accepted again" "$TMP/worker-auth.log" || fail "no recovery message"
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz")" = 200 ]; }
wait_until 10 ready || fail "/readyz did not return to 200"
wait_until 15 work_drained $JOB || fail "work queue not empty"
assert_accounted $N "$TMP/job2.pos"
grep -q "handing back" "$TMP/worker-auth.log" || fail "the worker did not hand its batches back"
kill -TERM $W2
wait $W2 || fail "worker exit $? after SIGTERM"

# ---- 3. one worker with a wrong key in a fleet ------------------------------------------
# It hands its batches back at once, so a worker with a good key does the job long before
# HOLD_LIMIT (5 minutes) would have released them.
API_KEY=wrong AUTH_RETRY=60s CACHE_TTL=0 start_worker wrong
wait_until 20 grep -q "consuming" "$TMP/worker-wrong.log" || fail "worker did not start"
JOB3=fleet-$$
"$PRODUCER" "$TMP/items.csv" --job-id $JOB3 >"$TMP/producer-publish3.log" 2>&1 || fail "publish failed"
wait_until 20 grep -q "handing back" "$TMP/worker-wrong.log" || fail "the wrong-key worker kept its batches"
API_KEY=bad CACHE_TTL=0 start_worker good # the key the mock accepts since part 2
collect $JOB3 "$TMP/job3.pos" --resume
wait_until 15 work_drained $JOB3 || fail "work queue not empty"
assert_accounted $N "$TMP/job3.pos"
[ "$(grep -c "probing the API credentials" "$TMP/worker-wrong.log")" = 0 ] || fail "probed before AUTH_RETRY"
log "ok: $calls401 calls answered 401; a wrong-key worker did not hold the fleet's work"
