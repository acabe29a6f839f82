#!/usr/bin/env bash
# flashcard-admin dead replay when the broker will not take the replacements.
# 1. Unroutable: P.batches unbound from its exchange. The replay ends 1 at once, every dead letter stays in
#    P.dead and the job's records are put back as they were (finished, every item failed). Bound again,
#    the replay sends every item once (each item's API calls answered once: the result cache is off).
# 2. The broker stops confirming (a proxy in front of it drops its publisher confirms; the replacements
#    are routed all the same): 40 dead letters, more than the 32 in the works at once. The replay gives
#    up after 30 s with exit 1, every dead letter still in P.dead and the job's records put back (the
#    worker is stopped meanwhile, so nothing else changes them). The worker then processes the
#    replacements that did go out; a replay run again with the broker confirming finishes those dead
#    letters without sending them again and replays the 8 never started: every item ends ok exactly once,
#    P.dead is empty, and `results` collects positions 1..200 once each.
# Run time: about 55 s.
. "$(dirname "$0")/lib.sh"

ADMIN=$BUILD/admin/flashcard-admin
export WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=5 MAX_ATTEMPTS=1 CACHE_TTL=0 BREAKER_FAILURES=100000 BREAKER_COOLDOWN=500ms
start_mock --reject-mod 1
start_worker w1
WPID=$LAST_PID
wait_until 20 grep -q "consuming" "$TMP/worker-w1.log" || fail "worker did not start"

key() { echo "$QUEUE_PREFIX:job:{$1}:$2"; }
dead_count() { dead_messages | jq length; }
dead_is() { [ "$(dead_count)" = "$1" ]; }
hlen() { redis-cli hlen "$(key "$1" "$2")"; }
ok_count() { redis-cli hvals "$(key "$1" outcome)" | grep -c '^ok$' || true; }
# records_are JOB OUTCOMES FAILED OK: the job's record holds that many outcomes, failures and ok ones.
records_are() { [ "$(hlen "$1" outcome)" = "$2" ] && [ "$(hlen "$1" failed)" = "$3" ] && [ "$(ok_count "$1")" = "$4" ]; }
# run_job JOB N: publishes N items and waits; every item fails, the producer ends 1.
run_job() {
    make_csv "$2" "$TMP/$1.csv"
    local prc=0
    timeout 90 "$PRODUCER" "$TMP/$1.csv" --job-id "$1" --wait --timeout 80s --output "$TMP/$1.tsv" \
        >"$TMP/producer-$1.log" 2>&1 || prc=$?
    [ $prc = 1 ] || fail "producer ($1) exit $prc, expected 1 (failed items)"
}
# calls_once FROM N: after line FROM of the mock's log, N items were answered, each item's two calls once.
calls_once() {
    tail -n +$(($1 + 1)) "$TMP/mock-requests.log" | awk '$2 == 200 {print $4}' | sort -n | uniq -c >"$TMP/calls.txt"
    [ "$(wc -l <"$TMP/calls.txt")" = "$2" ] || fail "$(wc -l <"$TMP/calls.txt") of $2 items were answered"
    awk '$1 != 2' "$TMP/calls.txt" >"$TMP/twice.txt"
    [ ! -s "$TMP/twice.txt" ] || fail "items not called exactly once each: $(head -5 "$TMP/twice.txt" | tr '\n' ' ')"
}

# ---- 1. unroutable replacements -----------------------------------------------------------------
J1=fault1-$$
run_job $J1 20
wait_until 15 dead_is 4 || fail "expected 4 dead letters, got $(dead_count)"
records_are $J1 20 20 0 || fail "job $J1 before: $(hlen $J1 outcome) outcomes, $(hlen $J1 failed) failed"
B="$MGMT/bindings/%2F/e/$QUEUE_PREFIX.batches/q/$QUEUE_PREFIX.batches"
mgmt "$B" >"$TMP/bindings.json" || fail "cannot read the binding of P.batches"
[ "$(jq length "$TMP/bindings.json")" = 1 ] || fail "P.batches has $(jq length "$TMP/bindings.json") bindings"
mgmt -X DELETE "$B/$(jq -r '.[0].properties_key' "$TMP/bindings.json")" || fail "cannot unbind P.batches"
mock_control '{"reject_mod":0}'
CALLS0=$(mock_answered)
rc=0
"$ADMIN" dead replay >"$TMP/r1.out" 2>"$TMP/r1.err" || rc=$?
[ $rc = 1 ] || fail "replay of unroutable replacements exit $rc, expected 1: $(cat "$TMP/r1.out" "$TMP/r1.err")"
grep -q "4 failed (left in $QUEUE_PREFIX.dead; their items' records put back)" "$TMP/r1.out" ||
    fail "replay summary: $(cat "$TMP/r1.out")"
grep -q "could not be routed" "$TMP/r1.err" || fail "the refusal is not said: $(cat "$TMP/r1.err")"
records_are $J1 20 20 0 || fail "records not put back: $(hlen $J1 outcome) outcomes, $(hlen $J1 failed) failed"
[ "$("$ADMIN" job $J1 --json | jq -c '[.state, .failed]')" = '["finished",20]' ] || fail "job $J1 after the failure"
dead_is 4 || fail "dead letters lost: $(dead_count) left"
jq '.[0] | {routing_key, arguments}' "$TMP/bindings.json" | mgmt -X POST -H 'content-type: application/json' -d @- "$B" ||
    fail "cannot bind P.batches again"
