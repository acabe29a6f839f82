#!/usr/bin/env bash
# The producer end to end on the real 1,000-word vocabulary (CRLF, UTF-8): 2 workers and the
# mock API; --wait --output out.tsv holds every item once (header + 2 cards each, ordered by
# position), a second job's --output x.jsonl holds 1,000 items with cards/analysis/usage, and
# the --report JSON carries the right counts.
. "$(dirname "$0")/lib.sh"

DATA=$SRC/tests/data/vocabulary_1000.csv
[ -r "$DATA" ] || fail "missing $DATA"
start_mock --latency-ms 2
export API_KEY=sk-vocab-secret WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=40
start_worker 1
start_worker 2

# 1. Anki TSV.
timeout 100 "$PRODUCER" "$DATA" --job-id vocab-$$ --wait --timeout 80s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
[ "$(head -1 "$TMP/out.tsv" | cut -f1-2)" = "$(printf 'position\tterm')" ] || fail "TSV header: $(head -1 "$TMP/out.tsv")"
[ "$(tail -n +2 "$TMP/out.tsv" | wc -l)" = 2000 ] || fail "expected 2,000 cards, got $(tail -n +2 "$TMP/out.tsv" | wc -l)"
# Ordered by position: the position column is non-decreasing, and each position has exactly 2 cards.
tail -n +2 "$TMP/out.tsv" | cut -f1 >"$TMP/card.pos"
sort -n -c "$TMP/card.pos" 2>/dev/null || fail "TSV not ordered by position"
uniq -c "$TMP/card.pos" | awk '$1 != 2 { bad = 1 } END { exit bad }' || fail "some item has other than 2 cards"
uniq "$TMP/card.pos" >"$TMP/results.pos"
seq 1 1000 | diff -q - "$TMP/results.pos" >/dev/null || fail "positions are not 1..1000 each once"
# The terms travel unchanged (UTF-8, CR stripped): line 2 of the dataset is position 1.
want=$(sed -n 2p "$DATA" | tr -d '\r' | cut -d, -f2)
got=$(awk -F'\t' '$1 == 1 { print $2; exit }' "$TMP/out.tsv")
[ "$want" = "$got" ] || fail "term of position 1: want '$want', got '$got'"
assert_work_done "vocab-$$"
assert_accounted 1000 "$TMP/results.pos"

r=$TMP/report.json
jq -e . "$r" >/dev/null || fail "report is not JSON"
check() { [ "$(jq -r "$1" "$r")" = "$2" ] || fail "report: $1 is $(jq -c "$1" "$r"), want $2"; }
check .job_id "vocab-$$"
check .rows_read 1000
check .rows_rejected 0
check '.rejected | length' 0
check .items_published 1000
check .batches_published 25
check .batches_skipped 0
check .items_total 1000
check .items_succeeded 1000
check .items_failed 0
check '.failed | length' 0
check .timed_out false
check '.api_calls + .cache_hits' 2000
jq -e '.prompt_tokens > 0 and .completion_tokens > 0 and .cost_estimate > 0 and .elapsed_seconds > 0' "$r" \
    >/dev/null || fail "report: tokens, cost or elapsed missing: $(jq -c . "$r")"
grep -q "wrote 1000 items to $TMP/out.tsv" "$TMP/producer.log" || fail "no 'wrote' line in the producer log"

# 2. JSON Lines, from stdin, a second job.
timeout 100 "$PRODUCER" - --format csv --job-id vocab-jsonl-$$ --wait --timeout 80s --output "$TMP/x.jsonl" \
    <"$DATA" >"$TMP/producer-jsonl.log" 2>&1 || fail "producer (jsonl) exit $?"
[ "$(wc -l <"$TMP/x.jsonl")" = 1000 ] || fail "expected 1,000 JSON lines, got $(wc -l <"$TMP/x.jsonl")"
jq -e -s 'length == 1000 and all(.[]; (.cards | type) == "array" and (.cards | length) == 2
          and has("analysis") and has("usage") and (.term | length) > 0)' "$TMP/x.jsonl" >/dev/null ||
    fail "a JSON line lacks cards/analysis/usage: $(head -c 300 "$TMP/x.jsonl")"
jq -r .position "$TMP/x.jsonl" | diff -q - <(seq 1 1000) >/dev/null || fail "JSONL not positions 1..1000 in order"
! grep -rq "sk-vocab-secret" "$TMP"/*.log || fail "the API key appeared in a log"
log "ok"
