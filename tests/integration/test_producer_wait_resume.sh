#!/usr/bin/env bash
# --wait acks results as it spools them to OUTPUT.<job>.part, so a long wait never holds them unacked
# (RabbitMQ closes a channel that does so past consumer_timeout), and a wait cut short by
# --timeout is continued by --resume --wait: the output then has every item exactly once and
# the spool is gone. If the spool is lost too, --resume --wait says so and exits 1 instead of
# waiting for results that an earlier run already took.
. "$(dirname "$0")/lib.sh"

N=120
RATE=20 # calls per second for the fleet: the job takes about 12 s
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5
export API_KEY=sk-wait WORKER_COUNT=8 RATE_LIMIT=$((RATE * 60)) BATCH_SIZE=10 CACHE_TTL=0
start_worker 1
wait_until 15 grep -q consuming "$TMP/worker-1.log" || fail "worker did not start"
JOB=wait-$$
OUT=$TMP/out.tsv

# 1. A wait cut short: exit 1, the results so far in out.tsv.<job>.part, none of them unacked.
rc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --wait --timeout 4s --output "$OUT" \
    --report "$TMP/report1.json" >"$TMP/producer1.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "first run exit $rc, want 1 (timed out)"
[ "$(jq .timed_out "$TMP/report1.json")" = true ] || fail "report does not say timed out"
[ -s "$OUT.$JOB.part" ] || fail "no spool left for the next run"
spooled=$(wc -l <"$OUT.$JOB.part")
[ "$spooled" -gt 0 ] && [ "$spooled" -lt $N ] || fail "spool holds $spooled items, want some of $N"
grep -q -- "--job-id $JOB --resume --wait --output $OUT" "$TMP/producer1.log" || fail "no hint how to continue"
unacked=$($SUDO rabbitmqctl list_queues -q --no-table-headers name messages_unacknowledged 2>/dev/null |
    awk -v q="$QUEUE_PREFIX.results.$JOB" '$1 == q {print $2}')
[ "$unacked" = 0 ] || fail "result messages left unacked: '$unacked'"
log "first run timed out with $spooled items spooled"

# 2. --resume --wait continues from the spool and finishes.
timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id $JOB --resume --wait --timeout 60s --output "$OUT" \
    --report "$TMP/report2.json" >"$TMP/producer2.log" 2>&1 || fail "resumed run exit $?"
grep -q "$spooled results already collected" "$TMP/producer2.log" || fail "the resumed run did not load the spool"
[ ! -e "$OUT.$JOB.part" ] || fail "the spool is still there after the output was written"
tsv_positions "$OUT" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = $N ] || fail "output has $(wc -l <"$TMP/results.pos") items, want $N"
[ "$(tail -n +2 "$OUT" | wc -l)" = $((2 * N)) ] || fail "duplicate or missing cards in the output"
[ "$(jq .items_succeeded "$TMP/report2.json")" = $N ] || fail "report: items_succeeded"
assert_accounted $N "$TMP/results.pos"

# 3. The spool lost between runs: the resumed wait says what happened and exits 1 at once.
JOB2=wait2-$$
rc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id $JOB2 --wait --timeout 3s --output "$TMP/out2.tsv" \
    >"$TMP/producer3.log" 2>&1 || rc=$?
[ $rc = 1 ] && [ -s "$TMP/out2.tsv.$JOB2.part" ] || fail "second job: exit $rc, spool $(ls "$TMP"/out2.tsv.* 2>&1)"
rm "$TMP/out2.tsv.$JOB2.part"
t0=$(date +%s)
rc=0
timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id $JOB2 --resume --wait --timeout 60s --output "$TMP/out2.tsv" \
    >"$TMP/producer4.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "resume without the spool: exit $rc, want 1"
grep -q "spool '$TMP/out2.tsv.$JOB2.part' is gone" "$TMP/producer4.log" || fail "no message about the lost spool"
[ $(($(date +%s) - t0)) -lt 45 ] || fail "the resumed wait ran into its timeout instead of noticing"
log "ok"
