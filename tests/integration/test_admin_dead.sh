#!/usr/bin/env bash
# flashcard-admin dead list | replay | purge, and results (late results of a finished job).
# 1. A job whose items all die (the mock rejects every item with 400): the producer's --wait ends 1.
#    `dead list` (table and --json) shows every failed item with its class and leaves P.dead as it was
#    (count and order); `dead purge` without --yes removes nothing and exits 2. The mock is fixed and
#    `dead replay` sends everything back: every item ends ok in the job's record, P.dead is empty, and
#    `results` collects every item once from the re-declared results queue.
# 2. kill -9 half-way: 40 dead letters of 5 items, replayed at 3 per second; the replay is killed once
#    several were replayed (their markers set, P.dead shrinking), then run again: every item ends ok,
#    once (the API answered each item's two calls once: no cache, so a duplicate would show), nothing
#    left in P.dead, and `results` has every position once.
# 3. --reason: a job whose items die with two classes (even positions 400 permanent, odd ones 500
#    retryable with MAX_ATTEMPTS=1), one poison message beside them. Only the retryable items are
#    replayed (each dead letter is split, the permanent items go back to P.dead); the poison message is
#    listed as not replayable, skipped by replay, and removed by `dead purge --reason poison --yes`.
# 4. A batch the broker dead-lettered from P.crashed itself (no x-error-class, items without errors) counts
#    as crashed; cancelled items of a job whose record is gone are skipped by a plain replay (exit 1) and
#    replayed only with --reason cancelled.
# Run time: about 35 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
export WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=1 CACHE_TTL=0 BREAKER_FAILURES=100000 BREAKER_COOLDOWN=500ms
start_mock --reject-mod 1
start_worker w1
wait_until 20 grep -q "consuming" "$TMP/worker-w1.log" || fail "worker did not start"

key() { echo "$QUEUE_PREFIX:job:{$1}:$2"; }
dead_ids() { dead_messages | jq -r '.[].properties.message_id'; }
dead_count() { dead_messages | jq length; }
dead_is() { [ "$(dead_count)" = "$1" ]; }
# list_keeps_order N: `dead list` sees N dead letters and leaves P.dead as it found it: a second list, then
# the management API's get, read them in the order the first list did. (The get comes last: its own
# requeue shuffles a quorum queue of more than 32 messages.)
list_keeps_order() {
    "$ADMIN" dead list --json | jq -r '.letters[].message_id' >"$TMP/order.1"
    "$ADMIN" dead list --json | jq -r '.letters[].message_id' >"$TMP/order.2"
    dead_ids >"$TMP/order.3"
    [ "$(wc -l <"$TMP/order.1")" = "$1" ] || fail "dead list saw $(wc -l <"$TMP/order.1") of $1 dead letters"
    diff -q "$TMP/order.1" "$TMP/order.2" >/dev/null || fail "a second dead list saw another order"
    diff -q "$TMP/order.1" "$TMP/order.3" >/dev/null || fail "dead list changed the order of P.dead"
}
# outcomes_ok JOB N: the job's record has N outcomes, all ok, and no failed item.
outcomes_ok() {
    [ "$(redis-cli hlen "$(key "$1" outcome)")" = "$2" ] &&
        [ "$(redis-cli hvals "$(key "$1" outcome)" | grep -c '^ok$')" = "$2" ] &&
        [ "$(redis-cli hlen "$(key "$1" failed)")" = 0 ]
}
# run_job JOB N: publishes N items and waits; the producer must end 1 (items failed).
run_job() {
    make_csv "$2" "$TMP/$1.csv"
    local prc=0
    timeout 90 "$PRODUCER" "$TMP/$1.csv" --job-id "$1" --wait --timeout 80s --output "$TMP/$1.tsv" \
        >"$TMP/producer-$1.log" 2>&1 || prc=$?
    [ $prc = 1 ] || fail "producer ($1) exit $prc, expected 1 (failed items)"
}

# ---- 1. list, purge without --yes, replay, results ---------------------------------------------
J1=dead1-$$
run_job $J1 30
wait_until 15 dead_is 6 || fail "expected 6 dead letters, got $(dead_count)"
list_keeps_order 6
"$ADMIN" dead list >"$TMP/list.txt" || fail "dead list exit $?"
for p in $(seq 1 30); do grep -Eq "\s$J1\s+$p\s+단어$p\s+permanent\s" "$TMP/list.txt" ||
    fail "dead list lacks item $p: $(head -3 "$TMP/list.txt")"; done
