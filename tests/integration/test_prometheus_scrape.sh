#!/usr/bin/env bash
# A real Prometheus scrapes two workers while they run a 200-item job, with the project's alert
# rules loaded. Once the producer is done (--wait, exit 0, every item once in the output, every
# outcome "ok" in the job record), Prometheus's HTTP API must show what happened:
# sum(flashcard_items_succeeded_total) = 200, sum(flashcard_api_call_duration_seconds_count) =
# 400 = the calls the mock answered (2 per item, the cache cold), both workers scraped and busy;
# the seven rules loaded, evaluated without error and none firing; and every query of the Grafana
# dashboard returns data. Prometheus runs on loopback on a port of its own, with its own storage
# in the test's temp dir, and is stopped by PID. About 15 s.
. "$(dirname "$0")/lib.sh"

command -v prometheus >/dev/null || fail "prometheus is missing (Debian package prometheus; deploy/local/services.sh installs it)"
N=200
JOB=prom-$$
DASHBOARD=$SRC/deploy/grafana/flashcard.json

make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --jitter-ms 20
export API_KEY=sk-prom-secret WORKER_COUNT=8 RATE_LIMIT=6000 BATCH_SIZE=20
start_metrics_worker 1
P1=$LAST_PORT
start_metrics_worker 2
P2=$LAST_PORT

# --- Prometheus: scrape both workers every second, evaluate the rules every second.
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $SRC/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: flashcard-worker
    static_configs:
      - targets: ["127.0.0.1:$P1", "127.0.0.1:$P2"]
EOF
promtool check config "$TMP/prometheus.yml" >"$TMP/promtool.out" 2>&1 || fail "promtool check config: $(cat "$TMP/promtool.out")"
# (Like the workers, another port if the one picked is taken before Prometheus binds it.)
ready_or_gone() { curl -fs -o /dev/null "$PROM_URL/-/ready" || ! kill -0 "$PROM_PID" 2>/dev/null; }
for _ in 1 2 3 4 5; do
    PROM_PORT=$(free_port)
    PROM_URL=http://127.0.0.1:$PROM_PORT
    prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
        --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
    PROM_PID=$!
    PIDS+=("$PROM_PID")
    wait_until 60 ready_or_gone || fail "Prometheus did not become ready"
    kill -0 "$PROM_PID" 2>/dev/null && break
    grep -q "address already in use" "$TMP/prometheus.log" || fail "Prometheus exited"
    log "Prometheus: port $PROM_PORT was taken, trying another"
done
curl -fs -o /dev/null "$PROM_URL/-/ready" || fail "Prometheus did not start on a free port in 5 tries"

# query PROMQL: the JSON answer of an instant query. value PROMQL: the value of its one sample,
# "none" if it has not exactly one.
query() { curl -fsS --get --data-urlencode "query=$1" "$PROM_URL/api/v1/query"; }
value() {
    query "$1" 2>/dev/null |
        jq -r 'if .status == "success" and (.data.result | length) == 1 then .data.result[0].value[1] else "none" end'
}
equals() { [ "$(value "$1")" = "$2" ]; }

wait_until 30 equals 'count(up{job="flashcard-worker"} == 1)' 2 ||
    fail "Prometheus does not scrape both workers: $(curl -fsS "$PROM_URL/api/v1/targets" | jq -c '[.data.activeTargets[] | {scrapeUrl, health, lastError}]')"

# --- The job.
started=$SECONDS
timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout 90s --output "$TMP/out.tsv" \
    >"$TMP/producer.log" 2>&1 || fail "producer exit $?"
log "job of $N items done in $((SECONDS - started)) s"
assert_all_succeeded $N "$TMP/out.tsv" "items were dead-lettered"
outcomes=$(redis-cli hvals "$QUEUE_PREFIX:job:{$JOB}:outcome" | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }')
[ "$outcomes" = "ok=$N " ] || fail "job record outcomes: $outcomes (expected ok=$N)"

# --- What Prometheus saw.
calls=$(mock_answered)
[ "$calls" = $((2 * N)) ] || fail "the mock answered $calls calls, expected $((2 * N)) (cache cold)"
wait_until 30 equals 'sum(flashcard_items_succeeded_total)' $N ||
    fail "Prometheus: sum(flashcard_items_succeeded_total) = $(value 'sum(flashcard_items_succeeded_total)'), expected $N"
wait_until 15 equals 'sum(flashcard_api_call_duration_seconds_count)' "$calls" ||
    fail "Prometheus: sum(flashcard_api_call_duration_seconds_count) = $(value 'sum(flashcard_api_call_duration_seconds_count)'), expected $calls"
wait_until 15 equals 'sum(flashcard_api_calls_total{status="2xx"})' "$calls" ||
    fail "Prometheus: 2xx calls $(value 'sum(flashcard_api_calls_total{status="2xx"})'), expected $calls"
