#!/usr/bin/env bash
# flashcard-admin status and job.
# 1. During a job with two workers (slow mock, a fleet rate limit), `status --json` shows both workers
#    (their ids, ready), the API's rate limit, the job not finished with its published items and its
#    progress, and the queues of the prefix (the work queue with two consumers); the table names them.
# 2. After the job (every tenth item rejected): `job --json` agrees with the accounting (done = items,
#    ok + failed = items, the failed items are the rejected positions, in P.dead), and `status` no
#    longer lists the job.
# 3. The management API unreachable: status falls back to the broker (one line says so, unacked unknown).
#    The broker unreachable, or Redis: exit 3, one line, no password.
# Run time: about 30 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
N=80
JOB=status-$$
make_csv $N "$TMP/items.csv"
export WORKER_COUNT=4 BATCH_SIZE=5 RATE_LIMIT=900 MAX_ATTEMPTS=1
start_mock --latency-ms 150 --reject-mod 10
start_worker w1
W1=$LAST_PID
start_worker w2
W2=$LAST_PID
for w in w1 w2; do wait_until 20 grep -q "consuming" "$TMP/worker-$w.log" || fail "worker $w did not start"; done

# ---- 1. during the job ----------------------------------------------------------------------------
"$PRODUCER" "$TMP/items.csv" --job-id $JOB --wait --timeout 80s --output "$TMP/out.tsv" >"$TMP/producer.log" 2>&1 &
PPID_=$!
PIDS+=("$PPID_")
# snapshot: status --json into status.json; true once the job runs with both workers seen.
running() {
    "$ADMIN" status --json >"$TMP/status.json" 2>"$TMP/status.err" || return 1
    jq -e --arg j $JOB '([.workers[] | select(.ready == true)] | length) == 2 and
        ([.jobs[] | select(.job_id == $j and .state == "running" and .items == 80 and .done > 0 and .done < 60)]
         | length) == 1' "$TMP/status.json" >/dev/null
}
wait_until 40 running || fail "status never showed the running job with two ready workers: $(jq -c '{workers: [.workers[] | {id, ready}], jobs}' "$TMP/status.json")"
"$ADMIN" status >"$TMP/status.txt" || fail "status (table) exit $?"
grep -q "^Workers (2 live)" "$TMP/status.txt" || fail "the table does not show two workers: $(cat "$TMP/status.txt")"
grep -q "^$JOB " "$TMP/status.txt" || fail "the table does not show the job"
grep -q "^$QUEUE_PREFIX.batches " "$TMP/status.txt" || fail "the table does not show the work queue"
ids=$(jq -r '[.workers[].id] | sort | join(" ")' "$TMP/status.json")
[ "$(jq '[.workers[].id] | unique | length' "$TMP/status.json")" = 2 ] || fail "worker ids not distinct: $ids"
for pid in $W1 $W2; do
    jq -e --argjson p "$pid" '[.workers[] | select(.pid == $p)] | length == 1' "$TMP/status.json" >/dev/null ||
        fail "worker pid $pid not in status: $ids"
done
jq -e '.apis | length == 1 and .[0].rate_limit_per_s == 15 and .[0].workers == 2' "$TMP/status.json" >/dev/null ||
    fail "status apis: $(jq -c .apis "$TMP/status.json")"
jq -e '.queues_source == "management"' "$TMP/status.json" >/dev/null || fail "queues not from the management API"
for q in batches dead crashed results.unrouted results.$JOB; do
    jq -e --arg q "$QUEUE_PREFIX.$q" '[.queues[] | select(.name == $q)] | length == 1' "$TMP/status.json" >/dev/null ||
        fail "status lacks queue $q: $(jq -c '[.queues[].name]' "$TMP/status.json")"
done
two_consumers() {
    "$ADMIN" status --json >"$TMP/status2.json" 2>/dev/null &&
        jq -e --arg q "$QUEUE_PREFIX.batches" '.queues[] | select(.name == $q) | .consumers == 2' "$TMP/status2.json" >/dev/null
}
wait_until 20 two_consumers || fail "the work queue does not show two consumers: $(jq -c .queues "$TMP/status2.json")"
log "during the job: $(jq -c --arg j $JOB '.jobs[] | select(.job_id == $j) | {items, done, ok, failed, in_retry, rate_per_s}' "$TMP/status.json")"

