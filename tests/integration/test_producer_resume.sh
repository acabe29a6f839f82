#!/usr/bin/env bash
# Resume after a crash: the producer is killed with SIGKILL while publishing 200,000 rows in
# batches of 10; a re-run of the same job id without --resume is refused (exit 2); --resume
# then publishes the rest. In the job's work queue every batch is present with exactly its 10
# positions; a batch confirmed before the kill is there exactly once; the only duplicates are
# batches that were in flight (published, not yet confirmed) at the kill, at most one publish
# window of them (at-least-once: the workers deduplicate by position). Then --resume --wait
# after a kill while the input (a FIFO) was idle: the confirms of the first run were recorded
# while it waited for input, and the resumed run counts and collects the whole job.
. "$(dirname "$0")/lib.sh"

ROWS=200000 BATCH=10 WINDOW=256
BATCHES=$((ROWS / BATCH))
JOB=resume-$$
CONFIRMED_KEY="$QUEUE_PREFIX:job:{$JOB}:confirmed"
META_KEY="$QUEUE_PREFIX:job:{$JOB}:meta"
make_csv $ROWS "$TMP/big.csv"
export BATCH_SIZE=$BATCH

# take_ids SUFFIX OUT: consumes the queue, one line per message:
# message_id batch items first_position last_position.
take_ids() {
    take_messages "$1" "$2" '.[] | (.payload | fromjson) as $b
        | [.properties.message_id, $b.batch, ($b.items | length), $b.items[0].position, $b.items[-1].position] | @tsv'
}
# confirmed_batches: the batch numbers set in the job's confirmed bitmap, one per line.
confirmed_batches() {
    redis-cli --raw getrange "$CONFIRMED_KEY" 0 -1 | head -c "$(redis-cli strlen "$CONFIRMED_KEY")" |
        od -An -v -tu1 | tr -s ' ' '\n' | sed '/^$/d' |
        awk '{ for (b = 0; b < 8; b++) if (int($1 / 2 ^ (7 - b)) % 2) print (NR - 1) * 8 + b }'
}
bitcount() { redis-cli bitcount "$CONFIRMED_KEY"; }

# 1. Publish, and kill -9 once 2,000 batches are confirmed.
"$PRODUCER" "$TMP/big.csv" --job-id "$JOB" >"$TMP/first.log" 2>&1 &
FIRST=$!
PIDS+=("$FIRST")
end=$((SECONDS + 30))
while [ "$(bitcount)" -lt 2000 ]; do
    kill -0 $FIRST 2>/dev/null || fail "the producer ended before 2,000 batches were confirmed"
    [ $SECONDS -lt $end ] || fail "2,000 batches not confirmed within 30 s"
    sleep 0.02
done
kill -9 $FIRST 2>/dev/null || fail "the producer was gone before the kill"
wait $FIRST 2>/dev/null || true
confirmed_batches >"$TMP/confirmed.at-kill"
at_kill=$(wc -l <"$TMP/confirmed.at-kill")
[ "$at_kill" = "$(bitcount)" ] || fail "bitmap decoding: $at_kill batches vs BITCOUNT $(bitcount)"
[ "$at_kill" -lt $BATCHES ] || fail "the producer finished before the kill; nothing to resume"
[ "$(redis-cli hget "$META_KEY" published)" != 1 ] || fail "the killed run marked the job published"
log "killed with $at_kill of $BATCHES batches confirmed"

# 2. The same job id without --resume is refused and publishes nothing.
rc=0
timeout 30 "$PRODUCER" "$TMP/big.csv" --job-id "$JOB" >"$TMP/again.log" 2>&1 || rc=$?
[ $rc = 2 ] || fail "a re-run without --resume: exit $rc, want 2"
grep -q -- "--resume" "$TMP/again.log" || fail "the refusal does not mention --resume: $(cat "$TMP/again.log")"
[ "$(bitcount)" = "$at_kill" ] || fail "the refused run confirmed batches"

# 3. Resume.
timeout 60 "$PRODUCER" "$TMP/big.csv" --job-id "$JOB" --resume --report "$TMP/report.json" \
    >"$TMP/resume.log" 2>&1 || fail "resume: exit $?"
r=$TMP/report.json
[ "$(jq .batches_skipped "$r")" = "$at_kill" ] || fail "report: batches_skipped $(jq .batches_skipped "$r"), want $at_kill"
[ "$(jq '.batches_published + .batches_skipped' "$r")" = $BATCHES ] || fail "report: published + skipped != $BATCHES"
[ "$(jq .items_published "$r")" = $(((BATCHES - at_kill) * BATCH)) ] || fail "report: items_published"
[ "$(jq .items_total "$r")" = $ROWS ] || fail "report: items_total $(jq .items_total "$r"), want $ROWS"
[ "$(redis-cli hget "$META_KEY" items)" = $ROWS ] || fail "job record: items $(redis-cli hget "$META_KEY" items)"
[ "$(bitcount)" = $BATCHES ] || fail "after resume $(bitcount) of $BATCHES batches are marked confirmed"

