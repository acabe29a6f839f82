#!/usr/bin/env bash
# The broker unreachable: (1) AMQP_URL at a closed port: exit 3 within the bounded retry
# budget, saying 0 batches were confirmed and how to resume, and the suggested --resume then
# publishes everything; (2) the broker lost mid-publish (through a TCP proxy that is killed):
# exit 3 saying how many batches were confirmed (matching the job's record), and --resume
# publishes the rest with every batch present.
. "$(dirname "$0")/lib.sh"

export BATCH_SIZE=10

# take_batches SUFFIX OUT: consumes the queue; one batch number per line.
take_batches() { take_messages "$1" "$2" '.[] | .payload | fromjson | .batch'; }

# 1. A closed port.
make_csv 1000 "$TMP/small.csv"
port=$(free_port) || fail "no free port"
t0=$SECONDS
rc=0
AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f" timeout 60 "$PRODUCER" "$TMP/small.csv" --job-id down-$$ \
    >"$TMP/closed.log" 2>&1 || rc=$?
took=$((SECONDS - t0))
[ $rc = 3 ] || fail "closed port: exit $rc, want 3"
# The retry budget is about 10 s; 30 s leaves room for a slow machine and still catches unbounded retries.
[ $took -le 30 ] || fail "closed port: gave up after $took s"
grep -q "0 batches (0 items) were confirmed" "$TMP/closed.log" || fail "no confirmed count: $(tail -5 "$TMP/closed.log")"
grep -q -- "--job-id down-$$ --resume" "$TMP/closed.log" || fail "no resume hint: $(tail -5 "$TMP/closed.log")"
grep -q "attempt 2 of" "$TMP/closed.log" || fail "the producer did not retry"
! grep -q guest:guest "$TMP/closed.log" || fail "the AMQP password was logged"
timeout 60 "$PRODUCER" "$TMP/small.csv" --job-id down-$$ --resume --report "$TMP/closed-resume.json" \
    >"$TMP/closed-resume.log" 2>&1 || fail "resume after a closed port: exit $?"
[ "$(jq .items_total "$TMP/closed-resume.json")" = 1000 ] || fail "resume after a closed port: items_total"
take_batches "$(job_queue down-$$)" "$TMP/closed.batches"
sort -n "$TMP/closed.batches" | diff -q - <(seq 0 99) >/dev/null || fail "closed port: batches not 0..99 once each"

# 2. The broker lost mid-publish: a TCP proxy in front of RabbitMQ, killed while publishing.
amqp_port=$(sed -E 's|.*@[^:/]+:([0-9]+).*|\1|' <<<"$AMQP_URL")
[[ $amqp_port =~ ^[0-9]+$ ]] || amqp_port=5672
perl "$(dirname "$0")/tcp_proxy.pl" "$TMP/proxy.port" "$amqp_port" 2>"$TMP/proxy.log" &
PROXY=$!
PIDS+=("$PROXY")
wait_until 10 test -s "$TMP/proxy.port" || fail "the proxy did not start"
make_csv 50000 "$TMP/big.csv"
JOB=lost-$$
KEY="$QUEUE_PREFIX:job:{$JOB}:confirmed"
AMQP_URL="amqp://guest:guest@127.0.0.1:$(cat "$TMP/proxy.port")/%2f" "$PRODUCER" "$TMP/big.csv" --job-id $JOB \
    --report "$TMP/lost.json" >"$TMP/lost.log" 2>&1 &
PROD=$!
PIDS+=("$PROD")
end=$((SECONDS + 30))
until [ "$(redis-cli bitcount "$KEY")" -ge 500 ]; do
    kill -0 $PROD 2>/dev/null || fail "the producer ended before 500 batches were confirmed"
    [ $SECONDS -lt $end ] || fail "500 batches not confirmed within 30 s"
    sleep 0.02
done
{ kill -9 $PROXY && wait $PROXY; } 2>/dev/null || true
rc=0
wait $PROD || rc=$?
[ $rc = 3 ] || fail "broker lost mid-publish: exit $rc, want 3"
confirmed=$(redis-cli bitcount "$KEY")
[ "$confirmed" -lt 5000 ] || fail "the producer finished before the proxy was killed"
grep -q "lost the broker while publishing. $confirmed batches ($((confirmed * 10)) items) were confirmed" "$TMP/lost.log" ||
    fail "exit message does not say $confirmed batches were confirmed: $(grep -A1 'batches (' "$TMP/lost.log")"
grep -q -- "--job-id $JOB --resume" "$TMP/lost.log" || fail "no resume hint"
[ "$(jq .batches_published "$TMP/lost.json")" = "$confirmed" ] || fail "report: batches_published != $confirmed"
timeout 60 "$PRODUCER" "$TMP/big.csv" --job-id $JOB --resume --report "$TMP/lost-resume.json" \
    >"$TMP/lost-resume.log" 2>&1 || fail "resume after losing the broker: exit $?"
[ "$(jq .batches_skipped "$TMP/lost-resume.json")" = "$confirmed" ] || fail "resume: batches_skipped"
[ "$(jq .items_total "$TMP/lost-resume.json")" = 50000 ] || fail "resume: items_total"
take_batches "$(job_queue $JOB)" "$TMP/lost.batches"
sort -n "$TMP/lost.batches" | uniq | diff -q - <(seq 0 4999) >/dev/null || fail "batches missing after resume"
log "ok: closed port gave up after ${took}s; lost broker after $confirmed confirmed batches, resumed"
