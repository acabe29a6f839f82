#!/usr/bin/env bash
# The broker permissions the README gives flashcard-admin are enough: in a vhost of this test's own,
# a user with only the monitoring tag and
#   configure '^P\.results\..*$'  write '^P\.(batches|dead|results\..*)$'  read '^P\.(dead|results.*)$'
# runs status (from the management API), dead list, dead replay (re-declaring the finished job's
# results queue, no complaint), results, and dead purge of part of a dead letter (the remainder goes
# back) and of the rest. Without the monitoring tag, status falls back to the broker in one line.
# Run time: about 20 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
VH="it-adm-$$"
USER="flashcard-admin-it-$$"
P=$QUEUE_PREFIX
PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
rmq() { $SUDO rabbitmqctl -q "$@"; }
perm_cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    rmq delete_vhost "$VH" >/dev/null 2>&1
    rmq delete_user "$USER" >/dev/null 2>&1
    (exit $rc)
    cleanup
}
trap perm_cleanup EXIT

rmq add_vhost "$VH" >/dev/null || fail "add_vhost"
rmq set_permissions -p "$VH" guest '.*' '.*' '.*' >/dev/null
rmq add_user "$USER" "$PW" >/dev/null || fail "add_user"
E=${P//./\\.}
rmq set_permissions -p "$VH" "$USER" "^$E\\.results\\..*\$" "^$E\\.(batches|dead|results\\..*)\$" "^$E\\.(dead|results.*)\$" \
    >/dev/null || fail "set_permissions"
rmq set_user_tags "$USER" monitoring >/dev/null || fail "set_user_tags"
GUEST_URL="amqp://guest:guest@127.0.0.1:5672/$VH"
ADMIN_URL="amqp://$USER:$PW@127.0.0.1:5672/$VH"
admin() { AMQP_URL=$ADMIN_URL "$ADMIN" "$@"; }

export WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=1 CACHE_TTL=0
start_mock --reject-mod 1
AMQP_URL=$GUEST_URL start_worker w1
wait_until 20 grep -q "consuming" "$TMP/worker-w1.log" || fail "worker did not start"
key() { echo "$P:job:{$1}:$2"; }
# run_job JOB N: a job of N items whose items all fail; the producer ends 1.
run_job() {
    make_csv "$2" "$TMP/$1.csv"
    local prc=0
    AMQP_URL=$GUEST_URL timeout 60 "$PRODUCER" "$TMP/$1.csv" --job-id "$1" --wait --timeout 50s \
        >"$TMP/producer-$1.log" 2>&1 || prc=$?
    [ $prc = 1 ] || fail "producer ($1) exit $prc, expected 1"
}
dead_count() { admin dead list --json 2>/dev/null | jq '.dead_letters'; }
dead_is() { [ "$(dead_count)" = "$1" ]; }

J1=perm1-$$
run_job $J1 20
wait_until 15 dead_is 4 || fail "expected 4 dead letters, got $(dead_count)"
admin status --json >"$TMP/status.json" 2>"$TMP/status.err" || fail "status exit $?: $(cat "$TMP/status.err")"
[ ! -s "$TMP/status.err" ] || fail "status complained: $(cat "$TMP/status.err")"
jq -e --arg q "$P.dead" '.queues_source == "management" and ([.queues[] | select(.name == $q)] | length == 1)' \
    "$TMP/status.json" >/dev/null || fail "status: $(jq -c '{queues_source, queues}' "$TMP/status.json")"
admin dead list --json >"$TMP/list.json" || fail "dead list exit $?"
[ "$(jq .items "$TMP/list.json")" = 20 ] || fail "dead list: $(jq .items "$TMP/list.json") items"

mock_control '{"reject_mod":0}'
admin dead replay >"$TMP/replay.txt" 2>"$TMP/replay.err" || fail "dead replay exit $?: $(cat "$TMP/replay.err")"
[ ! -s "$TMP/replay.err" ] || fail "dead replay complained: $(cat "$TMP/replay.err")"
all_ok() { [ "$(redis-cli hvals "$(key $J1 outcome)" | grep -c '^ok$')" = 20 ]; }
wait_until 30 all_ok || fail "the replayed items did not all succeed"
waiting() { admin results $J1 --output "$TMP/late.tsv" >"$TMP/results.txt" 2>&1; }
wait_until 15 waiting || fail "results: $(cat "$TMP/results.txt")"
tsv_positions "$TMP/late.tsv" >"$TMP/late.pos"
seq 1 20 | diff -q - "$TMP/late.pos" >/dev/null || fail "late results are not positions 1..20 once each"

mock_control '{"reject_mod":1}'
J2=perm2-$$
run_job $J2 10
wait_until 15 dead_is 2 || fail "expected 2 dead letters, got $(dead_count)"
admin dead purge --limit 3 --yes >"$TMP/purge1.txt" 2>&1 || fail "purge --limit 3 exit $?: $(cat "$TMP/purge1.txt")"
left7() { [ "$(admin dead list --json | jq .items)" = 7 ]; }
wait_until 10 left7 || fail "after purging 3 items: $(admin dead list --json | jq -c '[.letters[].items[].position]')"
admin dead purge --yes >"$TMP/purge2.txt" 2>&1 || fail "purge --yes exit $?: $(cat "$TMP/purge2.txt")"
wait_until 10 dead_is 0 || fail "P.dead not empty after the purge"

rmq set_user_tags "$USER" >/dev/null
admin status --json >"$TMP/fallback.json" 2>"$TMP/fallback.err" || fail "status without monitoring exit $?"
[ "$(wc -l <"$TMP/fallback.err")" = 1 ] && grep -q "management API" "$TMP/fallback.err" ||
    fail "status without monitoring: $(cat "$TMP/fallback.err")"
jq -e '.queues_source == "broker"' "$TMP/fallback.json" >/dev/null || fail "no fallback to the broker"
log "ok: the documented permissions run status, dead list, replay, results and purge; $(cat "$TMP/fallback.err")"
