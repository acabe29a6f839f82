#!/usr/bin/env bash
# Least privilege on the broker: deploy/rabbitmq/definitions.json, imported into a vhost of this
# test's own (users renamed with a suffix, prefix kept: the vhost isolates it), declares exactly
# what the binaries declare (a worker allowed to configure starts without a PRECONDITION_FAILED,
# one with another DELIVERY_LIMIT gets it); the users have no usable password until one is set;
# with them, a producer and two workers run a job (every item once in the output, nothing left in
# any queue) and a job whose items all fail once (retry queue), then two fail for good (dead
# letters); the worker may not delete a queue, purge the dead letters or declare anything, the
# operator may not publish (AMQP nor the admin UI), and the producer may not touch the work queue.
. "$(dirname "$0")/lib.sh"

PROBE=$BUILD/tests/amqp-probe
DEFS=$SRC/deploy/rabbitmq/definitions.json
VH="it-lp-$$"
SUF="-it-lp-$$"
P=flashcard # the definitions' prefix, passed to each binary (lib.sh's QUEUE_PREFIX is left alone)
[ -x "$PROBE" ] || fail "$PROBE not built"
DEFS_COPY=$(mktemp /tmp/fc-lp-definitions.XXXXXX)

lp_cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -f "$DEFS_COPY"
    $SUDO rabbitmqctl delete_vhost "$VH" >/dev/null 2>&1
    for u in producer worker operator; do $SUDO rabbitmqctl delete_user "flashcard-$u$SUF" >/dev/null 2>&1; done
    for pat in "$P:job:{lp-$$-*" "$P:rl:{$VH}:*" "$P:breaker:{$VH}"; do
        redis-cli --scan --pattern "$pat" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1
    done
    # The prefix's shared sets keep this test's jobs and its workers (killed, not deregistered)
    # until they expire: take this run's members out (the prefix is every deployment's default).
    redis-cli zrem "$P:jobs" "lp-$$-1" "lp-$$-2" >/dev/null 2>&1
    for p in "${PIDS[@]}"; do
        redis-cli zrem "$P:workers" "$(hostname):$p" >/dev/null 2>&1
        redis-cli del "$P:worker:$(hostname):$p" >/dev/null 2>&1
    done
    (exit $rc)
    cleanup
}
trap lp_cleanup EXIT

# rmq ARGS...: rabbitmqctl, quiet.
rmq() { $SUDO rabbitmqctl -q "$@"; }
# url ROLE PASSWORD: the AMQP URL of a user of this test's vhost (goes through the environment only).
url() { echo "amqp://flashcard-$1$SUF:$2@127.0.0.1:5672/$VH"; }
# probe_as ROLE ACTION ARGS...: runs amqp-probe as that user; prints its line, returns its status.
probe_as() {
    local role=$1; shift
    local u
    if [ "$role" = guest ]; then u="amqp://guest:guest@127.0.0.1:5672/$VH"; else u=$(url "$role" "${PW[$role]}"); fi
    AMQP_URL=$u "$PROBE" "$@"
}
# expect_refused ROLE ACTION ARGS...: the broker refuses it with 403 ACCESS_REFUSED.
expect_refused() {
    local out rc=0
    out=$(probe_as "$@") || rc=$?
    [ $rc = 3 ] && [[ $out == "refused: 403 ACCESS_REFUSED"* ]] || fail "$1 $2 ${3:-}: expected 403, got ($rc) $out"
}
# expect_allowed ROLE ACTION ARGS...: the broker does it.
expect_allowed() {
    local out rc=0
    out=$(probe_as "$@") || rc=$?
    [ $rc = 0 ] || fail "$1 $2 ${3:-}: expected it allowed, got ($rc) $out"
    echo "$out"
}
# depths: "queue messages" for every queue of the vhost (quorum queues' figures lag a few seconds).
depths() { rmq list_queues -p "$VH" --no-table-headers name messages; }
# only_dead_holds N: the definitions' queues are all there and no other (no job's results queue
# is left); every one is empty but flashcard.dead, which holds N messages.
only_dead_holds() {
    local d
    d=$(depths) || return 1
    [ "$(wc -l <<<"$d")" = "$want_q" ] || return 1
    [ "$(awk -v dead="$P.dead" -v n="$1" '$2 != ($1 == dead ? n : 0)' <<<"$d" | wc -l)" = 0 ]
}
# vh_dead: every message of flashcard.dead, peeked (requeued), as a JSON array.
vh_dead() {
    mgmt -X POST -H 'content-type: application/json' \
        -d '{"count":1000,"ackmode":"ack_requeue_true","encoding":"auto"}' "$MGMT/queues/$VH/$P.dead/get"
}

# --- Import, with the vhost and user names of this test. rabbitmqctl reads the file as the
# rabbitmq user (Debian's wrapper), so it goes outside the private $TMP; it holds no secret.
jq --arg v "$VH" --arg s "$SUF" '.vhosts = [{name: $v}] | .users |= map(.name += $s)
    | .permissions |= map(.user += $s | .vhost = $v) | (.queues, .exchanges, .bindings) |= map(.vhost = $v)' \
    "$DEFS" >"$DEFS_COPY" || fail "cannot rewrite $DEFS"
