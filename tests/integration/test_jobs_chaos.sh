#!/usr/bin/env bash
# The accounting guarantees with several jobs in flight at once: three jobs of different priorities (one with a
# budget that stops it) share three workers while the API fails about 5 % of calls (500s, a few 429s with Retry-After,
# a permanent 400 for every 97th position), one worker is killed with SIGKILL and another stopped with SIGTERM
# (it must exit 0) mid-run, both restarted, and the producer of one job is killed while it waits and resumed.
# Then the budget-stopped job is resumed with a larger budget. Every item of every job ends exactly once, in its
# job's output or in the dead-letter queue (only the rejected positions, as permanent), and the jobs' queues are
# gone at the end.
. "$(dirname "$0")/lib.sh"

rows() { { echo "position,term,type"; seq "$1" "$2" | awk -v p="$3" '{printf "%d,%s%d,noun\n", $1, p, $1}'; } >"$4"; }
rows 1 600 가 "$TMP/a.csv"
rows 100001 100300 나 "$TMP/b.csv"
rows 200001 200200 다 "$TMP/c.csv"
MOD=97
start_mock --seed $$ --latency-ms 20 --jitter-ms 20 --fail-500 0.05 --fail-429 0.003 --retry-after 1 --reject-mod $MOD
export API_KEY=sk-jobs-chaos WORKER_COUNT=8 RATE_LIMIT=9000 BATCH_SIZE=10 RETRY_DELAYS=200ms,500ms MAX_ATTEMPTS=6 \
    RETRY_AFTER_MAX=1s SHUTDOWN_TIMEOUT=10s
for i in 1 2 3; do start_worker $i; eval "W$i=$LAST_PID"; done
for i in 1 2 3; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

# C's budget: about 60 of its 200 items (an item is about 1,430 tokens with this mock: two calls).
BUDGET=$((60 * 1430))
job() { # NAME RUN ARGS...: the producer of job NAME, run RUN, in the background; its PID in $LAST_PID
    local name=$1 run=$2; shift 2
    "$PRODUCER" "$TMP/$name.csv" --job-id "$name-$$" --wait --timeout 280s --output "$TMP/$name.tsv" \
        --report "$TMP/$name-$run.json" "$@" >"$TMP/producer-$name-$run.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
job a 1; PA=$LAST_PID
job b 1 --priority 9; PB=$LAST_PID
job c 1 --priority 2 --budget-tokens $BUDGET; PC=$LAST_PID

answered_at_least 300 || wait_until 30 answered_at_least 300 || fail "the jobs did not get going"
kill -9 "$W1"
log "worker 1 killed (SIGKILL) after $(mock_answered) calls"
start_worker 1b
wait_until 30 answered_at_least 700 || fail "no progress after the kill"
kill -TERM "$W2"
wait "$W2"; rc=$?
[ $rc = 0 ] || fail "worker 2 exited $rc on SIGTERM"
log "worker 2 stopped (SIGTERM, exit 0) after $(mock_answered) calls"
start_worker 2b
kill -9 "$PB" 2>/dev/null || log "the producer of B had already finished"
wait "$PB" 2>/dev/null || true
job b 2 --resume; PB=$LAST_PID

for p in "$PA" "$PB" "$PC"; do
    set +e; wait "$p"; rc=$?; set -e
    [ $rc = 1 ] || fail "a producer exited $rc (want 1: every job has rejected items, and C its budget)"
done
jq -e '.budget.stopped == true and .budget.items_stopped > 0' "$TMP/c-1.json" >/dev/null ||
    fail "C's budget did not stop it: $(jq -c .budget "$TMP/c-1.json")"
log "C stopped by its budget: $(jq -c '{spent_tokens: .budget.spent_tokens, items_stopped: .budget.items_stopped}' "$TMP/c-1.json")"
job c 2 --resume --budget-tokens 100000000; PC=$LAST_PID
set +e; wait "$PC"; rc=$?; set -e
[ $rc = 1 ] || fail "resumed C exited $rc (want 1: its rejected items)"
jq -e '.budget.stopped == false' "$TMP/c-2.json" >/dev/null || fail "resumed C still stopped"

# Every item of every job exactly once, in its output or dead-lettered; dead only the rejected ones, permanent.
dead_messages >"$TMP/dead.json"
jq -r '.[].payload | fromjson | .items[] | "\(.position) \(.error.class)"' "$TMP/dead.json" | sort -n >"$TMP/dead.txt"
awk '$2 != "permanent"' "$TMP/dead.txt" >"$TMP/dead-other.txt"
[ ! -s "$TMP/dead-other.txt" ] || fail "dead letters other than the rejected: $(head -3 "$TMP/dead-other.txt" | tr '\n' ' ')"
for j in a:1:600 b:100001:100300 c:200001:200200; do
    IFS=: read -r name lo hi <<<"$j"
    tsv_positions "$TMP/$name.tsv" >"$TMP/$name.pos"
    awk -v lo="$lo" -v hi="$hi" '$1 >= lo && $1 <= hi {print $1}' "$TMP/dead.txt" >"$TMP/$name.dead"
    seq "$lo" "$hi" | awk -v m=$MOD '$1 % m == 0' | diff -q - "$TMP/$name.dead" >/dev/null ||
        fail "job $name: the dead letters are not exactly its rejected positions"
    dups=$(sort -n "$TMP/$name.pos" "$TMP/$name.dead" | uniq -d | head -3 | tr '\n' ' ')
    [ -z "$dups" ] || fail "job $name: positions twice: $dups"
    sort -n "$TMP/$name.pos" "$TMP/$name.dead" | diff -q <(seq "$lo" "$hi") - >/dev/null ||
        fail "job $name: not every item accounted once"
    [ "$(tail -n +2 "$TMP/$name.tsv" | wc -l)" = $((2 * $(wc -l <"$TMP/$name.pos"))) ] || fail "job $name: duplicate cards"
    log "job $name: $(wc -l <"$TMP/$name.pos") in its output, $(wc -l <"$TMP/$name.dead") dead-lettered, of $((hi - lo + 1))"
done
job_queues() { mgmt "$MGMT/queues/%2F?columns=name" | jq -r '.[].name' | grep -c "^$QUEUE_PREFIX\.job\." || true; }
gone() { [ "$(job_queues)" = 0 ]; }
wait_until 15 gone || fail "jobs' queues left: $(job_queues)"
work_empty() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_empty || fail "work queue not empty"
log "ok: $(mock_answered) calls"