# 4. The job's work queue: every batch, with its own 10 positions.
take_ids "$(job_queue "$JOB")" "$TMP/ids.tsv"
total=$(wc -l <"$TMP/ids.tsv")
awk -v job="$JOB" '$1 != job "-" $2' "$TMP/ids.tsv" | head -3 >"$TMP/badid"
[ ! -s "$TMP/badid" ] || fail "message ids not <job>-<batch>: $(cat "$TMP/badid")"
awk -v n=$BATCH '$3 != n || $4 != $2 * n + 1 || $5 != $2 * n + n' "$TMP/ids.tsv" | head -3 >"$TMP/badbatch"
[ ! -s "$TMP/badbatch" ] || fail "batches holding other positions than their own: $(cat "$TMP/badbatch")"
cut -f2 "$TMP/ids.tsv" | sort -n | uniq >"$TMP/distinct"
seq 0 $((BATCHES - 1)) | diff -q - "$TMP/distinct" >/dev/null ||
    fail "batches missing: $(seq 0 $((BATCHES - 1)) | { grep -vFxf "$TMP/distinct" || true; } | head -5 | tr '\n' ' ')"
[ "$(cut -f2 "$TMP/ids.tsv" | sort -n | uniq | awk -v n=$BATCH '{ s += n } END { print s }')" = $ROWS ] ||
    fail "distinct batches do not hold $ROWS items"
cut -f2 "$TMP/ids.tsv" | sort -n | uniq -d >"$TMP/dups"
dups=$(wc -l <"$TMP/dups")
[ "$(cut -f2 "$TMP/ids.tsv" | sort -n | uniq -c | awk '$1 > 2' | wc -l)" = 0 ] || fail "a batch published 3 times or more"
{ grep -Fxf "$TMP/dups" "$TMP/confirmed.at-kill" || true; } | head -3 >"$TMP/confdup"
[ ! -s "$TMP/confdup" ] || fail "batches confirmed before the kill were published again: $(cat "$TMP/confdup")"
[ "$dups" -le $WINDOW ] || fail "$dups duplicated batches: more than one publish window ($WINDOW)"
[ "$total" = $((BATCHES + dups)) ] || fail "$total messages for $BATCHES batches and $dups duplicates"
log "kill -9 and resume: $total messages, $BATCHES distinct batches, $dups re-published from the window in flight at the kill"

# 5. --resume --wait counts the whole job, not only what the resumed run published: the first
# run reads 500 of 1,000 rows from a FIFO held open (so it is still running when killed), gets
# its 49 full batches confirmed and is killed; the resumed run with --wait must collect all 1,000.
JOB2=resume-wait-$$
KEY2="$QUEUE_PREFIX:job:{$JOB2}:confirmed"
make_csv 1000 "$TMP/small.csv"
mkfifo "$TMP/in.fifo"
"$PRODUCER" "$TMP/in.fifo" --format csv --job-id $JOB2 >"$TMP/wait-first.log" 2>&1 &
FIRST=$!
PIDS+=("$FIRST")
exec 7>"$TMP/in.fifo"
head -n 501 "$TMP/small.csv" >&7
confirmed2_is() { [ "$(redis-cli bitcount "$KEY2")" = "$1" ]; }
wait_until 30 confirmed2_is 49 || fail "49 batches not confirmed: $(redis-cli bitcount "$KEY2")"
kill -9 $FIRST
wait $FIRST 2>/dev/null || true
exec 7>&-
start_mock --latency-ms 2
export API_KEY=sk-resume-secret WORKER_COUNT=8 RATE_LIMIT=0
start_worker 1
start_worker 2
timeout 100 "$PRODUCER" "$TMP/small.csv" --job-id $JOB2 --resume --wait --timeout 80s --output "$TMP/out.tsv" \
    --report "$TMP/wait.json" >"$TMP/wait-resume.log" 2>&1 || fail "resume --wait: exit $?"
[ "$(jq .batches_skipped "$TMP/wait.json")" = 49 ] || fail "resume --wait: batches_skipped $(jq .batches_skipped "$TMP/wait.json")"
[ "$(jq .items_total "$TMP/wait.json")" = 1000 ] || fail "resume --wait: items_total $(jq .items_total "$TMP/wait.json")"
[ "$(jq .items_succeeded "$TMP/wait.json")" = 1000 ] || fail "resume --wait: items_succeeded $(jq .items_succeeded "$TMP/wait.json")"
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_work_done $JOB2
assert_accounted 1000 "$TMP/results.pos"
log "ok: resumed --wait collected all 1,000 items"