"$ADMIN" dead replay >"$TMP/r1b.out" 2>&1 || fail "replay once bound again exit $?: $(cat "$TMP/r1b.out")"
grep -q "replayed 20 items from 4 dead letters" "$TMP/r1b.out" || fail "second replay: $(cat "$TMP/r1b.out")"
wait_until 30 records_are $J1 20 0 20 || fail "job $J1 not all ok: $(ok_count $J1) ok"
dead_is 0 || fail "P.dead not empty: $(dead_count)"
calls_once "$CALLS0" 20
log "part 1 ok: unroutable replacements left everything as it was; bound again, 20 items replayed once"

# ---- 2. a broker that stops confirming ----------------------------------------------------------
mock_control '{"reject_mod":1}'
J2=fault2-$$
run_job $J2 200
wait_until 15 dead_is 40 || fail "expected 40 dead letters, got $(dead_count)"
kill "$WPID"
wait "$WPID" 2>/dev/null || true
mock_control '{"reject_mod":0}'
CALLS0=$(mock_answered)
cat >"$TMP/noconfirm.py" <<'PY'
# A TCP proxy to the broker that forwards every frame but the broker's basic.ack (publisher confirms).
import asyncio, struct, sys

async def pipe(r, w, drop_confirms):
    buf = b""
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            if drop_confirms:
                buf += data
                data = b""
                while len(buf) >= 7:
                    ftype, _, size = struct.unpack(">BHI", buf[:7])
                    if len(buf) < 8 + size:
                        break
                    frame, buf = buf[:8 + size], buf[8 + size:]
                    if not (ftype == 1 and size >= 4 and struct.unpack(">HH", frame[7:11]) == (60, 80)):
                        data += frame
            if data:
                w.write(data)
                await w.drain()
    except Exception:
        pass
    finally:
        w.close()

async def handle(cr, cw):
    br, bw = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    await asyncio.gather(pipe(cr, bw, False), pipe(br, cw, True))

async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(srv.sockets[0].getsockname()[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
PY
python3 "$TMP/noconfirm.py" "$TMP/proxy.port" 5672 >"$TMP/proxy.log" 2>&1 &
PIDS+=($!)
wait_until 10 [ -s "$TMP/proxy.port" ] || fail "the proxy did not start"
start=$SECONDS rc=0
AMQP_URL="amqp://guest:guest@127.0.0.1:$(cat "$TMP/proxy.port")/%2f" timeout -s KILL 60 "$ADMIN" dead replay --json \
    >"$TMP/r2.json" 2>"$TMP/r2.err" || rc=$?
took=$((SECONDS - start))
[ $rc = 1 ] || fail "replay without confirms exit $rc after $took s, expected 1: $(cat "$TMP/r2.err")"
[ $took -lt 45 ] || fail "replay without confirms took $took s"
grep -q "no confirm from the broker for 30 s: gave up" "$TMP/r2.err" || fail "the give-up is not said: $(cat "$TMP/r2.err")"
out=$(jq '.failed' "$TMP/r2.json")
[ "$out" -ge 1 ] && [ "$(jq '.failed + .not_attempted' "$TMP/r2.json")" = 40 ] ||
    fail "replay without confirms: $(jq -c . "$TMP/r2.json")"
records_are $J2 200 200 0 || fail "records not put back: $(hlen $J2 outcome) outcomes, $(hlen $J2 failed) failed"
dead_is 40 || fail "dead letters lost: $(dead_count) left"
log "no confirms: exit 1 after $took s, $out dead letters given up, records put back, 40 dead letters kept"
# The replacements the broker did take are processed; the dead letters they came from stay in P.dead.
start_worker w2
sent_done() { [ "$(queue_depth batches)" = 0 ] && records_are $J2 200 $((200 - out * 5)) $((out * 5)); }
wait_until 40 sent_done || fail "the $out replacements that went out: $(ok_count $J2) ok, P.batches $(queue_depth batches)"
"$ADMIN" dead replay --json >"$TMP/r3.json" 2>"$TMP/r3.err" || fail "replay run again exit $?: $(cat "$TMP/r3.err")"
[ "$(jq -c '[.replayed_dead_letters, .finished_for_an_interrupted_run, .failed]' "$TMP/r3.json")" = "[40,$out,0]" ] ||
    fail "replay run again: $(jq -c . "$TMP/r3.json")"
wait_until 40 records_are $J2 200 0 200 || fail "job $J2 not all ok: $(ok_count $J2) ok"
dead_is 0 || fail "P.dead not empty: $(dead_count)"
calls_once "$CALLS0" 200
results_ready() { [ "$(queue_depth "results.$J2")" -ge 40 ] 2>/dev/null; }
wait_until 15 results_ready || fail "late results of $J2: $(queue_depth "results.$J2") messages"
"$ADMIN" results $J2 --output "$TMP/late2.jsonl" >"$TMP/results2.txt" || fail "results exit $?"
jq -r .position "$TMP/late2.jsonl" >"$TMP/late2.pos"
seq 1 200 | diff -q - "$TMP/late2.pos" >/dev/null || fail "late results of $J2 are not positions 1..200 once each"
log "ok: refused and unconfirmed replacements lose nothing, put the records back, and are sent once in the end"