# ---- 2. after the job -----------------------------------------------------------------------------
prc=0
wait $PPID_ || prc=$?
[ $prc = 1 ] || fail "producer exit $prc, expected 1 (eight items rejected)"
"$ADMIN" job $JOB --json >"$TMP/job.json" || fail "job exit $?"
jq -e '.state == "finished" and .items == 80 and .done == 80 and .ok == 72 and .failed == 8 and .in_retry == 0' \
    "$TMP/job.json" >/dev/null || fail "job: $(jq -c 'del(.failed_items)' "$TMP/job.json")"
[ "$(jq -c '[.failed_items[].position]' "$TMP/job.json")" = "[10,20,30,40,50,60,70,80]" ] ||
    fail "failed items: $(jq -c '[.failed_items[].position]' "$TMP/job.json")"
jq -e '[.failed_items[] | select(.error.class == "permanent" and .error.http_status == 400)] | length == 8' \
    "$TMP/job.json" >/dev/null || fail "failed items lack their error"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = "$(jq .ok "$TMP/job.json")" ] || fail "ok in the job record differs from the output"
assert_accounted $N "$TMP/results.pos"
[ "$(sort -n "$TMP/dead.pos" | tr '\n' ' ')" = "10 20 30 40 50 60 70 80 " ] || fail "dead letters: $(tr '\n' ' ' <"$TMP/dead.pos")"
"$ADMIN" job $JOB >"$TMP/job.txt" || fail "job (table) exit $?"
grep -q "^done *80 (72 ok, 8 failed)" "$TMP/job.txt" || fail "job table: $(cat "$TMP/job.txt")"
"$ADMIN" status --json >"$TMP/status3.json" || fail "status exit $?"
jq -e --arg j $JOB '[.jobs[] | select(.job_id == $j)] | length == 0' "$TMP/status3.json" >/dev/null ||
    fail "status still lists the finished job"
prc=0
"$ADMIN" job nosuchjob-$$ 2>"$TMP/nojob.err" || prc=$?
[ $prc = 1 ] || fail "job of an unknown id exit $prc, expected 1"

# ---- 3. unreachable -------------------------------------------------------------------------------
CLOSED=$(free_port)
prc=0
RABBITMQ_MANAGEMENT_URL=http://127.0.0.1:$CLOSED "$ADMIN" status --json >"$TMP/fallback.json" 2>"$TMP/fallback.err" || prc=$?
[ $prc = 0 ] || fail "status without the management API exit $prc"
[ "$(wc -l <"$TMP/fallback.err")" = 1 ] && grep -q "management API" "$TMP/fallback.err" ||
    fail "the fallback is not said in one line: $(cat "$TMP/fallback.err")"
jq -e --arg q "$QUEUE_PREFIX.batches" '.queues_source == "broker" and
    ([.queues[] | select(.name == $q and .unacked == null and .consumers == 2)] | length == 1)' "$TMP/fallback.json" \
    >/dev/null || fail "fallback queues: $(jq -c .queues "$TMP/fallback.json")"
SECRET=s3cr3t-$$
for var in "AMQP_URL=amqp://guest:$SECRET@127.0.0.1:$CLOSED/%2f" "REDIS_URL=redis://:$SECRET@127.0.0.1:$CLOSED/0"; do
    prc=0
    env "$var" "$ADMIN" status >"$TMP/down.out" 2>"$TMP/down.err" || prc=$?
    [ $prc = 3 ] || fail "status with ${var%%=*} unreachable exit $prc, expected 3"
    [ "$(wc -l <"$TMP/down.err")" = 1 ] || fail "${var%%=*} unreachable: not one line: $(cat "$TMP/down.err")"
    ! grep -q "$SECRET" "$TMP/down.err" "$TMP/down.out" || fail "the password is shown: $(cat "$TMP/down.err")"
    log "${var%%=*} unreachable: $(cat "$TMP/down.err")"
done
log "ok: status shows both workers, the job and the queues; job agrees with the accounting; exit 3 when unreachable"
