#!/usr/bin/env bash
# The worker's metrics thread under ThreadSanitizer: the worker is built with -DFC_SANITIZE=thread
# (in $BUILD/tsan, only the flashcard-worker target; an up-to-date build is reused), two such
# workers serve /metrics, and /metrics, /readyz and /healthz of both are scraped by curls in
# parallel, round after round without pause, while a job of 300 items runs with faults (500s, 429s,
# three permanent 400s) so the retry, dead and status counters move under the readers. TSan halts
# a worker at its first report (exit 66) into $TMP/tsan.<pid>: the workers must still be there when
# the job ends, exit 0 after SIGTERM, and leave no report; the job's accounting holds. Prints the
# number of scrapes. Run time: 15-25 s, plus the TSan build when the sources changed (about 15 s idle,
# a few minutes on a loaded machine).
. "$(dirname "$0")/../integration/lib.sh"

N=300
TSAN_BUILD=$BUILD/tsan
TSAN_WORKER=$TSAN_BUILD/worker/flashcard-worker

# The build: configured once, then `cmake --build` redoes only what changed (nothing when it is up
# to date). A lock keeps two runs of this test from building in one directory at once.
build_tsan() {
    if ! grep -qs '^FC_SANITIZE:STRING=thread$' "$TSAN_BUILD/CMakeCache.txt"; then
        cmake -S "$SRC" -B "$TSAN_BUILD" -DFC_SANITIZE=thread -DBUILD_TESTING=OFF -DFC_WERROR=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$TMP/tsan-cmake.log" 2>&1 || return 1
    fi
    cmake --build "$TSAN_BUILD" -j2 --target flashcard-worker >"$TMP/tsan-build.log" 2>&1
}
mkdir -p "$TSAN_BUILD"
exec 9>"$TSAN_BUILD/.test_tsan_metrics.lock"
flock -w 900 9 || fail "the TSan build directory stayed locked for 15 min"
t0=$SECONDS
build_tsan || fail "the TSan build failed: $(tail -5 "$TMP/tsan-cmake.log" "$TMP/tsan-build.log" 2>/dev/null)"
exec 9>&-
log "TSan worker built in $((SECONDS - t0)) s"

# TSan maps its shadow memory at fixed addresses; with a high vm.mmap_rnd_bits (recent kernels
# raised it to 32) the randomized mappings can land there and TSan aborts with "unexpected memory
# mapping". `setarch -R` turns address randomization off for the worker's process only (a
# personality flag inherited through exec), so the machine's settings stay as they are. Where
# personality(2) is refused (some containers), the worker runs without it.
NORAND=(setarch "$(uname -m)" -R)
"${NORAND[@]}" true 2>/dev/null || NORAND=()
# halt_on_error: the first report ends the worker with exit 66, so a race cannot go unnoticed.
{ echo '#!/usr/bin/env bash'
  echo "export TSAN_OPTIONS=$(printf '%q' "halt_on_error=1 exitcode=66 second_deadlock_stack=1 log_path=$TMP/tsan")"
  echo "exec $(printf '%q ' "${NORAND[@]}" "$TSAN_WORKER") \"\$@\""; } >"$TMP/tsan-worker"
chmod +x "$TMP/tsan-worker"
WORKER=$TMP/tsan-worker

make_csv $N "$TMP/items.csv"
start_mock --latency-ms 5 --jitter-ms 15 --fail-500 0.05 --fail-429 0.01 --retry-after 1 --reject-mod 97 --seed 11
export API_KEY=sk-tsan-secret WORKER_COUNT=8 RATE_LIMIT=0 BATCH_SIZE=20 RETRY_DELAYS=1s MAX_ATTEMPTS=8 \
    BREAKER_FAILURES=100000 CACHE_TTL=0
start_metrics_worker 1
W1=$LAST_PID P1=$LAST_PORT
start_metrics_worker 2
W2=$LAST_PID P2=$LAST_PORT

