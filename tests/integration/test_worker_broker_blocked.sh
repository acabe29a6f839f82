#!/usr/bin/env bash
# The broker blocks publishers (a memory alarm, raised here by setting the memory high watermark
# near zero). RabbitMQ tells a connection so (connection.blocked) only when it publishes during the
# alarm, and from then on reads nothing more from it: the worker's first publish after the alarm
# always happens, and whatever the worker then writes or waits for on that connection must not
# stall its event loop. While blocked the worker goes on calling the API for the batches it holds,
# and SIGTERM still stops it within SHUTDOWN_TIMEOUT (+ the 2 s its loop allows for outcomes the
# broker does not confirm). Two cases:
# 1. Big outcome messages (items with a 160 kB extra column: 8 MB of results per batch), more than
#    the socket buffers hold: a publish written straight into the socket would block in send().
# 2. Ordinary messages: the connection is blocked after the worker's first publish; shutting down
#    must not wait for answers the broker will not send while blocked.
# Once the alarm is gone a new worker finishes each job: every item exactly once in the output.
# (The two jobs have different terms: the second is not answered from the first one's cache.)
# The alarm is raised on a RabbitMQ node of the test's own (rabbit_nodes.sh, beside the machine's
# broker, never touching it): the watermark is shared by every user of a node.
# Run time: about 60 s (the node's boot, two jobs of 200 items).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

t0=$SECONDS
rn_start n1

N=200
SHUTDOWN_S=5
make_csv $N "$TMP/small.csv"
{
    echo "position,term,type,Definition"
    seq 1 $N | awk 'BEGIN { p = "x"; while (length(p) < 160000) p = p p; p = substr(p, 1, 160000) } { printf "%d,큰단어%d,noun,%s\n", $1, $1, p }'
} >"$TMP/big.csv"
start_mock --latency-ms 100
# Two batches of 50 held (PREFETCH 2), 2 calls in flight: 200 calls, about 10 s of work held; the
# first batch settles after about 5 s.
export API_KEY=sk-blocked WORKER_COUNT=2 PREFETCH=2 RATE_LIMIT=0 BATCH_SIZE=50 SHUTDOWN_TIMEOUT=${SHUTDOWN_S}s \
    BATCH_MAX_BYTES=16000000
JOB_BIG=blocked-big-$$
JOB_SMALL=blocked-small-$$

rn_await n1
rn_checks_on n1
export AMQP_URL
AMQP_URL=$(rn_url n1)
log "node n1 up in $((SECONDS - t0)) s"
# (Asked of the node itself.)
mem_alarm() { rn_ctl n1 eval 'rabbit_alarm:get_alarms().' 2>/dev/null | grep -q memory; }
no_mem_alarm() { ! mem_alarm; }
mem_alarm && fail "the node has a memory alarm before the test raised one"
raise_alarm() {
    rn_ctl n1 set_vm_memory_high_watermark 0.0000001 >/dev/null || fail "cannot set the watermark"
    wait_until 10 mem_alarm || fail "no memory alarm"
}
# The node's default watermark (0.4 of the machine's memory).
set_watermark_back() { rn_ctl n1 set_vm_memory_high_watermark 0.4 >/dev/null || fail "cannot clear the memory alarm"; }

# stop_within PID NAME: SIGTERM, then the worker must be gone within SHUTDOWN_TIMEOUT + 2 s
# (killed after a few seconds more if not).
stop_within() {
    local pid=$1 name=$2 t0 ms wrc=0
    # (An exited child stays a zombie until waited for: kill -0 still finds it.)
    gone() {
        local st
        st=$(ps -o stat= -p "$pid" 2>/dev/null) || return 0
        [[ $st == Z* ]]
    }
    t0=$(date +%s%3N)
    kill -TERM "$pid"
    wait_until $((SHUTDOWN_S + 6)) gone || true
    ms=$(($(date +%s%3N) - t0))
    if ! gone; then
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        fail "$name: the worker did not exit within $((SHUTDOWN_S + 6)) s of SIGTERM while the broker blocked publishing"
    fi
    wait "$pid" || wrc=$?
    [ $ms -le $(((SHUTDOWN_S + 2) * 1000 + 500)) ] ||
        fail "$name: the worker took $ms ms to exit after SIGTERM (SHUTDOWN_TIMEOUT ${SHUTDOWN_S}s + 2 s)"
    [ $wrc -lt 128 ] || fail "$name: the worker died of signal $((wrc - 128))"
    log "$name: SIGTERM while blocked: exit $wrc after $ms ms"
}

