#!/usr/bin/env bash
# Per-job budgets. A job of 200 items gets a token budget worth about 80 of them: the fleet (2 workers,
# 8 calls in flight each) stops calling for it once the budget is spent; its remaining items end as
# failed with reason budget (in the report, not dead-lettered); what it spent passes the budget by at
# most the calls in flight then times the largest call's cost. --resume with a larger budget goes on
# where it stopped and pays nothing twice: every item ends in the output once, and each item's two
# stages were called exactly once over both runs (the cache keeps what was paid for). Then a USD
# budget stops a second job the same way.
. "$(dirname "$0")/lib.sh"

make_csv 200 "$TMP/items.csv"
start_mock --latency-ms 30
export API_KEY=sk-budget WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=10 PRICE_INPUT=3 PRICE_OUTPUT=15
start_worker 1
start_worker 2
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done
INFLIGHT=16 # the fleet's calls in flight at most: 2 workers x WORKER_COUNT

# What one item costs here: a job of 10 other items without a budget.
{ echo "position,term,type"; seq 1001 1010 | awk '{printf "%d,보정%d,noun\n", $1, $1}'; } >"$TMP/calib.csv"
timeout 60 "$PRODUCER" "$TMP/calib.csv" --job-id calib-$$ --wait --timeout 50s >"$TMP/producer-calib.log" 2>&1 ||
    fail "calibration job exit $?"
read -r PT CT < <(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq -r '"\(.prompt_tokens) \(.completion_tokens)"')
PER_ITEM=$(((PT + CT) / 10))
BUDGET=$((PER_ITEM * 80))
log "an item costs about $PER_ITEM tokens: budget $BUDGET tokens for 200 items"
: >"$TMP/mock-requests.log.calib"
cp "$TMP/mock-requests.log" "$TMP/mock-requests.log.calib"

set +e
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id bud-$$ --budget-tokens "$BUDGET" --wait --timeout 100s \
    --output "$TMP/out.tsv" --report "$TMP/report1.json" >"$TMP/producer-1.log" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "a job its budget stopped must exit 1, got $rc"
grep -q "budget stopped" "$TMP/producer-1.log" || fail "the producer did not say the budget stopped the job"
jq -e '.budget.stopped == true' "$TMP/report1.json" >/dev/null || fail "report: budget.stopped"
STOPPED=$(jq .budget.items_stopped "$TMP/report1.json")
OK1=$(jq .items_succeeded "$TMP/report1.json")
SPENT=$(jq .budget.spent_tokens "$TMP/report1.json")
[ "$STOPPED" -gt 0 ] && [ $((STOPPED + OK1)) = 200 ] || fail "report: $OK1 succeeded + $STOPPED stopped != 200"
[ "$(jq '[.failed[] | select(.error.class == "budget")] | length' "$TMP/report1.json")" = "$STOPPED" ] ||
    fail "report: the stopped items are not listed with class budget"
[ "$(dead_messages | jq length)" = 0 ] || fail "items the budget stopped must not be dead-lettered"
MAXCALL=$(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq .max_call_tokens)
OVER=$((SPENT - BUDGET))
log "spent $SPENT tokens of $BUDGET (overshoot $OVER; bound $INFLIGHT calls x $MAXCALL tokens = $((INFLIGHT * MAXCALL))); $OK1 done, $STOPPED stopped"
[ "$OVER" -le $((INFLIGHT * MAXCALL)) ] || fail "overshoot $OVER above $INFLIGHT calls x $MAXCALL"
# Calls after the budget ran out: only those already in flight then.
EXH=$(jq .budget.exhausted_at_ms "$TMP/report1.json")
LATE=$(awk -v t="$EXH" '$1 > t && $4 <= 200' "$TMP/mock-requests.log" | wc -l)
log "calls that arrived after the budget ran out: $LATE (at most $INFLIGHT)"
[ "$LATE" -le $INFLIGHT ] || fail "$LATE calls arrived after the budget ran out"
# The job's spend in Redis matches what the mock reported for its calls.
tsv_positions "$TMP/out.tsv" >"$TMP/out1.pos"
[ "$(wc -l <"$TMP/out1.pos")" = "$OK1" ] || fail "output of run 1: $(wc -l <"$TMP/out1.pos") items, report says $OK1"

# Resume with a budget large enough: the rest is done, nothing paid twice.
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id bud-$$ --resume --budget-tokens 100000000 --wait --timeout 100s \
    --output "$TMP/out.tsv" --report "$TMP/report2.json" >"$TMP/producer-2.log" 2>&1 || fail "resume exit $?"
jq -e '.budget.stopped == false and .items_failed == 0 and .items_republished == '"$STOPPED" "$TMP/report2.json" >/dev/null ||
    fail "report of the resumed run: $(jq -c '{budget, items_failed, items_republished}' "$TMP/report2.json")"
assert_all_succeeded 200 "$TMP/out.tsv" "an item was dead-lettered"
awk '$4 <= 200 {print $3, $4}' "$TMP/mock-requests.log" | sort | uniq -c | awk '$1 != 1' >"$TMP/twice.txt"
[ ! -s "$TMP/twice.txt" ] || fail "stages called more than once: $(head -3 "$TMP/twice.txt" | tr '\n' ' ')"
[ "$(awk '$4 <= 200' "$TMP/mock-requests.log" | wc -l)" = 400 ] || fail "expected 400 calls for 200 items over both runs"

# A USD budget: at PRICE_INPUT 3 and PRICE_OUTPUT 15 per million tokens, about 50 items' worth.
USD=$(awk -v pt="$PT" -v ct="$CT" 'BEGIN {printf "%.6f", (pt * 3 + ct * 15) / 1e6 / 10 * 50}')
sed 's/단어/낱말/' "$TMP/items.csv" | awk -F, 'NR == 1 || $1 <= 120 {print} ' >"$TMP/usd.csv"
set +e
timeout 120 "$PRODUCER" "$TMP/usd.csv" --job-id usd-$$ --budget-usd "$USD" --wait --timeout 100s \
    --report "$TMP/report3.json" >"$TMP/producer-3.log" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "the USD budget did not stop the job (exit $rc)"
read -r SPENT_USD STOPPED3 < <(jq -r '"\(.budget.spent_usd) \(.budget.items_stopped)"' "$TMP/report3.json")
log "USD budget \$$USD: spent \$$SPENT_USD, $STOPPED3 of 120 items stopped"
awk -v s="$SPENT_USD" -v b="$USD" -v n="$INFLIGHT" -v m="$MAXCALL" 'BEGIN {exit !(s <= b + n * m * 15 / 1e6 && s >= b * 0.8)}' ||
    fail "USD spend $SPENT_USD against a budget of $USD"
[ "$STOPPED3" -gt 0 ] || fail "no item stopped by the USD budget"
log "ok"
