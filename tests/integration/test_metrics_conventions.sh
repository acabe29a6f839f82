#!/usr/bin/env bash
# The worker's /metrics against Prometheus's conventions and the documented list: one worker runs a
# small job (30 items, the mock API), then its page must pass `promtool check metrics` silently,
# match deploy/prometheus/metrics.txt (every family documented with its type and labels, every
# documented one served, enumerated labels complete, histograms cumulative), serve every series the
# alert rules and the Grafana dashboard query (those documented "optional" may be absent: the
# per-job budgets and queue depths of a small job without a budget), count the job's calls and
# items exactly, per job too, and carry sane process_* figures. /readyz is 200 "ready"; a second
# worker given a Redis port nobody listens on reports 503 naming Redis, and never shows the Redis
# password. About 10 s.
. "$(dirname "$0")/lib.sh"

command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus; deploy/local/services.sh installs it)"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
MON=$SRC/deploy/prometheus
N=30

make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --jitter-ms 20
export API_KEY=sk-conventions-secret WORKER_COUNT=4 RATE_LIMIT=6000 BATCH_SIZE=10
start_metrics_worker 1
P1=$LAST_PORT
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id conv-$$ --wait --timeout 90s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
assert_all_succeeded $N "$TMP/out.tsv" "items were dead-lettered"

# scrape: the worker's page into $TMP/metrics.txt. value NAME: an unlabelled sample's value;
# total PATTERN: the sum of the samples whose name and labels match the awk regex PATTERN.
scrape() { curl -fsS "http://127.0.0.1:$P1/metrics" >"$TMP/metrics.txt"; }
value() { awk -v n="$1" '$1 == n { print $2 }' "$TMP/metrics.txt"; }
total() { awk -v p="$1" '$1 ~ p { s += $2 } END { printf "%d\n", s }' "$TMP/metrics.txt"; }
# The counters follow the outcome records by a moment; the held delivery is acked after them.
settled() { scrape && [ "$(value flashcard_items_succeeded_total)" = $N ] && [ "$(value flashcard_batches_held)" = 0 ]; }
wait_until 15 settled || fail "metrics: items_succeeded_total $(value flashcard_items_succeeded_total), batches_held $(value flashcard_batches_held)"

# Prometheus's own lint: silent and exit 0.
promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 || fail "promtool check metrics: $(cat "$TMP/promtool.out")"
[ ! -s "$TMP/promtool.out" ] || fail "promtool check metrics: $(cat "$TMP/promtool.out")"
# The documented list, both ways.
"$PY" "$MON/monitoring.py" conventions "$MON/metrics.txt" "$TMP/metrics.txt" >"$TMP/conventions.out" 2>&1 ||
    fail "metrics.txt and the worker disagree: $(cat "$TMP/conventions.out")"
# Every series the alert rules and the dashboard query is served, but for the optional ones
# (metrics.txt: "optional" after the type), which only some configurations or jobs have.
"$PY" "$MON/monitoring.py" series "$MON/alerts.yml" "$SRC/deploy/grafana/flashcard.json" >"$TMP/series" ||
    fail "monitoring.py series"
[ "$(wc -l <"$TMP/series")" -ge 10 ] || fail "only $(wc -l <"$TMP/series") series found in the rules and the dashboard"
awk -F' [|] ' '!/^#/ && NF == 4 && $2 ~ / optional$/ { print $1 }' "$MON/metrics.txt" >"$TMP/optional"
grep -qx flashcard_job_budget_usd "$TMP/optional" || fail "metrics.txt lists no optional family (its format changed?)"
missing=$(while read -r s; do grep -qE "^$s[ {]" "$TMP/metrics.txt" || grep -qxF "$s" "$TMP/optional" || echo "$s"; done \
    <"$TMP/series" | tr '\n' ' ')
[ -z "$missing" ] || fail "queried by the rules or the dashboard but not served: $missing"

# The job's figures: 2 calls per item, all answered 2xx and timed, none retried or dead.
calls=$(mock_answered)
[ "$calls" = $((2 * N)) ] || fail "the mock answered $calls calls, expected $((2 * N))"
[ "$(total '^flashcard_api_calls_total\{.*status="2xx"')" = "$calls" ] ||
    fail "api_calls_total 2xx $(total '^flashcard_api_calls_total\{.*status="2xx"') != $calls answered"
[ "$(total '^flashcard_api_calls_total\{')" = "$calls" ] || fail "api_calls_total counts calls other than 2xx"
[ "$(total '^flashcard_api_call_duration_seconds_count\{')" = "$calls" ] ||
    fail "api_call_duration_seconds_count $(total '^flashcard_api_call_duration_seconds_count\{') != $calls"
