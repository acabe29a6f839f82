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
# 4. Two jobs at once on a rate-limited fleet (a prefix of its own, so that the fleet's calls of the last
#    minute are theirs only; 2 workers, RATE_LIMIT 3000/min, mock latency 20 ms): A at --priority 10 with a
#    token budget worth about half its items, B plain. While both run, `status --json` shows both followed,
#    priorities 10 and 5, fair shares 2/3 and 1/3, measured shares that sum to about 1 and favour A, and the
#    API's adapted rate; the table has the PRIO, SHARE, BUDGET and ADAPTED columns. Once the budget stopped
#    A, `job` shows its budget stopped: spent >= limit, nothing left, the stopped items counted.
# Run time: about 60 s.
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

# ---- 4. two jobs sharing a rate-limited fleet -------------------------------------------------------
P2=$QUEUE_PREFIX.fair # its queues match the cleanup's pattern; its Redis keys are deleted here
fair_cleanup() {
    local rc=$?
    (exit $rc)
    cleanup # stops the workers first
    redis-cli --scan --pattern "$P2:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
    exit $rc
}
trap fair_cleanup EXIT
kill "$W1" "$W2" "$MOCK_PID" 2>/dev/null || true
# What a call costs at the mock (its tokens do not depend on the term's number): from the job above.
PER_CALL=$(jq '(.stats.prompt_tokens + .stats.completion_tokens) / .stats.api_calls | floor' "$TMP/job.json")
BUDGET=$((PER_CALL * 2 * 200)) # about 200 of A's 400 items
start_mock --latency-ms 20
export WORKER_COUNT=16 RATE_LIMIT=3000 BATCH_SIZE=5 MAX_ATTEMPTS=3 CACHE_TTL=0
QUEUE_PREFIX=$P2 start_worker f1
QUEUE_PREFIX=$P2 start_worker f2
for w in f1 f2; do wait_until 20 grep -q "consuming" "$TMP/worker-$w.log" || fail "worker $w did not start"; done
JA=fair-a-$$
JB=fair-b-$$
rows() { { echo "position,term,type"; seq "$1" "$2" | awk -v p="$3" '{printf "%d,%s%d,noun\n", $1, p, $1}'; } >"$4"; }
rows 1 400 가 "$TMP/a.csv"
rows 1001 1300 나 "$TMP/b.csv"
admin2() { QUEUE_PREFIX=$P2 "$ADMIN" "$@"; }
# B first: a head start of B's cannot make A's share look larger.
QUEUE_PREFIX=$P2 timeout 100 "$PRODUCER" "$TMP/b.csv" --job-id $JB --wait --timeout 90s >"$TMP/producer-b.log" 2>&1 &
PB=$!
PIDS+=("$PB")
QUEUE_PREFIX=$P2 timeout 100 "$PRODUCER" "$TMP/a.csv" --job-id $JA --priority 10 --budget-tokens $BUDGET --wait \
    --timeout 90s >"$TMP/producer-a.log" 2>&1 &
PA=$!
PIDS+=("$PA")
# both_run FILE CALLS: status --json into FILE; true once both jobs run, followed, A not yet stopped, and the
# fleet made CALLS calls over the window.
both_run() {
    admin2 status --json >"$TMP/$1" 2>"$TMP/fair.err" || return 1
    jq -e --arg a $JA --arg b $JB --argjson n "$2" '[.jobs[] | select((.job_id == $a or .job_id == $b) and
        .state == "running" and .followed and .done > 0 and .share.fleet_calls >= $n and .budget.stopped == false)]
        | length == 2' "$TMP/$1" >/dev/null
}
wait_until 40 both_run fair1.json 150 ||
    fail "status never showed both jobs running: $(jq -c '[.jobs[] | {job_id, state, followed, done, share, budget}]' "$TMP/fair1.json")"
