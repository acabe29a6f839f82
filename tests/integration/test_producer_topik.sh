#!/usr/bin/env bash
# The producer on the 10,000-row TOPIK list (19 columns, RFC 4180 quoting, commas and quotes
# inside fields) with a column mapping: no workers; the job's work queue is drained through the
# management API and must hold exactly the 100 batches, positions 1..10,000 each once, with the
# unmapped columns travelling in each item's "extra", quoted commas intact.
. "$(dirname "$0")/lib.sh"

DATA=""
for d in "$SRC/../shared/data" /work/shared/data; do
    [ -r "$d/topik_10k.csv" ] && DATA=$d/topik_10k.csv && break
done
[ -n "$DATA" ] || fail "topik_10k.csv not found in $SRC/../shared/data or /work/shared/data"

# take_all SUFFIX OUT: consumes the queue into OUT, one JSON payload per line.
take_all() { take_messages "$1" "$2" '.[] | .payload | fromjson'; }

BATCH_SIZE=100 timeout 60 "$PRODUCER" "$DATA" --columns 'position=Position, term=Hangul, type=Word_Type' \
    --job-id topik-$$ --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
[ "$(jq .items_published "$TMP/report.json")" = 10000 ] || fail "report: items_published $(jq .items_published "$TMP/report.json")"
[ "$(jq .batches_published "$TMP/report.json")" = 100 ] || fail "report: batches_published"
[ "$(jq .rows_rejected "$TMP/report.json")" = 0 ] || fail "report: rows rejected: $(jq -c .rejected "$TMP/report.json")"

take_all "$(job_queue topik-$$)" "$TMP/batches.jsonl"
[ "$(wc -l <"$TMP/batches.jsonl")" = 100 ] || fail "expected 100 batch messages, got $(wc -l <"$TMP/batches.jsonl")"
[ "$(jq -r .batch "$TMP/batches.jsonl" | sort -n | uniq | wc -l)" = 100 ] || fail "batch numbers not distinct"
[ "$(jq -s 'map(.items | length) | add' "$TMP/batches.jsonl")" = 10000 ] || fail "items in the messages != 10,000"
jq -r '.items[].position' "$TMP/batches.jsonl" | sort -n | diff -q - <(seq 1 10000) >/dev/null ||
    fail "positions in the messages are not 1..10,000 each once"
jq -c '.items[]' "$TMP/batches.jsonl" >"$TMP/items.jsonl"
# Every item: the mapped fields at the top, the 16 other columns in extra (mapped ones not repeated).
jq -e -s 'all(.[]; (.extra | length) == 16 and (.extra | has("Definition")) and (.extra | has("Hangul") | not)
          and (.term | length) > 0 and (.type | length) > 0)' "$TMP/items.jsonl" >/dev/null ||
    fail "an item lacks its extra columns: $(head -c 400 "$TMP/items.jsonl")"
# Row 1, decoded by the CSV rules: a quoted field holding commas arrives whole.
first=$(jq -c 'select(.position == 1)' "$TMP/items.jsonl")
[ "$(jq -r .term <<<"$first")" = "내가" ] || fail "position 1 term: $first"
[ "$(jq -r .type <<<"$first")" = "pronoun" ] || fail "position 1 type: $first"
[ "$(jq -r .extra.Definition <<<"$first")" = "I" ] || fail "position 1 Definition: $first"
[ "$(jq -r .extra.Usage_Hint <<<"$first")" = "Subject marker attached to the pronoun I, common in spoken and casual writing" ] ||
    fail "position 1 Usage_Hint (quoted, with a comma): $first"
[ "$(jq -r .extra.O4_Error <<<"$first")" = "" ] || fail "position 1 empty last column: $first"
# Doubled quotes decode to one quote (position 473: three quoted fields, two of them with "").
q=$(jq -c 'select(.position == 473)' "$TMP/items.jsonl")
[ "$(jq -r .extra.Example_Sentence <<<"$q")" = '그는 "안녕하세요"라고 말했다.' ] || fail "position 473 Example_Sentence: $q"
[ "$(jq -r .extra.Example_Sentence_Translation <<<"$q")" = 'He said "Hello."' ] || fail "position 473 translation: $q"
[ "$(jq -r .term <<<"$q")" = "라고" ] || fail "position 473 term: $q"
log "ok: 100 batches, 10,000 items, extras intact"