for s in 1 2; do
    [ "$(total "^flashcard_api_call_duration_seconds_count\\{stage=\"$s\"")" = $N ] || fail "stage $s calls timed != $N"
done
[ "$(total '^flashcard_items_(retried|dead|over_budget)_total')" = 0 ] || fail "items retried, dead or over budget in a clean job"
# Per job: every call counted for the job, at the default priority; no budget series for a job
# without a budget.
[ "$(total "^flashcard_job_calls_total\\{job_id=\"conv-$$\"\\}")" = "$calls" ] ||
    fail "job_calls_total of conv-$$: $(grep '^flashcard_job_calls_total' "$TMP/metrics.txt" | tr '\n' ' '), expected $calls"
grep -qx "flashcard_job_priority{job_id=\"conv-$$\"} 5" "$TMP/metrics.txt" ||
    fail "job_priority of conv-$$: $(grep '^flashcard_job_priority' "$TMP/metrics.txt" | tr '\n' ' '), expected 5 (the default)"
! grep -qE '^flashcard_job_(budget|spent)_' "$TMP/metrics.txt" ||
    fail "budget series for a job without a budget: $(grep -E '^flashcard_job_(budget|spent)_' "$TMP/metrics.txt" | tr '\n' ' ')"
[ "$(value flashcard_batches_acked_total)" = $((N / 10)) ] || fail "batches_acked_total $(value flashcard_batches_acked_total)"
[ "$(value flashcard_calls_in_flight)" = 0 ] && [ "$(value flashcard_calls_capacity)" = 4 ] &&
    [ "$(value flashcard_ready)" = 1 ] && [ "$(value flashcard_breaker_state)" = 0 ] ||
    fail "gauges: in flight $(value flashcard_calls_in_flight), capacity $(value flashcard_calls_capacity), ready $(value flashcard_ready), breaker $(value flashcard_breaker_state)"
# The limit, 6000/min; the adapted rate (RATE_ADAPT=1, the default) is the limit: no 429, no rate headers.
[ -n "$(value flashcard_rate_limit_adapted_per_second)" ] && awk '
     $1 ~ /^flashcard_rate_limit_(adapted_)?per_second$/ && $2 != 100 { bad = 1 }
     $1 == "flashcard_rate_limit_usage" && !($2 >= 0 && $2 <= 1) { bad = 1 } END { exit bad }' "$TMP/metrics.txt" ||
    fail "rate limit gauges: $(grep '^flashcard_rate_limit_[apu]' "$TMP/metrics.txt" | tr '\n' ' ')"
grep -qF "flashcard_build_info{version=\"" "$TMP/metrics.txt" && grep -qF "queue_prefix=\"$QUEUE_PREFIX\"" "$TMP/metrics.txt" ||
    fail "build_info does not name the queue prefix $QUEUE_PREFIX"
grep -qE '^flashcard_queue_ready_messages\{queue="batches"\} [0-9]+$' "$TMP/metrics.txt" &&
    grep -qE '^flashcard_queue_consumers\{queue="batches"\} [1-9]' "$TMP/metrics.txt" ||
    fail "no depth of the work queue, or no consumer on it"

# process_*: figures of a live process.
now=$(date +%s)
awk -v now="$now" '
    $1 == "process_resident_memory_bytes" { rss = $2 }  $1 == "process_virtual_memory_bytes" { vm = $2 }
    $1 == "process_cpu_seconds_total" { cpu = $2 }      $1 == "process_start_time_seconds" { start = $2 }
    $1 == "process_open_fds" { fds = $2 }               $1 == "process_max_fds" { max = $2 }
    END { exit !(rss > 1048576 && vm >= rss && cpu > 0 && start > now - 600 && start <= now + 5 &&
                 fds > 3 && fds < max) }' "$TMP/metrics.txt" ||
    fail "process metrics out of range: $(grep '^process_' "$TMP/metrics.txt" | tr '\n' ' ')"

# Health and readiness.
[ "$(curl -sS -o "$TMP/readyz" -w '%{http_code}' "http://127.0.0.1:$P1/readyz")" = 200 ] &&
    [ "$(cat "$TMP/readyz")" = ready ] || fail "/readyz: $(cat "$TMP/readyz")"
[ "$(curl -fsS "http://127.0.0.1:$P1/healthz")" = ok ] || fail "/healthz"
! grep -q "sk-conventions-secret" "$TMP/metrics.txt" "$TMP/readyz" || fail "the API key is served"

# A second worker whose Redis does not answer: not ready, saying why, without its password.
REDIS_URL="redis://:conv-redis-pw-$$@127.0.0.1:$(free_port)/0" start_metrics_worker noredis
P2=$LAST_PORT
not_ready_redis() {
    [ "$(curl -sS -o "$TMP/readyz2" -w '%{http_code}' "http://127.0.0.1:$P2/readyz" 2>/dev/null)" = 503 ] &&
        grep -q Redis "$TMP/readyz2"
}
wait_until 20 not_ready_redis || fail "/readyz of the worker without Redis: $(cat "$TMP/readyz2" 2>/dev/null)"
curl -fsS "http://127.0.0.1:$P2/metrics" >"$TMP/metrics2.txt" || fail "no /metrics from the worker without Redis"
grep -q '^flashcard_ready 0$' "$TMP/metrics2.txt" || fail "flashcard_ready is not 0 while /readyz says 503"
! grep -q "conv-redis-pw-$$" "$TMP/readyz2" "$TMP/metrics2.txt" "$TMP/worker-noredis.log" ||
    fail "the Redis password appeared in /readyz, /metrics or the log"
log "ok: $(cat "$TMP/conventions.out"); $(wc -l <"$TMP/series") queried series served; the second worker's /readyz: $(cat "$TMP/readyz2")"