chmod 644 "$DEFS_COPY"
rmq import_definitions "$DEFS_COPY" >/dev/null || fail "import_definitions refused $DEFS"
want_q=$(jq '.queues | length' "$DEFS") want_b=$(jq '.bindings | length' "$DEFS")
imported() { # the import is asynchronous
    [ "$(mgmt "$MGMT/queues/$VH?columns=name" 2>/dev/null | jq length)" = "$want_q" ] &&
        [ "$(mgmt "$MGMT/bindings/$VH" 2>/dev/null | jq '[.[] | select(.source != "")] | length')" = "$want_b" ] &&
        [ "$(mgmt "$MGMT/vhosts/$VH/permissions" 2>/dev/null | jq length)" = 3 ]
}
wait_until 30 imported || fail "definitions not imported: $(depths | tr '\n' ' ')"
# bindings: the vhost's bindings (but the default exchange's), one "source destination key" a line.
bindings() { mgmt "$MGMT/bindings/$VH" | jq -r '.[] | select(.source != "") | "\(.source) \(.destination) \(.routing_key)"' | sort; }
bindings >"$TMP/bindings.imported"
rmq set_permissions -p "$VH" guest '.*' '.*' '.*' >/dev/null # the test's own checks and the argument check

# --- No usable password until the operator sets one.
declare -A PW=([worker]="" [producer]="" [operator]="")
expect_refused worker get "$P.batches"
PW[worker]=guest
expect_refused worker get "$P.batches"
for r in producer worker operator; do
    PW[$r]=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    rmq change_password "flashcard-$r$SUF" <<<"${PW[$r]}" >/dev/null || fail "change_password $r" # from stdin
done
expect_allowed worker get "$P.batches" >/dev/null

# --- The definitions declare what the binaries declare: a worker whose user may configure
# declares every object for real (no passive check), and any argument that differs is refused.
export REDIS_URL API_KEY=sk-lp CACHE_TTL=0 RATE_LIMIT=0 API_NAME=$VH BREAKER_FAILURES=50 BATCH_SIZE=5 WORKER_COUNT=4
start_mock
AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VH" QUEUE_PREFIX=$P LOG_LEVEL=debug start_worker guest
pid=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-guest.log" || fail "a worker allowed to configure did not start"
! grep -q "PRECONDITION_FAILED\|may not declare" "$TMP/worker-guest.log" || fail "a declaration differs from the definitions"
kill -TERM "$pid"
wait "$pid" || fail "the guest worker did not stop cleanly"
bindings | diff "$TMP/bindings.imported" - >&2 || fail "the worker bound what the definitions do not (> above)"
AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VH" QUEUE_PREFIX=$P DELIVERY_LIMIT=3 start_worker guest-limit3
pid=$LAST_PID
wait_until 20 grep -q "406 PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit'" "$TMP/worker-guest-limit3.log" ||
    fail "DELIVERY_LIMIT=3 against the definitions' 10 was not refused"
kill -9 "$pid"
# Without configure, the worker cannot make what the definitions lack (a retry queue of other delays).
AMQP_URL=$(url worker "${PW[worker]}") QUEUE_PREFIX=$P RETRY_DELAYS=1s start_worker user-delay1s
pid=$LAST_PID
wait_until 20 grep -q "queue $P.retry.1s does not exist, and this broker user may not declare it" \
    "$TMP/worker-user-delay1s.log" || fail "a worker user with RETRY_DELAYS=1s did not stop at the missing queue"
kill -9 "$pid"
grep -q consuming "$TMP/worker-user-delay1s.log" && fail "a worker consumed without its retry queue"

# --- What each user may not do (403), and what it may that one might not expect.
expect_refused worker delete-queue "$P.batches"
expect_refused worker delete-queue "$P.dead"
expect_refused worker purge-queue "$P.dead"
expect_refused worker get "$P.dead"
expect_refused worker declare-queue "$P.mine"
expect_refused worker publish "$P.crashed" ""
expect_refused producer delete-queue "$P.batches"
expect_refused producer purge-queue "$P.batches"
expect_refused producer publish "$P.results" x
expect_refused producer declare-queue "$P.results.unrouted"
expect_refused operator publish "$P.batches" ""
expect_refused operator publish "$P.dead" ""
expect_refused operator publish "" "$P.batches" # the default exchange
expect_refused operator purge-queue "$P.batches"
expect_refused operator delete-queue "$P.dead"
code=$(curl -s -o "$TMP/ui-publish.json" -w '%{http_code}' -u "flashcard-operator$SUF:${PW[operator]}" -X POST \
    -H 'content-type: application/json' -d '{"properties":{},"routing_key":"","payload":"{}","payload_encoding":"string"}' \
    "$MGMT/exchanges/$VH/$P.batches/publish")
