#!/usr/bin/env bash
# Hostile API answers cannot break the output, the logs or the report. The mock answers half the
# calls with hostile content of one kind at a time (control: ESC, VT, FF, BEL, CR, DEL and C1
# characters in field values; tabs: TAB and LF inside fields; huge: a 256 KiB field; columns: rows of
# 12 and 5 columns; deep: JSON 5000 deep; utf8: invalid UTF-8; then mix). For each kind a job runs
# to its end, and: every item is in the output or dead-lettered, exactly once; the TSV is the header
# and one line per card, 9 columns on every line, the line's position and term its own item's, no
# control byte (0x00-0x08, 0x0a-0x1f, 0x7f) or C1 character anywhere, valid UTF-8; the report is
# valid JSON; every line of the workers' logs (one text, one JSON) is one log line. Answers with
# the wrong column count or invalid UTF-8 are retried, then dead-lettered with their reason.
. "$(dirname "$0")/lib.sh"

N=16
KINDS="control tabs huge columns deep utf8 mix"
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 2 --hostile 0.5 --hostile-kind control
# No cache: each job's items go to the API again, whatever an earlier kind answered for them.
export API_KEY=sk-hostile WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=4 MAX_ATTEMPTS=3 RETRY_DELAYS=300ms CACHE_TTL=0
start_worker text
W1=$LAST_PID
LOG_FORMAT=json start_worker json
W2=$LAST_PID
for w in text json; do wait_until 20 grep -q consuming "$TMP/worker-$w.log" || fail "worker $w did not start"; done

# dead_of JOB: positions of JOB's items in the dead-letter queue, one per line.
dead_of() { dead_messages | jq -r --arg j "$1" '.[].payload | fromjson | select(.job_id == $j) | .items[].position'; }

# check_tsv FILE: header, then lines of 9 columns whose position and term are an item's own; no control
# character (TAB apart), no C1, valid UTF-8.
check_tsv() {
    local f=$1
    [ "$(head -1 "$f")" = "$(printf 'position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level')" ] ||
        fail "$f: not the TSV header: $(head -1 "$f" | cut -c1-80)"
    local bad
    bad=$(awk -F'\t' 'NR > 1 && (NF != 9 || $1 !~ /^[0-9]+$/ || $2 != "단어" $1) { print NR ": " NF " columns: " substr($0, 1, 60); exit }' "$f")
    [ -z "$bad" ] || fail "$f: line $bad"
    ! LC_ALL=C grep -qaP '[\x00-\x08\x0a-\x1f\x7f]' <(tr -d '\n' <"$f") || fail "$f: a control byte in the output"
    ! LC_ALL=C grep -qaP '\xc2[\x80-\x9f]' "$f" || fail "$f: a C1 control in the output"
    iconv -f UTF-8 -t UTF-8 "$f" >/dev/null 2>&1 || fail "$f: not valid UTF-8"
    [ "$(tail -c1 "$f" | od -An -c | tr -d ' ')" = '\n' ] || fail "$f: the last line is not ended"
}

for kind in $KINDS; do
    mock_control "{\"hostile_kind\":\"$kind\",\"reset_stats\":true}"
    job=hostile-$kind-$$
    prc=0
    timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id "$job" --wait --timeout 75s --output "$TMP/$kind.tsv" \
        --report "$TMP/$kind.json" >"$TMP/producer-$kind.log" 2>&1 || prc=$?
    [ $prc = 0 ] || [ $prc = 1 ] || fail "$kind: producer exit $prc"
    served=$(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq '[.hostile // {} | .[]] | add // 0')
    [ "$served" -gt 0 ] || fail "$kind: the mock served no hostile answer"
    jq -e . "$TMP/$kind.json" >/dev/null || fail "$kind: the report is not valid JSON"
    [ "$(jq .timed_out "$TMP/$kind.json")" = false ] || fail "$kind: the job timed out"
    check_tsv "$TMP/$kind.tsv"
    tsv_positions "$TMP/$kind.tsv" >"$TMP/$kind.pos"
    dead_of "$job" | sort -n >"$TMP/$kind.dead"
    dups=$(sort -n "$TMP/$kind.pos" "$TMP/$kind.dead" | uniq -d | tr '\n' ' ')
    [ -z "$dups" ] || fail "$kind: positions twice (output and dead letters): $dups"
    seq 1 $N | diff -q - <(sort -n "$TMP/$kind.pos" "$TMP/$kind.dead") >/dev/null ||
        fail "$kind: not every item accounted once: $(seq 1 $N | diff - <(sort -n "$TMP/$kind.pos" "$TMP/$kind.dead") | grep '^[<>]' | head -5 | tr '\n' ' ')"
    [ "$(jq .items_succeeded "$TMP/$kind.json")" = "$(wc -l <"$TMP/$kind.pos")" ] ||
        fail "$kind: the report counts $(jq .items_succeeded "$TMP/$kind.json") succeeded, the output holds $(wc -l <"$TMP/$kind.pos")"
    log "$kind: $served hostile answers; $(wc -l <"$TMP/$kind.pos") items in the output ($(($(wc -l <"$TMP/$kind.tsv") - 1)) cards), $(wc -l <"$TMP/$kind.dead") dead-lettered"
