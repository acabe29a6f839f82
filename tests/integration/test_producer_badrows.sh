#!/usr/bin/env bash
# Bad input: every good row of tests/data/bad_rows.csv is published, every bad one is reported
# with its line on stderr and in --report, exit 1; --strict publishes nothing and exits 1;
# usage and configuration errors exit 2 with a one-line message naming the setting and
# publish or record nothing.
. "$(dirname "$0")/lib.sh"

DATA=$SRC/tests/data/bad_rows.csv
[ -r "$DATA" ] || fail "missing $DATA"

# take_all SUFFIX OUT: consumes the queue into OUT, one JSON payload per line.
take_all() { take_messages "$1" "$2" '.[] | .payload | fromjson'; }
# take_job JOB OUT: consumes into OUT what the shared work queue holds and then JOB's own queue
# (a job whose queue was never declared published nothing there).
take_job() {
    take_all batches "$2"
    [ "$(queue_depth "$(job_queue "$1")")" = absent ] && return 0
    take_all "$(job_queue "$1")" "$TMP/job.jsonl"
    cat "$TMP/job.jsonl" >>"$2"
}
# job_recorded ID: true if the job has a record in Redis.
job_recorded() { [ "$(redis-cli exists "$QUEUE_PREFIX:job:{$1}:meta")" != 0 ]; }
# run_producer NAME ARGS...: runs the producer with stderr in $TMP/NAME.err; sets RC.
run_producer() {
    local name=$1; shift
    RC=0
    timeout 60 "$PRODUCER" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || RC=$?
}

# 1. Lenient: 5 good rows published, 8 bad rows reported, exit 1.
run_producer lenient "$DATA" --job-id bad-$$ --report "$TMP/report.json"
[ "$RC" = 1 ] || fail "lenient run: exit $RC, want 1"
cat >"$TMP/want.rejected" <<'EOF'
line 3: invalid UTF-8 in field 'term'
line 4: empty term
line 6: position 'abc' is not a positive integer
line 7: position '0' is not a positive integer
line 8: position '-4' is not a positive integer
line 9: expected 3 fields, got 2
line 10: expected 3 fields, got 4
line 11: duplicate position 1
EOF
sed -n 's/^flashcard-producer: rejected: //p' "$TMP/lenient.err" | diff "$TMP/want.rejected" - >&2 ||
    fail "stderr does not report exactly the bad rows"
jq -r '.rejected[] | .reason' "$TMP/report.json" | diff "$TMP/want.rejected" - >&2 || fail "report: rejected reasons"
[ "$(jq -c '[.rejected[].line]' "$TMP/report.json")" = "[3,4,6,7,8,9,10,11]" ] || fail "report: rejected lines"
r=$TMP/report.json
for kv in rows_read=13 rows_rejected=8 items_published=5 batches_published=1 items_total=5; do
    [ "$(jq ".${kv%=*}" "$r")" = "${kv#*=}" ] || fail "report: ${kv%=*} is $(jq ".${kv%=*}" "$r"), want ${kv#*=}"
done
job_recorded "bad-$$" || fail "the lenient run recorded no job"
take_job bad-$$ "$TMP/lenient.jsonl"
[ "$(wc -l <"$TMP/lenient.jsonl")" = 1 ] || fail "expected 1 batch message"
jq -c '.items[] | [.position, .term, .type]' "$TMP/lenient.jsonl" >"$TMP/got.items"
cat >"$TMP/want.items" <<'EOF'
[1,"사과","noun"]
[7,"따옴표, 쉼표","noun"]
[8,"여러\n줄","phrase"]
[9,"키위","noun"]
[10,"배","noun"]
EOF
diff "$TMP/want.items" "$TMP/got.items" >&2 || fail "published items differ from the good rows"