# finish_job JOB CSV: with the alarm gone, a new worker finishes JOB: every item exactly once.
finish_job() {
    local job=$1 csv=$2 prc=0 w
    WORKER_COUNT=8 start_worker "finish-$job"
    w=$LAST_PID
    timeout 70 "$PRODUCER" "$csv" --job-id "$job" --resume --wait --timeout 45s --output "$TMP/$job.tsv" \
        --report "$TMP/$job.json" >"$TMP/producer-wait-$job.log" 2>&1 || prc=$?
    [ $prc = 0 ] || fail "producer ($job) exit $prc"
    tsv_positions "$TMP/$job.tsv" >"$TMP/$job.pos"
    [ "$(wc -l <"$TMP/$job.pos")" = $N ] || fail "$job: expected $N items in the output, got $(wc -l <"$TMP/$job.pos")"
    [ "$(tail -n +2 "$TMP/$job.tsv" | wc -l)" = $((2 * N)) ] || fail "$job: duplicate or missing cards in the output"
    [ "$(jq .items_succeeded "$TMP/$job.json")" = $N ] || fail "$job: report items_succeeded"
    assert_accounted $N "$TMP/$job.pos"
    [ "$(queue_depth dead)" = 0 ] || fail "$job: dead letters: $(queue_depth dead)"
    kill -TERM $w
    wait $w || fail "$job: the finishing worker exit $? after SIGTERM"
}

# ---- 1. big outcome messages --------------------------------------------------------------
# The job is published while the broker is healthy; the alarm goes on before the worker starts, so
# its first publish (the first batch's results) meets it whatever rabbitmqctl's pace on a busy
# machine. (A memory alarm blocks publishers only: the worker connects, declares and consumes.)
"$PRODUCER" "$TMP/big.csv" --job-id $JOB_BIG >"$TMP/producer-publish-big.log" 2>&1 || fail "publish (big) failed"
raise_alarm
start_worker big
W1=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-big.log" || fail "worker did not start under the alarm"
wait_until 20 answered_at_least 10 || fail "big: the worker did not start calling under the alarm"
c0=$(mock_answered)
log "big: memory alarm raised before the worker started"
# The first batch settles after 100 calls: its results are the first publish during the alarm. The
# other batch's calls go on after it.
wait_until 20 answered_at_least 130 ||
    fail "big: calls stopped at $(mock_answered) once the worker published its first batch's results while blocked"
wait_until 5 grep -q "broker blocked publishing" "$TMP/worker-big.log" || fail "big: the worker was not told it is blocked"
c1=$(mock_answered)
wait_until 5 answered_at_least $((c1 + 20)) || fail "big: calls stalled while blocked: $c1 -> $(mock_answered)"
log "big: the worker went on calling while blocked ($c0 -> $(mock_answered) calls)"
stop_within $W1 big
set_watermark_back
wait_until 15 no_mem_alarm || fail "the memory alarm did not clear"
finish_job $JOB_BIG "$TMP/big.csv"

# ---- 2. ordinary messages: shutting down while blocked ------------------------------------
before=$(mock_answered)
"$PRODUCER" "$TMP/small.csv" --job-id $JOB_SMALL >"$TMP/producer-publish-small.log" 2>&1 || fail "publish (small) failed"
raise_alarm
start_worker small
W2=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-small.log" || fail "worker did not start under the alarm"
# The broker says it is blocked when the worker publishes its first batch's results.
wait_until 30 grep -q "broker blocked publishing" "$TMP/worker-small.log" || fail "small: the worker was not told it is blocked"
c0=$(mock_answered)
[ $((c0 - before)) -lt 150 ] || fail "small: the worker got through its batches before the alarm: nothing tested"
wait_until 5 answered_at_least $((c0 + 20)) || fail "small: calls stopped while blocked: $c0 -> $(mock_answered)"
log "small: the worker went on calling while blocked ($((c0 - before)) -> $(($(mock_answered) - before)) calls)"
kill -0 $W2 || fail "small: the worker exited while blocked"
stop_within $W2 small
set_watermark_back
wait_until 15 no_mem_alarm || fail "the memory alarm did not clear"
finish_job $JOB_SMALL "$TMP/small.csv"
log "ok"