"$ADMIN" dead list --json >"$TMP/list.json" || fail "dead list --json exit $?"
[ "$(jq '.items' "$TMP/list.json")" = 30 ] || fail "dead list --json: $(jq -c '{items,dead_letters}' "$TMP/list.json")"
[ "$(jq '[.letters[].items[] | select(.class == "permanent" and .http_status == 400)] | length' "$TMP/list.json")" = 30 ] ||
    fail "dead list --json: not every item permanent with HTTP 400"
dead_ids >"$TMP/ids.before"
prc=0
"$ADMIN" dead purge >"$TMP/purge.txt" 2>"$TMP/purge.err" || prc=$?
[ $prc = 2 ] || fail "dead purge without --yes exit $prc, expected 2"
grep -q -- "--yes" "$TMP/purge.err" || fail "dead purge without --yes does not say to add --yes: $(cat "$TMP/purge.err")"
[ "$(wc -l <"$TMP/purge.err")" = 1 ] || fail "dead purge without --yes said more than one line"
dead_ids >"$TMP/ids.after"
diff -q "$TMP/ids.before" "$TMP/ids.after" >/dev/null || fail "dead purge without --yes changed P.dead"
mock_control '{"reject_mod":0}'
"$ADMIN" dead replay >"$TMP/replay1.txt" || fail "dead replay exit $?: $(cat "$TMP/replay1.txt")"
grep -q "replayed 30 items from 6 dead letters" "$TMP/replay1.txt" || fail "replay summary: $(cat "$TMP/replay1.txt")"
wait_until 30 outcomes_ok $J1 30 || fail "job $J1 not all ok after the replay: $(redis-cli hvals "$(key $J1 outcome)" | sort | uniq -c | tr '\n' ' ')"
[ "$(dead_count)" = 0 ] || fail "P.dead not empty after the replay"
results_ready() { [ "$(queue_depth "results.$J1")" -ge 1 ] 2>/dev/null; }
wait_until 15 results_ready || fail "no late results in $QUEUE_PREFIX.results.$J1"
"$ADMIN" results $J1 --output "$TMP/late1.tsv" >"$TMP/results1.txt" || fail "results exit $?"
tsv_positions "$TMP/late1.tsv" >"$TMP/late1.pos"
seq 1 30 | diff -q - "$TMP/late1.pos" >/dev/null || fail "late results are not positions 1..30 once each"
[ "$(tail -n +2 "$TMP/late1.tsv" | wc -l)" = 60 ] || fail "late results: not two cards per item"
prc=0
"$ADMIN" results $J1 --output "$TMP/late1.tsv" 2>/dev/null || prc=$?
[ $prc = 2 ] || fail "results over an existing file exit $prc, expected 2"
log "part 1 ok: listed, not purged, replayed, 30 late results collected"

# ---- 2. a replay killed half-way, then run again -----------------------------------------------
mock_control '{"reject_mod":1}'
J2=dead2-$$
run_job $J2 200
wait_until 15 dead_is 40 || fail "expected 40 dead letters, got $(dead_count)"
list_keeps_order 40
mock_control '{"reject_mod":0}'
CALLS0=$(mock_answered)
markers() { redis-cli --scan --pattern "$QUEUE_PREFIX:replayed:*" | wc -l; }
"$ADMIN" dead replay --rate 3 >"$TMP/replay2a.txt" 2>&1 &
RPID=$!
PIDS+=("$RPID")
several() { [ "$(markers)" -ge 8 ]; }
wait_until 30 several || fail "the replay did not get going"
kill -9 $RPID
wait $RPID 2>/dev/null || true
shrunk() { local n; n=$(queue_depth dead) && [ "$n" -lt 40 ] && [ "$n" -gt 0 ]; }
wait_until 15 shrunk || fail "P.dead after the kill: $(queue_depth dead) messages (expected fewer than 40, more than 0)"
log "killed the replay with $(markers) markers set and $(queue_depth dead) dead letters left"
"$ADMIN" dead replay >"$TMP/replay2b.txt" || fail "second replay exit $?: $(cat "$TMP/replay2b.txt")"
wait_until 60 outcomes_ok $J2 200 || fail "job $J2 not all ok after the replays"
[ "$(dead_count)" = 0 ] || fail "P.dead not empty after the second replay"
# Each item's two calls were answered 200 exactly once: no replacement was published twice.
tail -n +$((CALLS0 + 1)) "$TMP/mock-requests.log" | awk '$2 == 200 {print $4}' | sort -n | uniq -c >"$TMP/calls.txt"
[ "$(wc -l <"$TMP/calls.txt")" = 200 ] || fail "$(wc -l <"$TMP/calls.txt") of 200 items were answered after the replay"
awk '$1 != 2' "$TMP/calls.txt" >"$TMP/twice.txt"
[ ! -s "$TMP/twice.txt" ] || fail "items not called exactly twice: $(head -5 "$TMP/twice.txt" | tr '\n' ' ')"
results2_ready() { [ "$(queue_depth "results.$J2")" -ge 40 ] 2>/dev/null; }
wait_until 15 results2_ready || fail "late results of $J2: $(queue_depth "results.$J2") messages"
"$ADMIN" results $J2 --output "$TMP/late2.jsonl" >"$TMP/results2.txt" || fail "results exit $?"
jq -r .position "$TMP/late2.jsonl" >"$TMP/late2.pos"
seq 1 200 | diff -q - "$TMP/late2.pos" >/dev/null || fail "late results of $J2 are not positions 1..200 once each"
results2_gone() { [ "$(queue_depth "results.$J2")" = 0 ]; }
wait_until 15 results2_gone || fail "results left in the queue after results: $(queue_depth "results.$J2"): $(mgmt -X POST -H 'content-type: application/json' -d '{"count":100,"ackmode":"ack_requeue_true","encoding":"auto"}' "$MGMT/queues/%2F/$QUEUE_PREFIX.results.$J2/get" | jq -c '[.[] | [.properties.message_id, (.payload | fromjson | [.items[].position])]]')"
log "part 2 ok: a replay killed half-way and run again: 200 items once"

