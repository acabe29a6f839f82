#!/usr/bin/env bash
# --wait never acks a result it did not spool, and collects results whatever their positions.
# The worker is stood in for by the test: it publishes the job's results messages (100 items each,
# two cards per item, each message from the second on repeating the last item of the one before,
# as a delivery that came twice) and records the outcomes, as a worker does.
#  1. Positions around 10^12 (a bitmap by position could not hold them: it dropped them, acked, and
#     waited for them in vain) are all written, once each. (The dataset reader takes positions up to
#     10^8 today; a results message can carry any.)
#  2. Out of memory while noting a result: the run stops (exit 1) and every result is either in the
#     spool or still in the results queue; the next --resume --wait writes them all.
#  3. The spool cannot be written (file size limit): the same.
. "$(dirname "$0")/lib.sh"

N=3000
BASE=1000000000000
PER=100
make_csv $N "$TMP/items.csv"

# stand_in_worker JOB: publishes and records the results of positions BASE+1 .. BASE+N.
stand_in_worker() {
    local job=$1 k first
    for k in $(seq 0 $((N / PER - 1))); do
        first=$((k * PER + 1))
        [ $k -gt 0 ] && first=$((first - 1))
        seq $first $(((k + 1) * PER)) | jq -c --argjson base $BASE --arg job "$job" --argjson k $k -s '
            {schema: 1, job_id: $job, batch: $k, worker: "test",
             items: [.[] | {position: ($base + .), term: "단어\(.)", analysis: {},
                            cards: [range(1; 3) as $n | {term_number: "\($n)", tab_name: "Tab", primer: "p",
                                     front: "front \(.)", back: "back\tcol", tags: "t", honorific_level: ""}],
                            usage: {prompt_tokens: 1, completion_tokens: 1, calls: 2, cache_hits: 0}}]}' >"$TMP/msg.json"
        jq -n --rawfile body "$TMP/msg.json" --arg job "$job" --arg id "$job-$k.ok" \
            '{properties: {delivery_mode: 2, message_id: $id, content_type: "application/json"}, routing_key: $job,
              payload: ($body | rtrimstr("\n")), payload_encoding: "string"}' >"$TMP/publish.json"
        [ "$(mgmt -X POST -H 'content-type: application/json' --data-binary @"$TMP/publish.json" \
            "$MGMT/exchanges/%2F/$QUEUE_PREFIX.results/publish" | jq .routed)" = true ] ||
            fail "results message $k was not routed"
    done
    seq $((BASE + 1)) $((BASE + N)) | sed "s/.*/HSET $QUEUE_PREFIX:job:{$job}:outcome & ok/" | redis-cli >/dev/null
    [ "$(redis-cli hlen "$QUEUE_PREFIX:job:{$job}:outcome")" = $N ] || fail "outcomes not recorded"
}

# new_job JOB: publishes the dataset as job JOB, then stands in for the worker.
new_job() {
    timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "$1" >"$TMP/publish-$1.log" 2>&1 || fail "publish $1: exit $?"
    stand_in_worker "$1"
}

# wait_job JOB OUT [CMD...]: --resume --wait for JOB into OUT (run through CMD if given); sets RC.
wait_job() {
    local job=$1 out=$2
    shift 2
    RC=0
    "$@" timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id "$job" --resume --wait --timeout 60s --output "$out" \
        >>"$TMP/wait-$job.log" 2>&1 || RC=$?
}

# assert_output JOB OUT: the wait for JOB exited 0 and OUT holds every position once, two cards each.
assert_output() {
    [ "$RC" = 0 ] || fail "$1: exit $RC, want 0: $(tail -3 "$TMP/wait-$1.log")"
    tsv_positions "$2" >"$TMP/got.pos"
    diff -q "$TMP/want.pos" "$TMP/got.pos" >/dev/null ||
        fail "$1: output positions differ: $(diff "$TMP/want.pos" "$TMP/got.pos" | head -4 | tr '\n' ' ')"
    [ "$(tail -n +2 "$2" | wc -l)" = $((2 * N)) ] || fail "$1: output has $(tail -n +2 "$2" | wc -l) cards"
    [ ! -e "$2.$1.part" ] || fail "$1: the spool is still there"
    [ "$(queue_depth "results.$1")" = absent ] || fail "$1: the results queue was not removed"
}

