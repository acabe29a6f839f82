#!/usr/bin/env bash
# Redis restarts in the middle of a rate-limited run (its own redis-server on a free port, so
# the shared one on 6379 is untouched; "shutdown save" + reload keeps the buckets and the
# outcome records, as RDB/AOF would in production). While it is down the workers make no
# calls (RATE_LIMIT_FALLBACK=pause); afterwards no 1-second window at the mock exceeds
# rate + burst, the calls resume, and the job completes with every item accounted for.
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
REDIS_SERVER=${REDIS_SERVER:-redis-server}

N=200
RATE=50

RPORT=$(free_port) || fail "no free port"
mkdir -p "$TMP/redis"
start_redis() {
    "$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --dbfilename dump.rdb --save '' \
        --appendonly no --logfile "$TMP/redis-server.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_until 10 redis-cli -p "$RPORT" ping >/dev/null 2>&1 || fail "redis-server did not start"
}
start_redis
export REDIS_URL="redis://127.0.0.1:$RPORT/0"

make_csv "$N" "$TMP/items.csv"
start_mock --latency-ms 20
export API_KEY=sk-redis-restart WORKER_COUNT=16 RATE_LIMIT=$((RATE * 60)) RETRY_DELAYS=200ms CACHE_TTL=0 BATCH_SIZE=5
for i in 1 2; do start_worker "$i"; done
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

# Publish only: "flashcard-producer --wait" gives up at the first failed Redis connect (exit 3),
# so it collects after the restart, with --resume (publishes nothing: every batch is confirmed).
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "rlredis-$$" >"$TMP/producer-publish.log" 2>&1 ||
    fail "producer (publish) exit $?"
wait_until 30 answered_at_least 120 || fail "the run did not reach 120 calls"

down_ms=$(date +%s%3N)
redis-cli -p "$RPORT" shutdown save >/dev/null 2>&1 || true
wait "$REDIS_PID" 2>/dev/null || true
sleep 0.5
start_redis
up_ms=$(date +%s%3N)
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id "rlredis-$$" --resume --wait --timeout 100s \
    --output "$TMP/out.tsv" >"$TMP/producer.log" 2>&1 || fail "producer (wait) exit $?"
L=$TMP/mock-requests.log

# No window above rate + burst (+100 ms of arrival jitter, as in test_ratelimit_accuracy.sh),
# over the whole run and after the restart.
read -r maxw at < <("$MOCKLOG" maxwin "$L" 1000)
[ "$maxw" -le $((2 * RATE + RATE / 10)) ] || fail "$maxw calls in the 1 s window from $at, limit $((2 * RATE))"
read -r maxa ata < <("$MOCKLOG" maxwin "$L" 1000 "$up_ms")
[ "$maxa" -le $((2 * RATE + RATE / 10)) ] || fail "$maxa calls in the 1 s window from $ata after the restart"
# While Redis was down (after the calls already reserved, at most 32 / 50/s = 0.64 s ahead),
# nothing new was granted; after it the calls resumed.
after=$("$MOCKLOG" count "$L" "$up_ms" $((up_ms + 3000)))
[ "$after" -ge $RATE ] || fail "only $after calls in the 3 s after Redis came back"
grep -qi "redis" "$TMP"/worker-*.log || fail "no worker noticed the Redis outage"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
[ "$(wc -l <"$TMP/results.pos")" = "$N" ] || fail "$(wc -l <"$TMP/results.pos") of $N items in the output"
wait_until 15 eval '[ "$(queue_depth batches)" = 0 ]' || fail "work queue not empty"
assert_accounted "$N" "$TMP/results.pos"
read -r t0 t1 calls < <("$MOCKLOG" span "$L")
log "ok: $calls calls in $(((t1 - t0) / 1000)) s; Redis down $((up_ms - down_ms)) ms;" \
    "$("$MOCKLOG" count "$L" "$down_ms" "$up_ms") calls during it; max 1 s window $maxw (after: $maxa, limit $((2 * RATE)));" \
    "$after calls in the 3 s after"