# The scraper: each round fetches the three endpoints of both workers at once (six curls in
# parallel) and counts the answers (/readyz answers 503 when the worker is not ready: an answer
# still). It stops when the job is done, a worker is gone, or after 20,000 rounds / 10 min.
scraper() {
    local rounds=0 answered=0 end=$((SECONDS + 600))
    while [ $rounds -lt 20000 ] && [ $SECONDS -lt $end ] && [ ! -e "$TMP/job.done" ]; do
        kill -0 "$W1" 2>/dev/null && kill -0 "$W2" 2>/dev/null || break
        for p in "$P1" "$P2"; do
            for path in metrics readyz healthz; do
                curl -s -m 10 -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$p/$path" >"$TMP/scrape.$p.$path" &
            done
        done
        wait
        answered=$((answered + $(cat "$TMP"/scrape.* | grep -Ec '^(200|503)$')))
        rounds=$((rounds + 1))
        echo "$rounds $answered" >"$TMP/scrapes"
    done
}
scraper &
SCRAPER=$!
PIDS+=("$SCRAPER")

timeout 400 "$PRODUCER" "$TMP/items.csv" --job-id tsan-$$ --wait --timeout 360s --output "$TMP/out.tsv" \
    --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
PIDS+=("$PRODUCER_PID")
# A worker stopped by TSan would leave the job hanging: stop waiting as soon as one is gone.
job_over() { ! kill -0 "$PRODUCER_PID" 2>/dev/null || ! kill -0 "$W1" 2>/dev/null || ! kill -0 "$W2" 2>/dev/null; }
wait_until 420 job_over || fail "the job did not end in 7 min"
touch "$TMP/job.done"
wait "$SCRAPER" || true
for w in "1 $W1" "2 $W2"; do
    set -- $w
    kill -0 "$2" 2>/dev/null && continue
    rc=0; wait "$2" || rc=$?
    fail "worker $1 exited $rc during the job (66: TSan report): $(cat "$TMP"/tsan.* 2>/dev/null | head -40)"
done
prc=0; wait "$PRODUCER_PID" || prc=$?
[ $prc = 1 ] || fail "producer exit $prc, expected 1 (three items dead-lettered)"
read -r rounds scrapes <"$TMP/scrapes" || fail "no scrape round finished"
[ "$rounds" -ge 10 ] || fail "only $rounds scrape rounds during the job"
[ "$scrapes" = $((rounds * 6)) ] || fail "$((rounds * 6 - scrapes)) of $((rounds * 6)) scrapes got no answer"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"
for p in 97 194 291; do grep -qx $p "$TMP/dead.pos" || fail "position $p (400) is not in the dead letters"; done
# The error counters moved while they were read.
curl -fsS "http://127.0.0.1:$P1/metrics" >"$TMP/m1.txt" && curl -fsS "http://127.0.0.1:$P2/metrics" >"$TMP/m2.txt" ||
    fail "no final /metrics"
sum() { awk -v p="$1" '$1 ~ p { s += $2 } END { printf "%d\n", s }' "$TMP/m1.txt" "$TMP/m2.txt"; }
[ "$(sum '^flashcard_items_retried_total\{')" -gt 0 ] || fail "metrics: no item retried"
[ "$(sum '^flashcard_items_dead_total\{')" -ge 3 ] || fail "metrics: items_dead_total $(sum '^flashcard_items_dead_total\{')"
[ "$(sum '^flashcard_api_calls_total\{.*status="5xx"')" -gt 0 ] || fail "metrics: no 5xx call counted"

# SIGTERM: both exit 0, and TSan wrote no report.
kill -TERM "$W1" "$W2"
for w in "1 $W1" "2 $W2"; do
    set -- $w
    rc=0; wait "$2" || rc=$?
    [ $rc = 0 ] || fail "worker $1 exit $rc after SIGTERM (66: TSan report): $(cat "$TMP"/tsan.* 2>/dev/null | head -40)"
done
! ls "$TMP"/tsan.* >/dev/null 2>&1 || fail "TSan reports: $(cat "$TMP"/tsan.* | head -60)"
! grep -rq "sk-tsan-secret" "$TMP"/*.log || fail "the API key appeared in a log"
log "ok: $N items ($(wc -l <"$TMP/results.pos") ok, $(wc -l <"$TMP/dead.pos") dead), $scrapes scrapes in $rounds rounds, no TSan report"