for s in 1 2; do
    equals "sum(flashcard_api_call_duration_seconds_bucket{stage=\"$s\",le=\"+Inf\"})" $N ||
        fail "Prometheus: stage $s +Inf bucket $(value "sum(flashcard_api_call_duration_seconds_bucket{stage=\"$s\",le=\"+Inf\"})")"
done
equals 'count(flashcard_items_succeeded_total > 0)' 2 ||
    fail "not both workers did items: $(query 'flashcard_items_succeeded_total' | jq -c '[.data.result[] | .value[1]]')"
equals 'sum(flashcard_items_dead_total) + sum(flashcard_items_retried_total)' 0 || fail "Prometheus: items retried or dead"
equals 'max(flashcard_rate_limit_per_second)' 100 || fail "Prometheus: rate limit $(value 'max(flashcard_rate_limit_per_second)')/s, expected 100"
split=$(query 'flashcard_items_succeeded_total' | jq -r '[.data.result[] | .value[1]] | join("+")')
# No secret reached Prometheus: every series it holds from the workers, labels and all.
curl -fsS --get --data-urlencode 'match[]={job="flashcard-worker"}' "$PROM_URL/api/v1/series" >"$TMP/series.json" ||
    fail "GET /api/v1/series"
[ "$(jq '.data | length' "$TMP/series.json")" -gt 50 ] || fail "Prometheus holds only $(jq '.data | length' "$TMP/series.json") series"
! grep -q "sk-prom-secret" "$TMP/series.json" || fail "the API key is in a label Prometheus stored"
# The dashboard's variables list this job and both workers.
curl -fsS --get --data-urlencode 'match[]=flashcard_build_info' "$PROM_URL/api/v1/label/instance/values" |
    jq -e --arg a "127.0.0.1:$P1" --arg b "127.0.0.1:$P2" '.data | sort == ([$a, $b] | sort)' >/dev/null ||
    fail "label_values(flashcard_build_info, instance) is not the two workers"

# --- The alert rules: loaded, evaluated without error, none firing after a clean job.
rules_ok() {
    curl -fsS "$PROM_URL/api/v1/rules" >"$TMP/rules.json" &&
        [ "$(jq '[.data.groups[] | select(.name == "flashcard") | .rules[]
                  | select(.health == "ok" and (.lastEvaluation | startswith("0001")) == false)] | length' \
            "$TMP/rules.json")" = 7 ]
}
wait_until 15 rules_ok ||
    fail "rules not all loaded and evaluated: $(jq -c '[.data.groups[].rules[] | {name, health, lastError}]' "$TMP/rules.json")"
curl -fsS "$PROM_URL/api/v1/alerts" >"$TMP/alerts.json" || fail "GET /api/v1/alerts"
firing=$(jq -r '[.data.alerts[] | select(.state == "firing") | .labels.alertname] | join(" ")' "$TMP/alerts.json")
[ -z "$firing" ] || fail "alerts firing after a clean job: $firing"

# --- Every dashboard query returns data (Grafana's variables: all jobs and workers, 1m rates).
jq -r '.panels[] | .title as $t | .targets[] | [$t, .refId, .expr] | @tsv' "$DASHBOARD" >"$TMP/queries.tsv"
[ "$(wc -l <"$TMP/queries.tsv")" -ge 10 ] || fail "only $(wc -l <"$TMP/queries.tsv") dashboard queries found"
bad=""
while IFS=$'\t' read -r title ref expr; do
    expr=${expr//\$__rate_interval/1m}
    expr=${expr//\$job/.*}
    expr=${expr//\$instance/.*}
    query "$expr" >"$TMP/q.json" 2>&1 || { bad+="[$title $ref: $(head -c 200 "$TMP/q.json")] "; continue; }
    # Data: at least one series, and no NaN (a quantile of nothing, a rate of no samples).
    jq -e '.status == "success" and (.data.result | length) > 0 and
           ([.data.result[] | .value[1] | select(. == "NaN")] | length) == 0' "$TMP/q.json" >/dev/null ||
        bad+="[$title $ref: $(jq -c '.data.result | map(.value[1])' "$TMP/q.json")] "
done <"$TMP/queries.tsv"
[ -z "$bad" ] || fail "dashboard queries without data: $bad"

kill -TERM "$PROM_PID" 2>/dev/null
wait_until 20 eval '! kill -0 "$PROM_PID" 2>/dev/null' || fail "Prometheus did not stop on SIGTERM"
log "ok: Prometheus saw $N items ($split per worker) and $calls timed calls; 7 rules evaluated, none firing;" \
    "$(wc -l <"$TMP/queries.tsv") dashboard queries with data"
