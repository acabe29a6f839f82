#!/usr/bin/env bash
# One run where the mock API mixes every fault at once at a high rate (500, 429 with and without
# Retry-After, hangs past the workers' API_TIMEOUT, connections reset mid-body, truncated bodies,
# invalid JSON, header-only stage 2, permanent 400s) and hostile answers at a low rate, over 3
# workers. Asserts: every item exactly once in the output or the dead letters, no queue left with
# messages; each dead letter says why and of which class, the permanent 400s were called once and
# never retried; no call for an item arrives after its final outcome; no call at all once the
# producer is done; the output has 9 columns on every line and no control characters; every
# worker is still up at the end and exits 0 on SIGTERM.
. "$(dirname "$0")/lib.sh"

N=400
MOD=31               # positions divisible by it are rejected with a permanent 400 at stage 1
SLACK_MS=500         # see "No call after the final outcome" below
JOB=chaos-$$
make_csv $N "$TMP/items.csv"

# About 40 % of the calls fail, each in its own way; 429s pause the whole fleet (1 s: the
# Retry-After sent, and RETRY_AFTER_MAX for the bare ones, whose default pause is 5 s), so their
# rates stay low enough for the run to end in about a minute.
start_mock --seed $$ --latency-ms 5 --jitter-ms 20 \
    --fail-500 0.08 --fail-429 0.012 --retry-after 1 --fail-429-bare 0.012 \
    --timeout 0.04 --timeout-ms 2500 --reset 0.06 --truncated 0.06 --malformed 0.05 \
    --header-only 0.06 --bad-content 0.02 --hostile 0.04 --hostile-kind mix --reject-mod $MOD
export API_KEY=sk-chaos WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=20 API_TIMEOUT=1s \
    RETRY_DELAYS=200ms,500ms MAX_ATTEMPTS=6 RETRY_AFTER_MAX=1s BREAKER_COOLDOWN=300ms SHUTDOWN_TIMEOUT=10s
WPIDS=()
for i in 1 2 3; do
    start_worker $i
    WPIDS+=("$LAST_PID")
done
for i in 1 2 3; do wait_until 30 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

# Watch the job's outcome record: the first time a position shows there (taken after the read, so
# never before the worker wrote it, which is after the item's last call) is a time by which its
# outcome was final. Bounded: stops on the stop file or after 900 polls.
OUTCOME_KEY="$QUEUE_PREFIX:job:{$JOB}:outcome"
watch_outcomes() {
    declare -A seen=()
    local keys now pos
    for _ in $(seq 1 900); do
        [ -e "$TMP/watch.stop" ] && break
        keys=$(redis-cli --raw HKEYS "$OUTCOME_KEY" 2>/dev/null) || keys=""
        now=$(date +%s%3N)
        for pos in $keys; do
            [ -n "${seen[$pos]:-}" ] && continue
            seen[$pos]=1
            echo "$pos $now"
        done
        sleep 0.2
    done >"$TMP/outcome-seen.txt"
}
watch_outcomes &
WATCH_PID=$!
PIDS+=("$WATCH_PID")

started=$SECONDS
prc=0
timeout 240 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout 200s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || prc=$?
done_ms=$(date +%s%3N)
calls_at_done=$(mock_requests)
log "producer exit $prc after $((SECONDS - started)) s"
# Exit 1 = done with some items failed (the rejected ones at least): expected.
[ $prc = 1 ] || fail "producer exit $prc (expected 1: done, some items failed)"

# ---- No call once the producer is done: none arrives within 3 s (and the hung calls end meanwhile).
sleep 3
calls_later=$(mock_requests)
[ "$calls_later" = "$calls_at_done" ] || fail "$((calls_later - calls_at_done)) chat requests after the producer ended"
touch "$TMP/watch.stop"
wait "$WATCH_PID" 2>/dev/null || true
quiet() { [ "$(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq .in_flight)" = 0 ]; }
wait_until 15 quiet || fail "the mock still holds requests"
L=$TMP/mock-requests.log
awk -v t="$done_ms" '$1 > t' "$L" >"$TMP/late.calls"
[ ! -s "$TMP/late.calls" ] || fail "calls arrived after the producer ended: $(head -3 "$TMP/late.calls" | tr '\n' ';')"

