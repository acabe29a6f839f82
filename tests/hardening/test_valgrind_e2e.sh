#!/usr/bin/env bash
# An end-to-end job under valgrind memcheck: the producer (--wait --output --report), two workers
# (one serving /metrics, scraped during the job, so libmicrohttpd's thread runs too) and
# flashcard-admin (`status`, `dead list`) each run under memcheck with --error-exitcode=99, a full
# leak check whose definite, indirect and possible leaks count as errors, origins tracked and
# freed memory kept out of reuse for a while. A small job (48 items, batches of 8) meets 500s and
# 429s (retries through a 1 s retry queue, a fleet pause) and one permanent 400 (position 47, the
# dead-letter path). Then SIGTERM: both workers exit 0 (so valgrind found nothing), every program's
# log ends with "ERROR SUMMARY: 0 errors" and no leak other than "still reachable", and the job's
# accounting holds. Suppressions (tests/hardening/valgrind.supp) cover only third-party libraries'
# one-time allocations, each with its reason. Run time: about 20 s idle, 50 s on a loaded machine.
. "$(dirname "$0")/../integration/lib.sh"

command -v valgrind >/dev/null || fail "valgrind is missing (Debian package valgrind)"
ADMIN=$BUILD/admin/flashcard-admin
SUPP=$SRC/tests/hardening/valgrind.supp
N=48
DEAD_POS=47

# $TMP/vg NAME PROGRAM ARGS...: runs PROGRAM under memcheck (exec: the PID stays the program's, so a
# signal reaches it), its report in $TMP/vg-NAME.txt. Exit 99 = valgrind found an error. A script,
# so that lib.sh's start_worker and timeout(1) can run it.
VG_OPTS=(--tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible
    --show-leak-kinds=all --track-fds=no --track-origins=yes --freelist-vol=50000000
    --num-callers=40 --suppressions="$SUPP" --gen-suppressions=all)
{ echo '#!/usr/bin/env bash'; echo 'name=$1; shift'
  echo "exec valgrind $(printf '%q ' "${VG_OPTS[@]}") --log-file=$(printf '%q' "$TMP")/vg-\$name.txt \"\$@\""; } >"$TMP/vg"
{ echo '#!/usr/bin/env bash'; echo "exec $(printf '%q' "$TMP/vg") \"\$VG_NAME\" $(printf '%q' "$WORKER") \"\$@\""; } >"$TMP/vg-worker"
chmod +x "$TMP/vg" "$TMP/vg-worker"
# vg_clean NAME: the program's report says no error and no leak but still reachable blocks.
vg_clean() {
    local f="$TMP/vg-$1.txt"
    [ -s "$f" ] || fail "$1: no valgrind report"
    grep -q "ERROR SUMMARY: 0 errors" "$f" || fail "$1: valgrind reported errors: $(grep -m1 'ERROR SUMMARY' "$f"); see $f"
    ! grep -Eq "(definitely|indirectly|possibly) lost: [1-9]" "$f" || fail "$1: valgrind reported leaks; see $f"
}

make_csv $N "$TMP/items.csv"
# Retries go through the 1 s retry queue; a 429 (the first call gets one for sure) pauses the fleet for 1 s.
start_mock --latency-ms 5 --jitter-ms 10 --fail-500 0.08 --fail-429 0.03 --once-429 --retry-after 1 --reject-mod $DEAD_POS --seed 7
export API_KEY=sk-valgrind-secret WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=8 RETRY_DELAYS=1s MAX_ATTEMPTS=8 \
    BREAKER_FAILURES=100000 CACHE_TTL=0 SHUTDOWN_TIMEOUT=60s
# Under valgrind a program runs 20-50 times slower: give the heartbeat room.
export HEARTBEAT=60

# The workers, each under memcheck; the first serves /metrics on a free port (as lib.sh's
# start_metrics_worker, with a start-up limit for valgrind's pace: a taken port makes it exit, then
# another is tried).
WORKER=$TMP/vg-worker
for _ in 1 2 3 4 5; do
    P1=$(free_port)
    VG_NAME=worker-1 METRICS_PORT=$P1 start_worker 1
    W1=$LAST_PID
    wait_until 120 started_or_gone 1 "$W1" || fail "worker 1 did not start"
    grep -q consuming "$TMP/worker-1.log" && break
    grep -q "cannot serve metrics" "$TMP/worker-1.log" || fail "worker 1 exited"
    log "worker 1: port $P1 was taken, trying another"
