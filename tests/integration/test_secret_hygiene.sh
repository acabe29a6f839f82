#!/usr/bin/env bash
# Secrets never appear in logs, messages, metrics, dead letters or command lines: the API key
# (at LOG_LEVEL=debug, with failures) and a broker password, both given to the worker through
# *_FILE settings (so not in /proc/PID/cmdline or environ either); passwords of every URL of an
# AMQP_URL list in errors; secrets given as flags are refused without being echoed.
. "$(dirname "$0")/lib.sh"

# A broker user of this test's own, with a password nobody else uses.
BUSER="it-secret-$$"
BPASS="pw-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
$SUDO rabbitmqctl -q add_user "$BUSER" "$BPASS" >/dev/null
trap 'rc=$?; $SUDO rabbitmqctl -q delete_user "$BUSER" >/dev/null 2>&1; (exit $rc); cleanup' EXIT
$SUDO rabbitmqctl -q set_permissions -p / "$BUSER" ".*" ".*" ".*" >/dev/null

KEY="sk-or-v1-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
make_csv 60 "$TMP/items.csv"
start_mock --api-key "$KEY" --fail-500 0.2 --reject-mod 13
# At a 20 % fault rate the breaker's 50 %-of-20 rule can trip on an unlucky run; a short
# cooldown keeps that from stalling the job past its timeout.
export LOG_LEVEL=debug WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=20 RETRY_DELAYS=200ms MAX_ATTEMPTS=2 \
    BREAKER_COOLDOWN=500ms
printf '%s\n' "$KEY" >"$TMP/api_key"
printf 'amqp://%s:%s@127.0.0.1:5672/%%2f\n' "$BUSER" "$BPASS" >"$TMP/amqp_url"
MPORT=$(free_port) || fail "no free port"
API_KEY_FILE="$TMP/api_key" AMQP_URL_FILE="$TMP/amqp_url" METRICS_PORT=$MPORT start_worker 1
W=$LAST_PID
export API_KEY="$KEY" # the producer's own checks below
wait_until 10 grep -q consuming "$TMP/worker-1.log" || fail "the worker did not start with secrets from files"
for f in cmdline environ; do
    ! tr '\0' '\n' <"/proc/$W/$f" | grep -q -e "$KEY" -e "$BPASS" || fail "a secret is in /proc/PID/$f"
done
conn_user() { mgmt "$MGMT/connections" | jq -e --arg u "$BUSER" 'any(.[]; .user == $u)' >/dev/null; }
wait_until 10 conn_user || fail "the worker is not connected as $BUSER (AMQP_URL_FILE unused?)"
rc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "secret-$$" --wait --timeout 45s --output "$TMP/out.jsonl" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || rc=$?
[ $rc = 1 ] || fail "producer exit $rc, want 1 (done, the 400'd items failed)"
[ "$(jq .items_failed "$TMP/report.json")" -ge 4 ] || fail "expected the 400'd items to fail"
jq -r .position "$TMP/out.jsonl" | sort -n >"$TMP/results.pos"
assert_accounted 60 "$TMP/results.pos"
dead_messages >"$TMP/dead.json"
curl -fsS "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics.txt" || fail "no metrics"
grep -q "HTTP 400" "$TMP/dead.json" || fail "dead letters should carry the error"
for f in "$TMP"/*.log "$TMP/out.jsonl" "$TMP/report.json" "$TMP/dead.json" "$TMP/metrics.txt"; do
    ! grep -q -e "$KEY" -e "$BPASS" "$f" || fail "a secret appears in $(basename "$f")"
done
# Secrets as flags are refused, and not echoed.
for flag in "--api-key=$KEY" "--amqp-url=amqp://u:$BPASS@127.0.0.1/" "--redis-url=redis://:$BPASS@127.0.0.1/"; do
    rc=0
    out=$("$WORKER" "$flag" 2>&1) || rc=$?
    [ $rc = 2 ] && echo "$out" | grep -q "not taken from the command line" || fail "flag ${flag%%=*}: exit $rc: $out"
    ! echo "$out" | grep -q -e "$KEY" -e "$BPASS" || fail "flag ${flag%%=*} echoed its secret: $out"
done
# Every password of a broker list stays hidden, whichever URL fails.
rc=0
out=$(AMQP_URL="amqp://u:first-pw@127.0.0.1:1/%2f,amqp://u:second-pw@127.0.0.1:2/%2f" timeout 60 \
    "$PRODUCER" "$TMP/items.csv" 2>&1) || rc=$?
[ $rc = 3 ] && echo "$out" | grep -q "none of the 2 brokers" || fail "two unreachable brokers: exit $rc: $out"
! echo "$out" | grep -q -e first-pw -e second-pw || fail "a password of the broker list was echoed: $out"
out=$(AMQP_URL="amqp://u:first-pw@h/,amqp://u:second-pw@h:bad/" "$WORKER" 2>&1 || true)
echo "$out" | grep -q "URL 2 of the list" || fail "a bad URL of a list is not named: $out"
! echo "$out" | grep -q -e first-pw -e second-pw || fail "a password of the broker list was echoed: $out"
# A password in a URL is never echoed in errors.
out=$(AMQP_URL="amqp://user:pa55word@" REDIS_URL="nope://u:pa55word@h" "$WORKER" 2>&1 || true)
echo "$out" | grep -q "REDIS_URL\|AMQP_URL" || fail "config error should name the setting: $out"
! echo "$out" | grep -q pa55word || fail "password echoed: $out"
rc=0
out=$(AMQP_URL="amqp://user:pa55word@127.0.0.1:1/%2f" "$PRODUCER" "$TMP/items.csv" 2>&1) || rc=$?
[ $rc = 3 ] && echo "$out" | grep -q "broker" || fail "unreachable broker: exit $rc: $out"
! echo "$out" | grep -q pa55word || fail "password echoed by the producer: $out"
log "ok"