# ---- Accounting: every item exactly once in the output or the dead letters; queues empty.
tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"
retries_drained() { [ "$(queue_depth retry.200ms)" = 0 ] && [ "$(queue_depth retry.500ms)" = 0 ]; }
wait_until 20 retries_drained || fail "retry queues not empty"
crashed=$(queue_depth crashed) || fail "rabbitmqctl failed"
[ "$crashed" = 0 ] || [ "$crashed" = absent ] || fail "$crashed messages in the crashed queue"
[ "$(jq .items_failed "$TMP/report.json")" = "$(wc -l <"$TMP/dead.pos")" ] || fail "report: items_failed"
[ "$(jq .items_succeeded "$TMP/report.json")" = "$(wc -l <"$TMP/results.pos")" ] || fail "report: items_succeeded"

# ---- Every fault kind really happened (the mock's /stats count them when it plans an answer).
curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" >"$TMP/stats.json"
for f in fail_500 fail_429 fail_429_bare timeout reset truncated malformed header_only bad_content hostile reject; do
    [ "$(jq ".faults.$f" "$TMP/stats.json")" -gt 0 ] || fail "the mock never injected $f"
done
log "faults: $(jq -c .faults "$TMP/stats.json"), hostile: $(jq -c .hostile "$TMP/stats.json")"

