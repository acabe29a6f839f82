#!/usr/bin/env bash
# Fair sharing between jobs. The fleet (2 workers, RATE_LIMIT 100 calls/s) works on job A, 3,000 items;
# job B, 100 items, is submitted 5 s later and must finish within twice its fair-share ideal (its 200
# calls at half the rate: 4 s, so 8 s), not after A. Later job C, 100 items at priority 10 beside A's 5,
# must get the larger share (2/3 in theory). A must finish about as fast as alone, give or take B's and
# C's calls. Every item of every job ends exactly once in its job's output, nothing is dead-lettered,
# and the jobs' own queues are gone once they complete.
. "$(dirname "$0")/lib.sh"

# Disjoint positions tell the jobs apart in the mock's request log.
rows() { { echo "position,term,type"; seq "$1" "$2" | awk -v p="$3" '{printf "%d,%s%d,noun\n", $1, p, $1}'; } >"$4"; }
rows 1 3000 가 "$TMP/a.csv"
rows 100001 100100 나 "$TMP/b.csv"
rows 200001 200100 다 "$TMP/c.csv"
start_mock --latency-ms 20
export API_KEY=sk-fair WORKER_COUNT=16 RATE_LIMIT=6000 BATCH_SIZE=10 CACHE_TTL=0
start_worker 1
start_worker 2
for i in 1 2; do wait_until 15 grep -q consuming "$TMP/worker-$i.log" || fail "worker $i did not start"; done

now() { date +%s.%N; }
run_job() { # NAME EXTRA_ARGS...: runs the producer of job NAME in the foreground, writing NAME.start/.end
    local name=$1; shift
    now >"$TMP/$name.start"
    timeout 200 "$PRODUCER" "$TMP/$name.csv" --job-id "$name-$$" --wait --timeout 180s --output "$TMP/$name.tsv" \
        --report "$TMP/$name.json" "$@" >"$TMP/producer-$name.log" 2>&1
    local rc=$?
    now >"$TMP/$name.end"
    return $rc
}
secs() { echo "$(cat "$TMP/$1.end") - $(cat "$TMP/$1.start")" | bc; }

run_job a & A_PID=$!
PIDS+=("$A_PID")
sleep 5
run_job b || fail "producer of B exit $?"
B=$(secs b)
log "B (100 items, submitted 5 s after A) finished in $B s (ideal 4 s, bound 8 s)"
awk -v b="$B" 'BEGIN {exit !(b <= 8)}' || fail "B took $B s: more than twice its fair-share ideal"
# The share of the calls while B had work: from its first call to its last.
share() { # FIRST_POS LAST_POS: the job's share of the calls made from its first call to its last, and of those
    # made while it was in full swing (from its 20th to its 80th percentile call: the workers start and stop
    # following a job up to a second apart, and its last batches finish on one worker)
    awk -v lo="$1" -v hi="$2" '{t[NR] = $1; p[NR] = $4} $4 >= lo && $4 <= hi {j[++k] = $1}
        END {f = j[1]; l = j[k]; cf = j[int(k * 0.2) + 1]; cl = j[int(k * 0.8)]
             for (i = 1; i <= NR; i++) {
                 mine = p[i] >= lo && p[i] <= hi
                 if (t[i] >= f && t[i] <= l) {n++; m += mine}
                 if (t[i] >= cf && t[i] <= cl) {cn++; cm += mine}
             }
             printf "%.3f %.3f %d %d\n", m / n, cm / cn, m, n}' "$TMP/mock-requests.log"
}
read -r B_SHARE B_MID B_CALLS ALL_CALLS < <(share 100001 100100)
log "B's share while it had work: $B_SHARE ($B_CALLS of $ALL_CALLS calls), $B_MID in full swing"
awk -v s="$B_MID" 'BEGIN {exit !(s >= 0.40 && s <= 0.60)}' || fail "B's share $B_MID is not about half"

sleep 5
run_job c --priority 10 || fail "producer of C exit $?"
C=$(secs c)
read -r C_SHARE C_MID C_CALLS ALL_CALLS < <(share 200001 200100)
log "C (100 items, priority 10 beside A's 5) finished in $C s; its share $C_SHARE ($C_CALLS of $ALL_CALLS calls), $C_MID in full swing (2/3 in theory)"
awk -v s="$C_SHARE" -v m="$C_MID" 'BEGIN {exit !(s > 0.5 && m >= 0.58 && m <= 0.75)}' ||
    fail "C's share $C_SHARE ($C_MID in full swing) is not the larger one (about 2/3)"
awk -v c="$C" 'BEGIN {exit !(c <= 6)}' || fail "C took $C s: more than twice its ideal of 3 s"

wait "$A_PID" || fail "producer of A exit $?"
A=$(secs a)
# Alone A takes its 6,000 calls at 100/s; B's and C's 400 calls come on top.
log "A (3,000 items) finished in $A s (6,400 calls at 100/s: 64 s)"
awk -v a="$A" 'BEGIN {exit !(a <= 64 * 1.1 + 5)}' || fail "A took $A s, much longer than its calls at the rate"

for j in a:1:3000 b:100001:100100 c:200001:200100; do
    IFS=: read -r name lo hi <<<"$j"
    tsv_positions "$TMP/$name.tsv" >"$TMP/$name.pos"
    seq "$lo" "$hi" | diff -q - "$TMP/$name.pos" >/dev/null || fail "job $name: not every item once in its output"
    [ "$(tail -n +2 "$TMP/$name.tsv" | wc -l)" = $((2 * (hi - lo + 1))) ] || fail "job $name: duplicate or missing cards"
    [ "$(jq .items_succeeded "$TMP/$name.json")" = $((hi - lo + 1)) ] || fail "job $name: report"
done
[ "$(dead_messages | jq length)" = 0 ] || fail "dead letters"
# Each position was called exactly twice (two stages): nothing was paid for twice.
[ "$(awk '{print $4}' "$TMP/mock-requests.log" | sort | uniq -c | awk '$1 != 2' | wc -l)" = 0 ] ||
    fail "some item was called other than twice"
job_queues() { mgmt "$MGMT/queues/%2F?columns=name" | jq -r '.[].name' | grep -c "^$QUEUE_PREFIX\.job\." || true; }
gone() { [ "$(job_queues)" = 0 ]; }
wait_until 10 gone || fail "the jobs' queues were not deleted once complete: $(job_queues) left"
[ "$(redis-cli zcard "$QUEUE_PREFIX:active")" = 0 ] || fail "complete jobs still listed in P:active"
[ "$(queue_depth batches)" = 0 ] || fail "work queue not empty"
log "ok: A $A s, B $B s (share $B_SHARE, $B_MID in full swing), C $C s (share $C_SHARE, $C_MID in full swing)"
