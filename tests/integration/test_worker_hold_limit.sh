#!/usr/bin/env bash
# HOLD_LIMIT: a batch that takes longer than the hold limit is checkpointed: it starts no new
# call from HOLD_LIMIT - API_TIMEOUT (here half of HOLD_LIMIT), lets calls in flight finish,
# publishes the results so far, re-publishes the unfinished items as a continuation batch, then
# acks the original. The job completes with every item once, and no call is wasted.
. "$(dirname "$0")/lib.sh"

N=60
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 250
# One batch needs 60 items x 2 calls x 0.25 s / 2 in flight = 15 s; the hold limit is 2 s.
export API_KEY=sk-hold WORKER_COUNT=2 RATE_LIMIT=0 BATCH_SIZE=$N HOLD_LIMIT=2s API_TIMEOUT=5s
start_worker 1
timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id "hold-$$" --wait --timeout 80s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
n_cp=$(grep -c "checkpointing; calls in flight may finish" "$TMP/worker-1.log" || true)
[ "$n_cp" -ge 3 ] || fail "expected several checkpoints, saw $n_cp"
! grep -q "abandoning its calls in flight" "$TMP/worker-1.log" || fail "calls in flight were abandoned"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = $((2 * N)) ] || fail "duplicate or missing cards"
assert_accounted $N "$TMP/results.pos"
# Every stage-1 call was made once: checkpoints waste no call (stage-1 answers come from the cache).
calls=$(wc -l <"$TMP/mock-requests.log")
[ "$calls" = $((2 * N)) ] || fail "expected $((2 * N)) API calls, the mock saw $calls"
log "ok: $n_cp checkpoints, $calls calls"