# ---- Dead letters: a readable reason and a known class each. The rejected positions (and only
# they) are permanent, 400, attempt 1, and got exactly one call (stage 1, answered 400); the rest
# used up their attempts on retryable faults.
dead_messages >"$TMP/dead.json"
bad=$(jq '[.[] | .properties.headers as $h
           | select(($h["x-error"] // "") == "" or ($h["x-error"] | test("[\\x00-\\x1f\\x7f]"))
                    or (["permanent", "retryable"] | index($h["x-error-class"]) | not))] | length' "$TMP/dead.json")
[ "$bad" = 0 ] || fail "$bad dead letters without a readable x-error or with an unexpected x-error-class"
jq -r '.[] | .payload | fromjson | .items[]
       | "\(.position) \(.error.class) \(.error.http_status) \(.error.attempts) \(.error.message // "" | length)"' \
    "$TMP/dead.json" >"$TMP/dead-items.txt"
while read -r pos cls st att mlen; do
    [ "$mlen" -gt 0 ] || fail "position $pos dead-lettered without a message"
    if [ $((pos % MOD)) = 0 ]; then
        [ "$cls $st $att" = "permanent 400 1" ] || fail "rejected position $pos dead as $cls $st after $att attempts"
    else
        [ "$cls $att" = "retryable 6" ] || fail "position $pos dead-lettered as $cls after $att attempts"
    fi
done <"$TMP/dead-items.txt"
seq $MOD $MOD $N >"$TMP/rejected.pos"
awk '$2 == "permanent" {print $1}' "$TMP/dead-items.txt" | sort -n >"$TMP/permanent.pos"
diff -q "$TMP/rejected.pos" "$TMP/permanent.pos" >/dev/null ||
    fail "permanent dead letters $(tr '\n' ' ' <"$TMP/permanent.pos") != multiples of $MOD"
awk -v m=$MOD '$4 % m == 0 {print $4, $3, $2}' "$L" | sort -n >"$TMP/rejected.calls"
awk '{print $1, 1, 400}' "$TMP/rejected.pos" | diff -q - "$TMP/rejected.calls" >/dev/null ||
    fail "a rejected position was called other than once at stage 1 with a 400: $(head -5 "$TMP/rejected.calls" | tr '\n' ';')"
exhausted=$(awk '$2 == "retryable"' "$TMP/dead-items.txt" | wc -l)
[ "$exhausted" -le $((N / 10)) ] || fail "too many items gave up: $exhausted"

# ---- No call after the final outcome. Final times: a dead letter's x-failed-at (ms, set when
# its batch starts settling, after the item's last answer), else the first time the watcher saw
# the position in the outcome record (later than the outcome itself by up to a poll, 0.2 s, plus
# the publish and confirm before the record: the check can only miss calls, never invent them).
# Every time is from this machine's one wall clock. The mock stamps a call when its headers are
# read; SLACK_MS allows a call the worker gave up on (API_TIMEOUT) while the busy mock had not
# read it yet. A call for an item that was already final comes from a retry or a redelivery,
# at least a retry delay later.
jq -r '.[] | (.properties.headers["x-failed-at"]) as $t
       | (($t[0:19] + "Z" | fromdateiso8601) * 1000 + ($t[20:23] | tonumber)) as $ms
       | .payload | fromjson | .items[] | "\(.position) \($ms)"' "$TMP/dead.json" >"$TMP/final.txt"
awk 'NR == FNR {dead[$1] = 1; next} !($1 in dead)' "$TMP/final.txt" "$TMP/outcome-seen.txt" >>"$TMP/final.txt"
[ "$(cut -d' ' -f1 "$TMP/final.txt" | sort -u | wc -l)" = $N ] ||
    fail "a final time for $(cut -d' ' -f1 "$TMP/final.txt" | sort -u | wc -l) of $N items"
awk -v s=$SLACK_MS 'NR == FNR {fin[$1] = $2; next} ($4 in fin) && $1 > fin[$4] + s {print}' \
    "$TMP/final.txt" "$L" >"$TMP/after-final.calls"
[ ! -s "$TMP/after-final.calls" ] ||
    fail "$(wc -l <"$TMP/after-final.calls") calls after their item's final outcome: $(head -3 "$TMP/after-final.calls" | tr '\n' ';')"

# ---- The output: 9 columns on every line, no control characters (TAB separates), valid UTF-8.
awk -F'\t' 'NF != 9 {bad++} END {exit bad > 0}' "$TMP/out.tsv" || fail "output lines without 9 columns"
if LC_ALL=C grep -naP '[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]' "$TMP/out.tsv" >"$TMP/ctl.lines"; then
    fail "control characters in the output: $(wc -l <"$TMP/ctl.lines") lines, first at line $(cut -d: -f1 "$TMP/ctl.lines" | head -1)"
fi
iconv -f UTF-8 -t UTF-8 "$TMP/out.tsv" >/dev/null 2>&1 || fail "the output is not valid UTF-8"

# ---- Every worker is still up, took part, and exits 0 on SIGTERM.
[ "$(cut -d' ' -f5 "$L" | sort -u | wc -l)" = 3 ] || fail "expected calls from 3 workers"
for i in 0 1 2; do kill -0 "${WPIDS[$i]}" 2>/dev/null || fail "worker $((i + 1)) is gone"; done
for i in 0 1 2; do kill -TERM "${WPIDS[$i]}"; done
for i in 0 1 2; do
    wrc=0
    timeout 20 tail --pid="${WPIDS[$i]}" -f /dev/null || fail "worker $((i + 1)) did not stop within 20 s"
    wait "${WPIDS[$i]}" || wrc=$?
    [ $wrc = 0 ] || fail "worker $((i + 1)) exited $wrc on SIGTERM"
done
# Under -DFC_SANITIZE=ON a report that did not abort the process is still a failure.
! grep -l "runtime error:\|AddressSanitizer\|LeakSanitizer" "$TMP"/worker-*.log "$TMP/mock.log" "$TMP/producer.log" ||
    fail "sanitizer reports in the logs"
log "ok: $(wc -l <"$L") calls, $(wc -l <"$TMP/results.pos") succeeded, $(wc -l <"$TMP/dead.pos") dead" \
    "($exhausted exhausted), $((SECONDS - started)) s"
