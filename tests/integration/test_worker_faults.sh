#!/usr/bin/env bash
# Mixed API faults against 3 worker processes: 500s, 429s, hung requests (cut by the workers'
# API_TIMEOUT), malformed answers, and permanent 400s for every position divisible by 37.
# Every item ends exactly once in the results or in the dead letters; the 400'd items are
# dead-lettered as permanent failures with x-http-status 400 at once, the others succeed
# (or, if the dice failed one item on every attempt, are dead-lettered after MAX_ATTEMPTS).
. "$(dirname "$0")/lib.sh"

N=300
MOD=37
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --fail-500 0.05 --fail-429 0.02 --retry-after 1 --timeout 0.02 --timeout-ms 3000 \
    --malformed 0.05 --reject-mod $MOD
export API_KEY=sk-faults WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=20 API_TIMEOUT=1s \
    RETRY_DELAYS=200ms,500ms MAX_ATTEMPTS=5 BREAKER_COOLDOWN=500ms
for i in 1 2 3; do start_worker $i; done
for i in 1 2 3; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
prc=0
timeout 150 "$PRODUCER" "$TMP/items.csv" --job-id faults-$$ --wait --timeout 120s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || prc=$?
# Exit 1 = done with some items failed (the rejected ones): expected here.
[ $prc = 1 ] || fail "producer exit $prc (expected 1: done, some items failed)"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
# The management API's queue figures lag up to 5 s (collect_statistics_interval).
work_drained() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_drained || fail "work queue not empty: $(queue_depth batches) messages"
assert_accounted $N "$TMP/results.pos"
retries_drained() { [ "$(queue_depth retry.200ms)" = 0 ] && [ "$(queue_depth retry.500ms)" = 0 ]; }
wait_until 15 retries_drained || fail "retry queues not empty"

# The faults really happened: each kind shows in the mock's request log.
for st in 500 429 504 400; do
    grep -q "^[0-9]* $st " "$TMP/mock-requests.log" || fail "the mock never answered $st"
done

# Permanent rejections: every multiple of 37 is dead, in a message whose headers say permanent/400,
# and whose item says the same; nothing else in the dead letters is marked permanent.
dead_messages >"$TMP/dead.json"
seq $MOD $MOD $N >"$TMP/rejected.pos"
jq -r '.[] | select(.properties.headers["x-error-class"] == "permanent") | .payload | fromjson | .items[].position' \
    "$TMP/dead.json" | sort -n >"$TMP/permanent.pos"
diff -q "$TMP/rejected.pos" "$TMP/permanent.pos" >/dev/null ||
    fail "permanent dead letters $(tr '\n' ' ' <"$TMP/permanent.pos") != multiples of $MOD"
bad=$(jq '[.[] | select(.properties.headers["x-error-class"] == "permanent")
           | select(.properties.headers["x-http-status"] != 400 or (.properties.headers["x-error"] | test("400") | not))
          ] | length' "$TMP/dead.json")
[ "$bad" = 0 ] || fail "$bad permanent dead letters without x-http-status 400"
bad=$(jq '[.[] | .payload | fromjson | .items[] | select(.position % '$MOD' == 0)
           | select(.error.class != "permanent" or .error.http_status != 400 or .error.attempts != 1)] | length' \
    "$TMP/dead.json")
[ "$bad" = 0 ] || fail "$bad rejected items without error class permanent, status 400, attempt 1"
# Anything else dead-lettered must have used up its attempts on retryable faults.
jq -r '.[] | .payload | fromjson | .items[] | select(.position % '$MOD' != 0)
       | "\(.position) \(.error.class) \(.error.attempts)"' "$TMP/dead.json" >"$TMP/exhausted.txt"
while read -r pos cls att; do
    [ "$cls" = retryable ] && [ "$att" = 5 ] || fail "position $pos dead-lettered as $cls after $att attempts"
done <"$TMP/exhausted.txt"
[ "$(wc -l <"$TMP/exhausted.txt")" -le 3 ] || fail "too many items gave up: $(wc -l <"$TMP/exhausted.txt")"

# The producer's report agrees with the queues.
[ "$(jq .items_failed "$TMP/report.json")" = "$(wc -l <"$TMP/dead.pos")" ] || fail "report: items_failed"
[ "$(jq .items_succeeded "$TMP/report.json")" = "$(wc -l <"$TMP/results.pos")" ] || fail "report: items_succeeded"
# All three workers took part.
[ "$(cut -d' ' -f5 "$TMP/mock-requests.log" | sort -u | wc -l)" = 3 ] || fail "expected calls from 3 workers"
log "ok: $(wc -l <"$TMP/mock-requests.log") API calls, $(wc -l <"$TMP/exhausted.txt") items exhausted"
