#!/usr/bin/env bash
# API answers beyond API_MAX_RESPONSE_BYTES (default 1 MiB) fail the call with a classified,
# retryable error instead of being read into memory: with the mock padding every answer to
# ANSWER_BYTES, each item fails its MAX_ATTEMPTS=2 and is dead-lettered with a reason naming the
# size; --wait exits 1 and names every item as failed; nothing is cached; the worker's peak RSS
# stays far below one answer per call in flight. Then the mock answers normally and the same
# items, under a new job id, all succeed through real API calls: nothing bad was cached.
. "$(dirname "$0")/lib.sh"

N=10
ANSWER_BYTES=$((16 * 1024 * 1024)) # every answer 16 MiB; the cap is 1 MiB
RSS_MAX_KB=$((48 * 1024))          # 4 calls in flight would hold 64 MiB of answers uncapped
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --answer-bytes $ANSWER_BYTES
export API_KEY=sk-answer-cap WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=2 RETRY_DELAYS=1s
start_worker 1
W1=$LAST_PID
wait_until 15 grep -q consuming "$TMP/worker-1.log" || fail "the worker did not start"
cache_keys() { redis-cli --scan --pattern "$QUEUE_PREFIX:cache:*" | wc -l; }

# ---- 1. every answer too big: every item fails, nothing cached -------------------------
JOB1=cap1-$$
prc=0
timeout 45 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB1" --wait --timeout 30s --output "$TMP/out1.tsv" \
    --report "$TMP/report1.json" >"$TMP/producer1.log" 2>&1 || prc=$?
[ $prc = 1 ] || fail "job 1: producer exit $prc, want 1 (items failed)"
[ "$(jq .timed_out "$TMP/report1.json")" = false ] || fail "job 1: timed out instead of finishing with failures"
[ "$(jq .items_succeeded "$TMP/report1.json")" = 0 ] || fail "job 1: $(jq .items_succeeded "$TMP/report1.json") items succeeded"
[ "$(jq .items_failed "$TMP/report1.json")" = $N ] || fail "job 1: $(jq .items_failed "$TMP/report1.json") items failed, want $N"
# Every item named once among the failed, with a reason naming the size.
jq -r '.failed[].position' "$TMP/report1.json" | sort -n >"$TMP/failed.pos"
seq 1 $N | diff -q - "$TMP/failed.pos" >/dev/null || fail "job 1: failed items $(tr '\n' ' ' <"$TMP/failed.pos"), want 1..$N"
bad=$(jq -c '.failed[] | select((tojson | test("larger than 1048576 bytes")) | not)' "$TMP/report1.json" | head -3)
[ -z "$bad" ] || fail "job 1: failed items without the size in their reason: $bad"
# The dead letters: every item once, classified retryable after its 2 attempts.
: >"$TMP/results1.pos"
assert_accounted $N "$TMP/results1.pos"
dead_messages | jq -r '.[].properties.headers["x-error-class"]' | sort -u >"$TMP/dead.class"
[ "$(cat "$TMP/dead.class")" = retryable ] || fail "dead letters classified $(tr '\n' ' ' <"$TMP/dead.class"), want retryable"
dead_messages | jq -r '.[].payload | fromjson | .items[].error.message' | grep -vc "larger than 1048576 bytes" \
    >"$TMP/dead.bad" || true
[ "$(cat "$TMP/dead.bad")" = 0 ] || fail "$(cat "$TMP/dead.bad") dead-lettered items without the size in their error"
[ "$(dead_messages | jq '[.[].payload | fromjson | .items[].error.attempts] | unique')" = "$(jq -n '[2]')" ] ||
    fail "dead-lettered items not tried exactly MAX_ATTEMPTS=2 times"
[ "$(cache_keys)" = 0 ] || fail "$(cache_keys) answers cached from oversized answers"
rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$W1/status")
log "job 1: $N items failed as too big; worker peak RSS ${rss_kb} kB"
[ "$rss_kb" -lt $RSS_MAX_KB ] || fail "worker peak RSS ${rss_kb} kB: oversized answers were read into memory"
take_messages dead "$TMP/dead1.json" '.[].message_id' # job 2's accounting starts from no dead letters

# ---- 2. answers back to normal: the same items under a new job all succeed -------------
mock_control '{"answer_bytes":0}'
JOB2=cap2-$$
prc=0
timeout 45 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB2" --wait --timeout 30s --output "$TMP/out2.tsv" \
    --report "$TMP/report2.json" >"$TMP/producer2.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "job 2: producer exit $prc after the answers went back to normal"
tsv_positions "$TMP/out2.tsv" >"$TMP/results2.pos"
[ "$(tail -n +2 "$TMP/out2.tsv" | wc -l)" = $((2 * N)) ] || fail "job 2: duplicate or missing cards in the output"
assert_accounted $N "$TMP/results2.pos"
[ "$(wc -l <"$TMP/dead.pos")" = 0 ] || fail "job 2: dead letters"
# Every stage answer came from the API, none from the cache; and the cache does work.
[ "$(jq .api_calls "$TMP/report2.json")" = $((2 * N)) ] || fail "job 2: $(jq .api_calls "$TMP/report2.json") API calls, want $((2 * N))"
[ "$(jq .cache_hits "$TMP/report2.json")" = 0 ] || fail "job 2: $(jq .cache_hits "$TMP/report2.json") cache hits"
[ "$(cache_keys)" -gt 0 ] || fail "job 2: no answer cached: the cache check of job 1 proves nothing"
kill -0 "$W1" 2>/dev/null || fail "the worker died"
log "ok: oversized answers failed every item once, nothing cached; normal answers then all succeeded"