# ---- 3. --reason: two classes, split dead letters, a poison message ----------------------------
mock_control '{"reject_mod":2,"fail_500":1}'
J3=dead3-$$
run_job $J3 20
wait_until 15 dead_is 4 || fail "expected 4 dead letters, got $(dead_count)"
jq -n '{properties: {delivery_mode: 2, message_id: "poison-1"}, routing_key: "", payload: "not a batch {",
    payload_encoding: "string"}' | mgmt -X POST -H 'content-type: application/json' -d @- \
    "$MGMT/exchanges/%2F/$QUEUE_PREFIX.batches/publish" | jq -e .routed >/dev/null || fail "poison not routed"
wait_until 15 dead_is 5 || fail "the poison message did not reach P.dead"
"$ADMIN" dead list --reason permanent --json >"$TMP/perm.json" || fail "list --reason permanent exit $?"
[ "$(jq -c '[.letters[].items[].position] | sort' "$TMP/perm.json")" = "[2,4,6,8,10,12,14,16,18,20]" ] ||
    fail "list --reason permanent: $(jq -c '[.letters[].items[].position]' "$TMP/perm.json")"
"$ADMIN" dead list --job $J3 --reason retryable --json >"$TMP/retry.json" || fail "list --reason retryable exit $?"
[ "$(jq '.items' "$TMP/retry.json")" = 10 ] || fail "list --reason retryable: $(jq .items "$TMP/retry.json") items"
"$ADMIN" dead list --reason poison --json >"$TMP/poison.json" || fail "list --reason poison exit $?"
[ "$(jq -c '[.letters[] | {class, replayable}]' "$TMP/poison.json")" = '[{"class":"poison","replayable":false}]' ] ||
    fail "poison listing: $(jq -c . "$TMP/poison.json")"
mock_control '{"reject_mod":0,"fail_500":0}'
"$ADMIN" dead replay --reason retryable --json >"$TMP/replay3.json" || fail "replay --reason retryable exit $?"
[ "$(jq -c '[.replayed_items, .replayed_dead_letters, .not_matching]' "$TMP/replay3.json")" = "[10,4,1]" ] ||
    fail "replay --reason retryable: $(jq -c . "$TMP/replay3.json")"
split_done() {
    [ "$(redis-cli hlen "$(key $J3 outcome)")" = 20 ] && [ "$(redis-cli hlen "$(key $J3 failed)")" = 10 ] &&
        [ "$(redis-cli hvals "$(key $J3 outcome)" | grep -c '^ok$')" = 10 ]
}
wait_until 30 split_done || fail "job $J3 after replaying the retryable items: $(redis-cli hvals "$(key $J3 outcome)" | sort | uniq -c | tr '\n' ' ')"
"$ADMIN" dead list --json >"$TMP/left.json"
[ "$(jq -c '[.letters[].items[] | [.position, .class]] | sort' "$TMP/left.json")" = \
  '[[2,"permanent"],[4,"permanent"],[6,"permanent"],[8,"permanent"],[10,"permanent"],[12,"permanent"],[14,"permanent"],[16,"permanent"],[18,"permanent"],[20,"permanent"]]' ] ||
    fail "P.dead after the split: $(jq -c '[.letters[].items[] | [.position, .class]]' "$TMP/left.json")"
