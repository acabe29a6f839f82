#!/usr/bin/env bash
# A 429 asking for Retry-After: 86400 must not pause the fleet for a day: the pause is capped
# at RETRY_AFTER_MAX (here 2 s), in the fleet's pause key in Redis too, and the worker logs what
# was asked and what was applied. The mock answers 429 to everything for about a second, then
# recovers: the job finishes, every item once (the 429'd ones through the retry queue), none
# dead-lettered; the pause was still honoured (no call in it).
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh

N=40
CAP_MS=2000
SLACK_MS=150 # calls reserved before the pause reached Redis may still arrive this late
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --fail-all-status 429 --retry-after 86400
export API_KEY=sk-ra-cap API_NAME=mock RETRY_AFTER_MAX=2s WORKER_COUNT=4 RATE_LIMIT=6000 BATCH_SIZE=10 \
    RETRY_DELAYS=500ms CACHE_TTL=0
PAUSE_KEY="$QUEUE_PREFIX:rl:{mock}:pause"
for i in 1 2; do start_worker "$i"; done
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

JOB=racap-$$
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout 40s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
PIDS+=("$PRODUCER_PID")
stats() { curl -fsS "http://127.0.0.1:$MOCK_PORT/stats"; }
got_429() { [ "$(stats | jq '.by_status["429"] // 0')" -ge 1 ]; }
paused() { [ -n "$(redis-cli get "$PAUSE_KEY")" ]; }
wait_until 30 got_429 || fail "no call reached the API"
wait_until 5 paused || fail "no fleet pause in Redis ($PAUSE_KEY) after the 429"
# The pause key holds the deadline in Redis microseconds: what is left of it, right after the 429.
deadline_us=$(redis-cli get "$PAUSE_KEY")
read -r now_s now_us < <(redis-cli time | paste -sd' ')
left_ms=$(((deadline_us - now_s * 1000000 - now_us) / 1000))
log "fleet pause left right after the 429: $left_ms ms"
[ "$left_ms" -le $CAP_MS ] || fail "the fleet is paused for $left_ms ms after a Retry-After: 86400 (RETRY_AFTER_MAX=2s)"
sleep 1
mock_control '{"fail_all_status":0}'

prc=0
wait "$PRODUCER_PID" || prc=$?
[ $prc = 0 ] || fail "producer exit $prc: the job did not finish after the capped pause"
assert_all_succeeded $N "$TMP/out.tsv" "items dead-lettered after a 429"

# The worker said what the API asked and what it applied.
grep -h "429" "$TMP"/worker-*.log | grep "86400" | grep "$CAP_MS ms" | grep -q "RETRY_AFTER_MAX" ||
    fail "no worker log line naming the asked 86400 s, the applied $CAP_MS ms and RETRY_AFTER_MAX"
# The capped pause was still a pause: no call in it after the first 429 was answered.
L=$TMP/mock-requests.log
read -r a429 e429 < <(awk '$2 == 429 {print $1, $6}' "$L" | sort -n | head -1)
during=$("$MOCKLOG" count "$L" $((a429 + e429 + SLACK_MS)) $((a429 + CAP_MS - 100)))
[ "$during" = 0 ] || fail "$during calls arrived in the 2 s pause after the first 429"
n429=$("$MOCKLOG" status "$L" 429 | wc -l)
log "ok: $n429 answers of 429 asking for 86400 s; the fleet paused $CAP_MS ms and the job finished"