done

# Every answer hostile: each item is dead-lettered after MAX_ATTEMPTS with the reason of its kind.
make_csv 4 "$TMP/four.csv"
for case in "columns|fields (expected 9)" "deep|nesting too deep" "utf8|utf-8"; do
    kind=${case%%|*} want=${case#*|}
    mock_control "{\"hostile_kind\":\"$kind\",\"hostile\":1}"
    job=all-$kind-$$
    prc=0
    # No --output: there is no card to write (and the producer's UBSan build trips over an empty one).
    timeout 60 "$PRODUCER" "$TMP/four.csv" --job-id "$job" --wait --timeout 45s \
        --report "$TMP/all-$kind.json" >"$TMP/producer-all-$kind.log" 2>&1 || prc=$?
    [ $prc = 1 ] || fail "all $kind: producer exit $prc, want 1"
    [ "$(jq .items_failed "$TMP/all-$kind.json")" = 4 ] || fail "all $kind: $(jq .items_failed "$TMP/all-$kind.json") failed, want 4"
    jq -e . "$TMP/all-$kind.json" >/dev/null || fail "all $kind: the report is not valid JSON"
    dead_messages | jq -r --arg j "$job" '.[].payload | fromjson | select(.job_id == $j) | .items[].error.message' \
        >"$TMP/all-$kind.reasons"
    [ "$(wc -l <"$TMP/all-$kind.reasons")" = 4 ] || fail "all $kind: $(wc -l <"$TMP/all-$kind.reasons") items dead-lettered, want 4"
    ! grep -qviF "$want" "$TMP/all-$kind.reasons" ||
        fail "all $kind: a reason without '$want': $(grep -viF "$want" "$TMP/all-$kind.reasons" | head -1)"
    grep -q "gave up after 3 attempts" "$TMP/all-$kind.reasons" || fail "all $kind: not retried before it was dead-lettered"
    log "all $kind: 4 items dead-lettered: $(head -1 "$TMP/all-$kind.reasons")"
done
work_empty() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_empty || fail "work queue not empty"

# The logs: one line per event, each starting like a log line.
LINE_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z flashcard-worker\[[0-9]+\] (debug|info |warn |error) '
[ "$(grep -acvE "$LINE_RE" "$TMP/worker-text.log" || true)" = 0 ] ||
    fail "worker text: lines that are not log lines: $(grep -avnE "$LINE_RE" "$TMP/worker-text.log" | head -3)"
grep -qa "answer" "$TMP/worker-text.log" || log "(the text worker logged no answer's reason)"
jq -R -e 'fromjson | .msg' "$TMP/worker-json.log" >/dev/null || fail "worker json: a line that is not a JSON object"
! LC_ALL=C grep -qaP '[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]' "$TMP/worker-text.log" "$TMP/worker-json.log" ||
    fail "a control character in a worker's log"
kill -0 $W1 && kill -0 $W2 || fail "a worker died"
kill -TERM $W1 $W2
wait $W1 || fail "worker text exit $?"
wait $W2 || fail "worker json exit $?"
log "ok"