[ "$(jq '.dead_letters' "$TMP/left.json")" = 5 ] || fail "expected 4 remainders and the poison message"
"$ADMIN" dead purge --reason poison --yes >"$TMP/purge3.txt" || fail "purge --reason poison exit $?"
wait_until 10 dead_is 4 || fail "the poison message was not purged"
"$ADMIN" dead purge --job $J3 --yes >"$TMP/purge4.txt" || fail "purge --job exit $?"
wait_until 10 dead_is 0 || fail "purge --job left $(dead_count) dead letters"
prc=0
"$ADMIN" dead list >/dev/null 2>&1 || prc=$?
[ $prc = 1 ] || fail "dead list of an empty P.dead exit $prc, expected 1"
log "part 3 ok: --reason splits dead letters, poison listed and purged"

# ---- 4. crashed batches dead-lettered by the broker, cancelled items ---------------------------
J4=dead4-$$
# pub_dead ID HEADERS BODY: publishes a message to P.dead as the broker or a worker would have.
pub_dead() {
    jq -n --arg id "$1" --argjson h "$2" --arg body "$3" '{properties: {delivery_mode: 2, message_id: $id, headers: $h},
        routing_key: "", payload: $body, payload_encoding: "string"}' |
        mgmt -X POST -H 'content-type: application/json' -d @- "$MGMT/exchanges/%2F/$QUEUE_PREFIX.dead/publish" |
        jq -e .routed >/dev/null || fail "$1 not routed to P.dead"
}
item() { printf '{"position":%d,"term":"단어%d","type":"noun"%s}' "$1" "$1" "${2:-}"; }
cancelled=',"error":{"class":"cancelled","http_status":0,"attempts":1,"message":"job cancelled"}'
pub_dead "$J4-0" "{\"x-death\": [{\"count\": 1, \"reason\": \"delivery_limit\", \"queue\": \"$QUEUE_PREFIX.crashed\"}]}" \
    "{\"schema\":1,\"job_id\":\"$J4\",\"batch\":0,\"attempt\":1,\"items\":[$(item 1),$(item 2)]}"
pub_dead "$J4-1.dead" "{\"x-error-class\": \"cancelled\", \"x-job-id\": \"$J4\", \"x-failed-at\": \"2026-12-02T03:04:05.000Z\"}" \
    "{\"schema\":1,\"job_id\":\"$J4\",\"batch\":1,\"attempt\":1,\"items\":[$(item 3 "$cancelled"),$(item 4 "$cancelled")]}"
wait_until 15 dead_is 2 || fail "expected 2 dead letters, got $(dead_count)"
"$ADMIN" dead list --reason crashed --json >"$TMP/crashed.json" || fail "list --reason crashed exit $?"
[ "$(jq -c '[.letters[].items[] | [.position, .class]]' "$TMP/crashed.json")" = '[[1,"crashed"],[2,"crashed"]]' ] ||
    fail "list --reason crashed: $(jq -c . "$TMP/crashed.json")"
prc=0
"$ADMIN" dead replay --json >"$TMP/replay4.json" 2>"$TMP/replay4.err" || prc=$?
[ $prc = 1 ] || fail "replay with cancelled items left exit $prc, expected 1: $(cat "$TMP/replay4.err")"
[ "$(jq -c '[.replayed_items, .skipped_cancelled]' "$TMP/replay4.json")" = "[2,1]" ] ||
    fail "replay of crashed and cancelled: $(jq -c . "$TMP/replay4.json")"
j4_ok() { [ "$(redis-cli hvals "$(key $J4 outcome)" | grep -c '^ok$')" = "$1" ]; }
wait_until 30 j4_ok 2 || fail "the crashed batch was not replayed"
wait_until 10 dead_is 1 || fail "P.dead after skipping the cancelled items: $(dead_count)"
"$ADMIN" dead replay --reason cancelled >"$TMP/replay5.txt" || fail "replay --reason cancelled exit $?"
grep -q "replayed 2 items from 1 dead letters" "$TMP/replay5.txt" || fail "replay --reason cancelled: $(cat "$TMP/replay5.txt")"
wait_until 30 j4_ok 4 || fail "the cancelled items were not replayed"
wait_until 10 dead_is 0 || fail "P.dead not empty: $(dead_count)"
log "ok: list leaves P.dead as it was, replay loses and duplicates nothing, --reason splits dead letters, crashed and cancelled classes"