# 2. --strict: nothing published, nothing recorded, exit 1, the first bad row named.
run_producer strict "$DATA" --strict --job-id strict-$$
[ "$RC" = 1 ] || fail "--strict: exit $RC, want 1"
grep -q "line 3: invalid UTF-8" "$TMP/strict.err" || fail "--strict does not name the bad row: $(cat "$TMP/strict.err")"
take_job strict-$$ "$TMP/strict.jsonl"
[ ! -s "$TMP/strict.jsonl" ] || fail "--strict published $(wc -l <"$TMP/strict.jsonl") messages"
! job_recorded "strict-$$" || fail "--strict recorded a job"
# With --wait it does not wait for a job it did not publish (nor write an output for it).
run_producer strict-wait "$DATA" --strict --wait --timeout 20s --output "$TMP/strict-wait.tsv" --job-id strict-wait-$$
[ "$RC" = 1 ] || fail "--strict --wait: exit $RC, want 1"
grep -q "not waiting: the job was not published in full" "$TMP/strict-wait.err" || fail "--strict --wait waited"
[ ! -e "$TMP/strict-wait.tsv" ] || fail "--strict --wait wrote an output"
# A clean file passes --strict.
printf 'position,term,type\n1,가다,verb\n2,오다,verb\n' >"$TMP/clean.csv"
run_producer strict-ok "$TMP/clean.csv" --strict --job-id strict-ok-$$
[ "$RC" = 0 ] || fail "--strict on a clean file: exit $RC: $(cat "$TMP/strict-ok.err")"
take_job strict-ok-$$ "$TMP/strict-ok.jsonl"
[ "$(jq -c '[.items[].position]' "$TMP/strict-ok.jsonl")" = "[1,2]" ] || fail "--strict on a clean file published wrong items"
# --strict reads a pipe too (it keeps a copy for the second pass).
RC=0
timeout 60 "$PRODUCER" - --format csv --strict --job-id strict-pipe-$$ <"$TMP/clean.csv" >/dev/null 2>"$TMP/pipe.err" || RC=$?
[ "$RC" = 0 ] || fail "--strict from stdin: exit $RC: $(cat "$TMP/pipe.err")"
take_job strict-pipe-$$ "$TMP/strict-pipe.jsonl"
[ "$(jq -c '[.items[].position]' "$TMP/strict-pipe.jsonl")" = "[1,2]" ] || fail "--strict from stdin published wrong items"
RC=0
cat "$DATA" | timeout 60 "$PRODUCER" - --format csv --strict --job-id strict-pipe-bad-$$ >/dev/null 2>"$TMP/pipe-bad.err" || RC=$?
[ "$RC" = 1 ] || fail "--strict from stdin with bad rows: exit $RC, want 1"
grep -q "line 3: invalid UTF-8" "$TMP/pipe-bad.err" || fail "--strict from stdin does not name the bad row"
take_job strict-pipe-bad-$$ "$TMP/strict-pipe-bad.jsonl"
[ ! -s "$TMP/strict-pipe-bad.jsonl" ] || fail "--strict from stdin published $(wc -l <"$TMP/strict-pipe-bad.jsonl") messages"
# An item no batch can hold (BATCH_MAX_BYTES) is a bad row: named by line, and --strict publishes nothing.
printf 'position,term,type\n1,가다,verb\n2,%s,verb\n3,오다,verb\n' "$(head -c 3000 /dev/zero | tr '\0' x)" >"$TMP/big.csv"
BATCH_MAX_BYTES=2048 run_producer big-strict "$TMP/big.csv" --strict --job-id big-strict-$$
[ "$RC" = 1 ] || fail "--strict with an item over BATCH_MAX_BYTES: exit $RC, want 1"
grep -q "line 3: item of [0-9]* bytes does not fit in a batch of BATCH_MAX_BYTES (2048)" "$TMP/big-strict.err" ||
    fail "the too-big item is not named: $(cat "$TMP/big-strict.err")"
take_job big-strict-$$ "$TMP/big-strict.jsonl"
[ ! -s "$TMP/big-strict.jsonl" ] || fail "--strict published despite a too-big item"
BATCH_MAX_BYTES=2048 run_producer big "$TMP/big.csv" --job-id big-$$
[ "$RC" = 1 ] || fail "an item over BATCH_MAX_BYTES: exit $RC, want 1 (rejected row)"
take_job big-$$ "$TMP/big.jsonl"
[ "$(jq -c '[.items[].position]' "$TMP/big.jsonl" | tr -d '\n')" = "[1,3]" ] || fail "the rows around the too-big one were not published"

# 3. Usage and configuration errors: exit 2, one line naming the setting, nothing published or recorded.
usage_error() { # NAME PATTERN ENV... -- ARGS...
    local name=$1 pattern=$2; shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    RC=0
    env "${envs[@]}" timeout 30 "$PRODUCER" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || RC=$?
    [ "$RC" = 2 ] || fail "$name: exit $RC, want 2: $(cat "$TMP/$name.err")"
    [ "$(wc -l <"$TMP/$name.err")" = 1 ] || fail "$name: want a one-line error, got: $(cat "$TMP/$name.err")"
    grep -q -- "$pattern" "$TMP/$name.err" || fail "$name: error does not name $pattern: $(cat "$TMP/$name.err")"
    ! job_recorded "$name-$$" || fail "$name: a job was recorded"
}
usage_error batch-size BATCH_SIZE BATCH_SIZE=abc -- "$TMP/clean.csv" --job-id batch-size-$$
usage_error batch-size-0 BATCH_SIZE BATCH_SIZE=0 -- "$TMP/clean.csv" --job-id batch-size-0-$$
usage_error amqp-url AMQP_URL AMQP_URL=nonsense -- "$TMP/clean.csv" --job-id amqp-url-$$
usage_error columns "column 'Nope' (position) not found" -- "$TMP/clean.csv" --columns position=Nope --job-id columns-$$
usage_error columns-key "unknown column key" -- "$TMP/clean.csv" --columns pos=Position --job-id columns-key-$$
usage_error no-file "cannot open" -- "$TMP/missing.csv" --job-id no-file-$$
usage_error format "format" -- "$TMP/clean.txt" --job-id format-$$
usage_error job-id JOB_ID -- "$TMP/clean.csv" --job-id 'bad id!'
usage_error resume "--resume needs" -- "$TMP/clean.csv" --resume
! grep -rq nonsense "$TMP"/amqp-url.err || fail "the AMQP URL was echoed (it may hold a password)"
take_all batches "$TMP/after.jsonl"
[ ! -s "$TMP/after.jsonl" ] || fail "a usage error published $(wc -l <"$TMP/after.jsonl") messages"
# Every job's queue was emptied above (a quorum queue's depth lags a few seconds).
job_queues_zero() { [ "$(job_queues_depth)" = 0 ]; }
wait_until 15 job_queues_zero || fail "a usage error published $(job_queues_depth) messages to a job's queue"
log "ok"