# assert_nothing_lost JOB SPOOL: every position is in the spool or in a message still in the results queue.
assert_nothing_lost() {
    jq -r .position "$2" 2>/dev/null >"$TMP/kept.pos" || true # a last line cut short is not a result
    mgmt -X POST -H 'content-type: application/json' -d '{"count":1000,"ackmode":"ack_requeue_true","encoding":"auto"}' \
        "$MGMT/queues/%2F/$QUEUE_PREFIX.results.$1/get" | jq -r '.[].payload | fromjson | .items[].position' >>"$TMP/kept.pos"
    sort -un "$TMP/kept.pos" | diff -q "$TMP/want.pos" - >/dev/null ||
        fail "$1: results acked but not spooled: $(sort -un "$TMP/kept.pos" | diff "$TMP/want.pos" - | head -4 | tr '\n' ' ')"
    log "$1: $(wc -l <"$2") results spooled, the rest still queued"
}
seq $((BASE + 1)) $((BASE + N)) >"$TMP/want.pos"

# 1. Positions around 10^12.
new_job big-$$
wait_job big-$$ "$TMP/big.tsv"
assert_output big-$$ "$TMP/big.tsv"
printf 'position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level\n' >"$TMP/want.head"
printf '%s\t단어1\t%s\tTab\tp\tfront 1\tback\\tcol\tt\t\n' $((BASE + 1)) 1 $((BASE + 1)) 2 >>"$TMP/want.head"
head -3 "$TMP/big.tsv" | diff "$TMP/want.head" - >&2 || fail "output rows are not as they were"

# 2. Out of memory: a preloaded calloc fails for arrays of 8-byte elements of 32 KiB or more, which the
# position set asks for once it holds 1024 positions. (Skipped under the sanitizers, whose allocator
# must come first. grep reads all of ldd's output: with -q it could stop at the match, ldd then dies of
# SIGPIPE, and pipefail made the test run the case under ASan.)
if ldd "$PRODUCER" | grep libasan >/dev/null; then
    log "skipping the allocation failure under ASan"
else
    cat >"$TMP/failcalloc.c" <<'EOF'
#include <stdlib.h>
extern void *__libc_calloc(size_t, size_t);
/* calloc fails for arrays of 8-byte elements of FC_FAIL_CALLOC_MIN bytes or more. */
void *calloc(size_t n, size_t size) {
    const char *min = getenv("FC_FAIL_CALLOC_MIN");
    if (min && size == 8 && n >= strtoul(min, NULL, 10) / 8) return NULL;
    return __libc_calloc(n, size);
}
EOF
    ${CC:-cc} -shared -fPIC -o "$TMP/failcalloc.so" "$TMP/failcalloc.c" || fail "cannot build the calloc shim"
    new_job oom-$$
    wait_job oom-$$ "$TMP/oom.tsv" env LD_PRELOAD="$TMP/failcalloc.so" FC_FAIL_CALLOC_MIN=32768
    [ "$RC" = 1 ] || fail "oom: exit $RC, want 1: $(tail -3 "$TMP/wait-oom-$$.log")"
    grep -q "cannot spool a result: out of memory; it stays in the results queue" "$TMP/wait-oom-$$.log" ||
        fail "oom: the error is not said: $(grep -v '^job' "$TMP/wait-oom-$$.log" | tail -3)"
    assert_nothing_lost oom-$$ "$TMP/oom.tsv.oom-$$.part"
    wait_job oom-$$ "$TMP/oom.tsv"
    assert_output oom-$$ "$TMP/oom.tsv"
fi

# 3. The spool cannot be written past 200 KiB (about 500 results): writes fail with EFBIG.
new_job fsize-$$
RC=0
(trap '' XFSZ && ulimit -f 200 && exec timeout 120 "$PRODUCER" "$TMP/items.csv" --job-id fsize-$$ --resume --wait \
    --timeout 60s --output "$TMP/fsize.tsv") >"$TMP/wait-fsize-$$.log" 2>&1 || RC=$?
[ "$RC" = 1 ] || fail "fsize: exit $RC, want 1: $(tail -3 "$TMP/wait-fsize-$$.log")"
grep -q "cannot write the spool" "$TMP/wait-fsize-$$.log" || fail "fsize: the error is not said"
assert_nothing_lost fsize-$$ "$TMP/fsize.tsv.fsize-$$.part"
wait_job fsize-$$ "$TMP/fsize.tsv"
assert_output fsize-$$ "$TMP/fsize.tsv"
log "ok"