done
grep -q consuming "$TMP/worker-1.log" || fail "worker 1: no free metrics port in 5 tries"
VG_NAME=worker-2 start_worker 2
W2=$LAST_PID
wait_until 120 started_or_gone 2 "$W2" && grep -q consuming "$TMP/worker-2.log" || fail "worker 2 did not start"

# The job, with a scraper of worker 1's endpoints beside it.
( set +e; n=0
  for _ in $(seq 1 2000); do
      kill -0 "$W1" 2>/dev/null || break
      [ -e "$TMP/job.done" ] && break
      for path in metrics readyz healthz; do curl -fsS -m 10 -o /dev/null "http://127.0.0.1:$P1/$path" && n=$((n + 1)); done
      echo $n >"$TMP/scrapes"
      sleep 0.2
  done ) &
SCRAPER=$!
PIDS+=("$SCRAPER")
prc=0
timeout 240 "$TMP/vg" producer "$PRODUCER" "$TMP/items.csv" --job-id vg-$$ --wait --timeout 180s \
    --output "$TMP/out.tsv" --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 || prc=$?
touch "$TMP/job.done"
wait "$SCRAPER" || true
[ $prc = 99 ] && fail "producer: valgrind reported errors; see $TMP/vg-producer.txt"
# One item failed for good, so a clean run ends 1 (finished, items failed).
[ $prc = 1 ] || fail "producer exit $prc, expected 1 (one item dead-lettered)"
vg_clean producer
[ "$(cat "$TMP/scrapes" 2>/dev/null || echo 0)" -gt 0 ] || fail "no scrape of worker 1 succeeded"

tsv_positions "$TMP/out.tsv" >"$TMP/results.pos"
assert_accounted $N "$TMP/results.pos"
grep -qx "$DEAD_POS" "$TMP/dead.pos" || fail "position $DEAD_POS (400) is not in the dead letters"
[ "$(jq .items_succeeded "$TMP/report.json")" = "$(wc -l <"$TMP/results.pos")" ] || fail "report: items_succeeded"
[ "$(jq .items_failed "$TMP/report.json")" = "$(wc -l <"$TMP/dead.pos")" ] || fail "report: items_failed"
# The fault paths ran: the mock answered 500s and 429s, and the items that met them were retried.
awk '$2 == 500 { f = 1 } $2 == 429 { t = 1 } END { exit !(f && t) }' "$TMP/mock-requests.log" ||
    fail "the mock answered no 500 or no 429: the retry paths did not run"

# flashcard-admin under memcheck: status sees the workers, dead list the dead item.
arc=0
timeout 120 "$TMP/vg" admin-status "$ADMIN" status >"$TMP/admin-status.out" 2>"$TMP/admin-status.log" || arc=$?
[ $arc = 0 ] || fail "flashcard-admin status exit $arc: $(head -3 "$TMP/admin-status.log")"
vg_clean admin-status
arc=0
timeout 120 "$TMP/vg" admin-dead "$ADMIN" dead list --json >"$TMP/admin-dead.json" 2>"$TMP/admin-dead.log" || arc=$?
[ $arc = 0 ] || fail "flashcard-admin dead list exit $arc: $(head -3 "$TMP/admin-dead.log")"
vg_clean admin-dead
jq -e --argjson p $DEAD_POS '[.. | objects | select(.position? == $p)] | length > 0' "$TMP/admin-dead.json" \
    >/dev/null || fail "dead list does not show position $DEAD_POS"

# SIGTERM: each worker stops cleanly (exit 0; 99 would be valgrind's) with a clean report.
kill -TERM "$W1" "$W2"
for w in "1 $W1" "2 $W2"; do
    set -- $w
    rc=0
    wait "$2" || rc=$?
    [ $rc = 0 ] || fail "worker $1 exit $rc after SIGTERM (99: valgrind found errors; see $TMP/vg-worker-$1.txt)"
    vg_clean "worker-$1"
done
# FC_VG_KEEP=DIR keeps the reports (the test's directory is removed when it passes).
[ -z "${FC_VG_KEEP:-}" ] || { mkdir -p "$FC_VG_KEEP" && cp "$TMP"/vg-*.txt "$FC_VG_KEEP/"; }
! grep -rq "sk-valgrind-secret" "$TMP"/*.log "$TMP"/*.txt || fail "the API key appeared in a log"
log "ok: $N items ($(wc -l <"$TMP/results.pos") ok, $(wc -l <"$TMP/dead.pos") dead), $(cat "$TMP/scrapes") scrapes, no valgrind error or leak"
