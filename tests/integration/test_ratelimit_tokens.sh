#!/usr/bin/env bash
# TOKEN_LIMIT binds before RATE_LIMIT: 2 processes x 16 calls in flight, 100 calls/s allowed
# but only 20,000 tokens/s. The worker charges an estimate (prompt bytes/4 + MAX_TOKENS) and
# corrects it with the real usage; what the API sees is the real usage. The mock's /stats
# token totals, sampled every 200 ms, must grow no faster than the limit plus its burst over
# any span of >= 1 s, the token limit must be the binding one (calls well under RATE_LIMIT),
# and the limit must be used (not starved by the over-estimate).
. "$(dirname "$0")/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh

N=120
TOK_PER_S=20000
BURST=20000 # the worker's token burst: max(one second of the rate, 2 x MAX_TOKENS)
CALLS_PER_S=100

make_csv "$N" "$TMP/items.csv"
start_mock --latency-ms 20
export API_KEY=sk-tokens WORKER_COUNT=16 RATE_LIMIT=$((CALLS_PER_S * 60)) TOKEN_LIMIT=$((TOK_PER_S * 60))
export MAX_TOKENS=2000 RETRY_DELAYS=200ms CACHE_TTL=0 BATCH_SIZE=5
for i in 1 2; do start_worker "$i"; done
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

# Sample the mock's token totals: "<ms> <prompt+completion tokens>" lines.
sample_stats() {
    while :; do
        s=$(curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" 2>/dev/null) &&
            echo "$(date +%s%3N) $(echo "$s" | jq '.prompt_tokens + .completion_tokens')"
        sleep 0.2
    done
}
sample_stats >"$TMP/tokens.samples" &
PIDS+=($!)
SAMPLER=$!

timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id "rltok-$$" --wait --timeout 100s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
sleep 0.3
kill "$SAMPLER" 2>/dev/null || true
L=$TMP/mock-requests.log

# Over every span [ti, tj] of >= 1 s between samples: tokens <= rate * span + burst. The
# totals count an answer when it is sent (arrival + 20 ms); a 5% allowance on the rate
# covers sampling skew (a double-charging or ignored limit is far above it).
worst=$(awk -v r="$TOK_PER_S" -v b="$BURST" '{t[NR] = $1; k[NR] = $2}
    END {w = 0; for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) {
             d = (t[j] - t[i]) / 1000; if (d < 1) continue
             x = (k[j] - k[i]) / (r * 1.05 * d + b); if (x > w) {w = x; at = t[i]; span = d; got = k[j] - k[i]} }
         printf "%.3f %s %.1f %d\n", w, at, span, got}' "$TMP/tokens.samples")
read -r ratio at span got <<<"$worst"
awk -v x="$ratio" 'BEGIN {exit !(x <= 1)}' ||
    fail "$got tokens in ${span}s from $at: above $TOK_PER_S/s x ${span}s + burst $BURST"

read -r t0 t1 calls < <("$MOCKLOG" span "$L")
total=$(tail -1 "$TMP/tokens.samples" | cut -d' ' -f2)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1000}')
# The whole run: bounded by the limit plus one burst, and the limit is used (>= 75%).
awk -v k="$total" -v s="$secs" -v r="$TOK_PER_S" -v b="$BURST" 'BEGIN {exit !(k <= r * s + b)}' ||
    fail "$total tokens in ${secs}s: above $TOK_PER_S/s + burst"
steady=$(awk -v r="$TOK_PER_S" -v a=$((t0 + 1500)) -v e=$((t1 - 1000)) '$1 >= a && $1 < e {if (!n++) {t0 = $1; k0 = $2} t1 = $1; k1 = $2}
    END {printf "%.0f", (t1 > t0 ? (k1 - k0) * 1000 / (t1 - t0) : 0)}' "$TMP/tokens.samples")
[ "$steady" -ge $((TOK_PER_S * 75 / 100)) ] || fail "steady token rate $steady/s, want >= 75% of $TOK_PER_S/s"
# The token limit is the binding one: the call rate stays well under RATE_LIMIT.
crate=$("$MOCKLOG" steadyrate "$L" $((t0 + 1500)) $((t1 - 1000)))
awk -v c="$crate" -v r="$CALLS_PER_S" 'BEGIN {exit !(c < r / 2)}' ||
    fail "steady call rate $crate/s: the token limit did not bind (RATE_LIMIT $CALLS_PER_S/s)"
read -r maxw _ < <("$MOCKLOG" maxwin "$L" 1000)

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
wait_until 15 eval '[ "$(queue_depth batches)" = 0 ]' || fail "work queue not empty"
assert_accounted "$N" "$TMP/results.pos"
log "ok: $total tokens, $calls calls in ${secs}s; steady $steady tokens/s of $TOK_PER_S, $crate calls/s;" \
    "worst span ${span}s from $at at $ratio of the bound; max $maxw calls in 1 s (RATE_LIMIT $CALLS_PER_S/s)"