[[ $code == 4* ]] || fail "the operator published from the admin UI (HTTP $code)"
seen=$(curl -fsS -u "flashcard-operator$SUF:${PW[operator]}" "$MGMT/queues/$VH" | jq length) ||
    fail "the operator cannot list the vhost's queues in the admin UI"
[ "$seen" = "$want_q" ] || fail "the operator sees $seen of $want_q queues"
# Results for a job whose queue is gone go to the alternate exchange's queue: no write permission
# on it needed (the broker routes there itself).
out=$(expect_allowed worker publish "$P.results" no-such-job)
[[ $out == "ok: published"* ]] || fail "a result without its queue was not routed to $P.results.unrouted: $out"
[[ $(expect_allowed guest get "$P.results.unrouted") == "ok: got a message"* ]] || fail "nothing in $P.results.unrouted"
expect_allowed guest purge-queue "$P.results.unrouted" >/dev/null

# --- A job with the producer and worker users: every item once in the output.
for i in 1 2; do AMQP_URL=$(url worker "${PW[worker]}") QUEUE_PREFIX=$P start_worker $i; done
for i in 1 2; do wait_until 20 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
N=40
make_csv $N "$TMP/items.csv"
prc=0
AMQP_URL=$(url producer "${PW[producer]}") QUEUE_PREFIX=$P timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id "lp-$$-1" \
    --wait --timeout 60s --output "$TMP/out1.tsv" >"$TMP/producer1.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "job 1: producer exit $prc"
tsv_positions "$TMP/out1.tsv" >"$TMP/out1.pos"
seq 1 $N | diff -q - "$TMP/out1.pos" >/dev/null || fail "job 1: not every item once in the output"
[ "$(tail -n +2 "$TMP/out1.tsv" | wc -l)" = $((2 * N)) ] || fail "job 1: duplicate or missing cards"
wait_until 20 only_dead_holds 0 || fail "job 1: queues not empty: $(depths | tr '\n' ' ')"

# --- A job whose 6 items all fail once (500: through flashcard.retry.5s and back), then positions
# 3 and 6 fail for good (400: dead-lettered on attempt 2); the rest succeed.
before=$(mock_answered)
mock_control '{"fail_all_500":1}'
AMQP_URL=$(url producer "${PW[producer]}") QUEUE_PREFIX=$P timeout 90 "$PRODUCER" - --format csv --job-id "lp-$$-2" \
    --wait --timeout 60s --output "$TMP/out2.tsv" <<<"$(head -7 "$TMP/items.csv")" >"$TMP/producer2.log" 2>&1 &
ppid=$!
PIDS+=("$ppid")
wait_until 20 answered_at_least $((before + 6)) || fail "job 2: the first attempts were not made"
mock_control '{"fail_all_500":0,"reject_mod":3}'
prc=0
wait "$ppid" || prc=$?
[ $prc = 1 ] || fail "job 2: producer exit $prc (expected 1: done, some items failed)"
[ "$(tsv_positions "$TMP/out2.tsv" | tr '\n' ' ')" = "1 2 4 5 " ] || fail "job 2: output $(tsv_positions "$TMP/out2.tsv")"
# Batches of 5: positions 3 and 6 are dead letters of two batches.
wait_until 20 only_dead_holds 2 || fail "job 2: queues hold something else than two dead letters: $(depths | tr '\n' ' ')"
vh_dead >"$TMP/dead.json"
dead=$(jq -r '[.[] | .payload | fromjson | .items[] | "\(.position):\(.error.class):\(.error.attempts)"] | sort | join(" ")' \
    "$TMP/dead.json")
[ "$dead" = "3:permanent:2 6:permanent:2" ] || fail "job 2: dead letters $dead (expected 3 and 6, permanent, attempt 2)"
[ "$(jq -r '[.[].properties.headers["x-job-id"]] | unique | join(" ")' "$TMP/dead.json")" = "lp-$$-2" ] ||
    fail "job 2: dead letters' job id"

# --- The operator reads the dead letter's reason in the admin UI ("Get messages", requeued);
# the worker may purge the work queue it reads (RabbitMQ ties purge to read): empty here.
reason=$(curl -fsS -u "flashcard-operator$SUF:${PW[operator]}" -X POST -H 'content-type: application/json' \
    -d '{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}' "$MGMT/queues/$VH/$P.dead/get" |
    jq -r '.[0].properties.headers["x-error-class"]') || fail "the operator cannot get messages from $P.dead"
[ "$reason" = permanent ] || fail "the operator read x-error-class '$reason'"
[ "$(expect_allowed worker purge-queue "$P.batches")" = "ok: purged 0 messages" ] || fail "worker purge of $P.batches"
wait_until 20 only_dead_holds 2 || fail "the operator's look took a dead letter: $(depths | tr '\n' ' ')"

# No password in any log.
for r in producer worker operator; do
    ! grep -rqF "${PW[$r]}" "$TMP"/*.log || fail "the $r password appears in a log"
done
log "ok: definitions match the binaries; job 1 $N items, job 2 4 results + 2 dead-lettered items; 403s as designed"