# The workers start following the two jobs up to a second apart, which skews the first seconds: the share is
# judged on the calls made between two looks 4 s apart (the window still holds every call of this prefix).
sleep 4
both_run fair.json 300 || fail "A or B no longer running 4 s later: $(jq -c '[.jobs[] | {job_id, state, share, budget}]' "$TMP/fair.json")"
read -r DA DF < <(jq -r --arg a $JA --slurpfile s "$TMP/fair1.json" '(.jobs[] | select(.job_id == $a).share) as $n |
    ($s[0].jobs[] | select(.job_id == $a).share) as $o | "\($n.calls - $o.calls) \($n.fleet_calls - $o.fleet_calls)"' "$TMP/fair.json")
log "between the two looks A made $DA of the fleet's $DF calls (2/3 in theory)"
awk -v a="$DA" -v f="$DF" 'BEGIN {exit !(f >= 100 && a / f >= 0.55 && a / f <= 0.8)}' ||
    fail "A's share between the two looks: $DA of $DF calls"
admin2 status >"$TMP/fair.txt" || fail "status (table) exit $?"
log "$(grep -A1 "^API " "$TMP/fair.txt")"
log "$(grep -A3 "^JOB " "$TMP/fair.txt")"
job_of() { jq -c --arg j "$1" '.jobs[] | select(.job_id == $j) | {priority, followed, share, budget}' "$TMP/fair.json"; }
log "A: $(job_of $JA)"
log "B: $(job_of $JB)"
jq -e --arg a $JA --arg b $JB --argjson budget $BUDGET '(.jobs[] | select(.job_id == $a)) as $A | (.jobs[] | select(.job_id == $b)) as $B |
    $A.priority == 10 and $B.priority == 5 and
    ($A.share.fair_share - 2 / 3 | fabs) <= 0.01 and ($B.share.fair_share - 1 / 3 | fabs) <= 0.01 and
    ($A.share.share + $B.share.share - 1 | fabs) <= 0.1 and
    $A.share.fleet_calls == $B.share.fleet_calls and
    $A.budget.limit_tokens == $budget and $A.budget.limit_usd == null and $A.budget.left_tokens > 0 and
    $B.budget.limit_tokens == null and $B.budget.left_tokens == null' "$TMP/fair.json" >/dev/null ||
    fail "priorities, shares or budgets while both run: A $(job_of $JA), B $(job_of $JB)"
jq -e '.apis | length == 1 and .[0].rate_limit_per_s == 50 and (.[0].rate_adapted_per_s | type) == "number" and
    .[0].rate_adapted_per_s > 0 and .[0].rate_adapted_per_s <= 50' "$TMP/fair.json" >/dev/null ||
    fail "the API's adapted rate: $(jq -c .apis "$TMP/fair.json")"
grep -Eq "^JOB +STATE .* PRIO +SHARE +BUDGET$" "$TMP/fair.txt" || fail "jobs table header: $(cat "$TMP/fair.txt")"
grep -Eq "^API +WORKERS +RATE LIMIT +ADAPTED +USAGE" "$TMP/fair.txt" || fail "APIs table header: $(cat "$TMP/fair.txt")"
grep -Eq "^$JA .* 10 +[0-9]+% \(67%\) +[0-9.]+[kM]? of [0-9.]+[kM]? tokens$" "$TMP/fair.txt" || fail "A's row: $(grep "^$JA" "$TMP/fair.txt")"
grep -Eq "^$JB .* 5 +[0-9]+% \(33%\) +-$" "$TMP/fair.txt" || fail "B's row: $(grep "^$JB" "$TMP/fair.txt")"
grep -Eq "^[^ ]+ +2 +50.00 calls/s +[0-9.]+ calls/s " "$TMP/fair.txt" ||
    fail "APIs row: $(grep -A2 "^API" "$TMP/fair.txt")"
prc=0
wait "$PA" || prc=$?
[ $prc = 1 ] || fail "producer of A exit $prc, expected 1 (its budget stopped it)"
wait "$PB" || fail "producer of B exit $?"
admin2 job $JA --json >"$TMP/job-a.json" || fail "job A exit $?"
log "A after: $(jq -c '{state, done, failed, budget}' "$TMP/job-a.json")"
jq -e '.state == "finished" and .budget.stopped == true and .budget.spent_tokens >= .budget.limit_tokens and
    .budget.left_tokens == 0 and .budget.items_stopped > 0 and .budget.items_stopped <= .failed and
    .budget.exhausted_ms > 0 and .share.fair_share == null' "$TMP/job-a.json" >/dev/null ||
    fail "A's budget once stopped: $(jq -c '{state, failed, budget, share}' "$TMP/job-a.json")"
admin2 job $JA >"$TMP/job-a.txt" || fail "job A (table) exit $?"
grep -Eq "^priority +10 " "$TMP/job-a.txt" && grep -Eq "^share +[0-9]+% of the fleet's calls" "$TMP/job-a.txt" &&
    grep -Eq "^budget +[0-9.]+[kM]? of [0-9.]+[kM]? tokens STOPPED: [0-9]+ items stopped" "$TMP/job-a.txt" ||
    fail "job A table: $(head -12 "$TMP/job-a.txt")"
admin2 job $JB --json >"$TMP/job-b.json" || fail "job B exit $?"
jq -e '.state == "finished" and .failed == 0 and .budget.stopped == false and .budget.items_stopped == 0' \
    "$TMP/job-b.json" >/dev/null || fail "B: $(jq -c '{state, failed, budget}' "$TMP/job-b.json")"
log "ok: status shows both workers, the job and the queues; job agrees with the accounting; exit 3 when unreachable;
    two jobs' priorities, fair and measured shares, the budget that stopped one, the adapted rate"
