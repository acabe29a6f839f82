#!/usr/bin/env bash
# Secrets never appear in logs, messages or errors: the API key (at LOG_LEVEL=debug, with
# failures), and passwords in AMQP_URL / REDIS_URL in configuration errors.
. "$(dirname "$0")/lib.sh"

KEY="sk-or-v1-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
make_csv 60 "$TMP/items.csv"
start_mock --api-key "$KEY" --fail-500 0.2 --reject-mod 13
# At a 20 % fault rate the breaker's 50 %-of-20 rule can trip on an unlucky run; a short
# cooldown keeps that from stalling the job past its timeout.
export API_KEY="$KEY" LOG_LEVEL=debug WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=20 RETRY_DELAYS=200ms MAX_ATTEMPTS=2 \
    BREAKER_COOLDOWN=500ms
start_worker 1
rc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "secret-$$" --wait --timeout 45s --output "$TMP/out.jsonl" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "producer exit $rc, want 1 (done, the 400'd items failed)"
[ "$(jq .items_failed "$TMP/report.json")" -ge 4 ] || fail "expected the 400'd items to fail"
jq -r .position "$TMP/out.jsonl" | sort -n >"$TMP/results.pos"
assert_accounted 60 "$TMP/results.pos"
dead_messages >"$TMP/dead.json"
grep -q "HTTP 400" "$TMP/dead.json" || fail "dead letters should carry the error"
for f in "$TMP"/*.log "$TMP/out.jsonl" "$TMP/report.json" "$TMP/dead.json"; do
    ! grep -q "$KEY" "$f" || fail "the API key appears in $(basename "$f")"
done
# A password in a URL is never echoed in errors.
out=$(AMQP_URL="amqp://user:pa55word@" REDIS_URL="nope://u:pa55word@h" "$WORKER" 2>&1 || true)
echo "$out" | grep -q "REDIS_URL\|AMQP_URL" || fail "config error should name the setting: $out"
! echo "$out" | grep -q pa55word || fail "password echoed: $out"
rc=0
out=$(AMQP_URL="amqp://user:pa55word@127.0.0.1:1/%2f" "$PRODUCER" "$TMP/items.csv" 2>&1) || rc=$?
[ $rc = 3 ] && echo "$out" | grep -q "broker" || fail "unreachable broker: exit $rc: $out"
! echo "$out" | grep -q pa55word || fail "password echoed by the producer: $out"
log "ok"
