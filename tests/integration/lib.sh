# Shared helpers of the integration tests: each test runs in its own queue prefix and temp
# dir against the real RabbitMQ and Redis started by deploy/local/services.sh, starts the
# mock API and the workers it needs, and cleans up by PID on exit.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

SRC=${FC_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${FC_BUILD_DIR:-$SRC/build}
PRODUCER=$BUILD/producer/flashcard-producer
WORKER=$BUILD/worker/flashcard-worker
MOCK=$BUILD/tests/mock-api
MGMT=${FC_MGMT_URL:-http://127.0.0.1:15672/api}
TEST_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "/tmp/fc-$TEST_NAME.XXXXXX")
PIDS=()
export QUEUE_PREFIX="it-$TEST_NAME-$$"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo" # rabbitmqctl runs as root or rabbitmq only
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export LOG_LEVEL=${LOG_LEVEL:-info}

log() { echo "[$TEST_NAME] $*" >&2; }
fail() {
    log "FAIL: $*"
    for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f (last 15 lines)"; tail -15 "$f"; }; done >&2
    exit 1
}

mgmt() { curl -fsS -u guest:guest "$@"; }

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # Remove this test's queues, exchanges and Redis keys.
    for q in $(mgmt "$MGMT/queues/%2F?columns=name" 2>/dev/null | jq -r '.[].name' | grep "^$QUEUE_PREFIX\." || true); do
        mgmt -X DELETE "$MGMT/queues/%2F/$q" >/dev/null 2>&1 || true
    done
    for e in $(mgmt "$MGMT/exchanges/%2F?columns=name" 2>/dev/null | jq -r '.[].name' | grep "^$QUEUE_PREFIX\." || true); do
        mgmt -X DELETE "$MGMT/exchanges/%2F/$e" >/dev/null 2>&1 || true
    done
    redis-cli --scan --pattern "$QUEUE_PREFIX:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
    ports_release
    if [ $rc -eq 0 ]; then rm -rf "$TMP"; else log "logs kept in $TMP"; fi
}
trap cleanup EXIT

# start_mock ARGS...: starts the mock API; sets MOCK_PORT and exports API_BASE_URL.
start_mock() {
    rm -f "$TMP/mock.port"
    "$MOCK" --port-file "$TMP/mock.port" --log "$TMP/mock-requests.log" "$@" >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    for _ in $(seq 1 100); do [ -s "$TMP/mock.port" ] && break; sleep 0.05; done
    [ -s "$TMP/mock.port" ] || fail "the mock API did not start"
    MOCK_PORT=$(cat "$TMP/mock.port")
    export API_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1"
}

# mock_control JSON: changes the mock's faults at run time.
mock_control() { curl -fsS -X POST -d "$1" "http://127.0.0.1:$MOCK_PORT/control" >/dev/null; }

# mock_answered: chat requests the mock has answered so far (lines in its request log);
# answered_at_least N: true once it has answered N (for wait_until).
mock_answered() { cat "$TMP/mock-requests.log" 2>/dev/null | wc -l; }
answered_at_least() { [ "$(mock_answered)" -ge "$1" ]; }

# mock_requests: chat requests the mock has received so far, counted on arrival (its request log
# gets a line only when a call is answered).
mock_requests() { curl -fsS "http://127.0.0.1:$MOCK_PORT/stats" | jq .requests; }

# start_worker NAME [ARGS...]: starts a worker in the background; its PID goes to $LAST_PID.
start_worker() {
    local name=$1; shift
    : >"$TMP/worker-$name.log" # there at once for the greps that wait on it
    "$WORKER" "$@" >"$TMP/worker-$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# start_metrics_worker NAME: starts a worker serving /metrics on a free port, left in $LAST_PORT,
# and waits until it consumes. A port taken between free_port's pick and the worker's bind (an
# outgoing connection may get it) makes the worker exit: then it tries another, at most 5.
started_or_gone() { grep -q consuming "$TMP/worker-$1.log" || ! kill -0 "$2" 2>/dev/null; }
start_metrics_worker() {
    local name=$1
    for _ in 1 2 3 4 5; do
        LAST_PORT=$(free_port)
        METRICS_PORT=$LAST_PORT start_worker "$name"
        wait_until 20 started_or_gone "$name" "$LAST_PID" || fail "worker $name did not start"
        grep -q consuming "$TMP/worker-$name.log" && return 0
        grep -q "cannot serve metrics" "$TMP/worker-$name.log" || fail "worker $name exited"
        log "worker $name: port $LAST_PORT was taken, trying another"
    done
    fail "worker $name: no free metrics port in 5 tries"
}

# queue_depth SUFFIX: messages (ready + unacked) in $QUEUE_PREFIX.SUFFIX, asked of the node
# itself (the management API's counters lag by a stats interval). Classic queues answer live;
# the quorum work queue's figures are refreshed every few seconds, so poll them with wait_until.
# Prints "absent" for a queue that does not exist; returns 1 (printing nothing) if rabbitmqctl fails,
# so that no comparison with 0 passes without asking.
queue_depth() {
    local out n
    out=$($SUDO rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null) || return 1
    n=$(awk -v q="$QUEUE_PREFIX.$1" '$1 == q { print $2 }' <<<"$out")
    echo "${n:-absent}"
}

# job_queue JOB: the suffix (for queue_depth, take_messages) of JOB's own work queue,
# $QUEUE_PREFIX.job.JOB, where the producer publishes the job's batches (common/fc_jobs.h); the
# shared work queue, batches, carries retries, continuations and replays.
job_queue() { echo "job.$1"; }

# job_queue_empty JOB: true when JOB's queue is gone (the worker that saw the job complete deleted
# it) or holds no message, ready or unacked (its depth: poll it with wait_until).
job_queue_empty() {
    local n
    n=$(queue_depth "$(job_queue "$1")") || return 1
    [ "$n" = 0 ] || [ "$n" = absent ]
}

# job_queues_depth: the messages (ready + unacked) of every job's queue ($QUEUE_PREFIX.job.*) still
# there, summed (0 when there is none); returns 1, printing nothing, if rabbitmqctl fails.
job_queues_depth() {
    local out
    out=$($SUDO rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null) || return 1
    awk -v p="$QUEUE_PREFIX.job." 'index($1, p) == 1 { n += $2 } END { print n + 0 }' <<<"$out"
}

# queue_peek SUFFIX: the ready messages a get finds at once in $QUEUE_PREFIX.SUFFIX (0 or 1; the one
# seen is requeued), or "absent" for a queue that does not exist (the get answers 404); returns 1,
# printing nothing, on any other answer. Not for polling a queue that may hold messages: a requeue
# counts as a delivery in a quorum queue, and enough of them dead-letter the message.
queue_peek() {
    local code
    code=$(curl -sS -u guest:guest -o "$TMP/peek.json" -w '%{http_code}' -X POST -H 'content-type: application/json' \
        -d '{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}' "$MGMT/queues/%2F/$QUEUE_PREFIX.$1/get") ||
        return 1
    case $code in
    200) jq length "$TMP/peek.json" ;;
    404) echo absent ;;
    *) return 1 ;;
    esac
}

# assert_work_done JOB: nothing of JOB is left to do in the work queues once --wait has ended: a get
# finds nothing ready, at once, in the shared queue nor in the job's (or the job's is gone), and
# their depths (ready + unacked; a quorum queue's figures lag a few seconds) reach 0 within 30 s.
assert_work_done() {
    [ "$(queue_peek batches)" = 0 ] || fail "the work queue still holds messages"
    case $(queue_peek "$(job_queue "$1")") in
    0 | absent) ;;
    *) fail "the queue of job $1 still holds messages" ;;
    esac
    batches_depth_zero() { [ "$(queue_depth batches)" = 0 ]; }
    wait_until 30 batches_depth_zero || fail "the work queue depth stays $(queue_depth batches)"
    wait_until 30 job_queue_empty "$1" || fail "the depth of the queue of job $1 stays $(queue_depth "$(job_queue "$1")")"
}

# dead_messages: every message in the dead-letter queue (peeked, requeued), as a JSON array.
dead_messages() {
    mgmt -X POST -H 'content-type: application/json' \
        -d '{"count":100000,"ackmode":"ack_requeue_true","encoding":"auto"}' \
        "$MGMT/queues/%2F/$QUEUE_PREFIX.dead/get"
}

# dead_positions: positions of the items in the dead-letter queue, one per line.
dead_positions() { dead_messages | jq -r '.[].payload | fromjson | .items[].position'; }

# tsv_positions FILE: the distinct item positions in an Anki TSV output.
tsv_positions() { tail -n +2 "$1" | cut -f1 | sort -n | uniq; }

# count_is FN N: whether FN prints N (for wait_until, which must run FN again each time: an argument
# written "$(FN)" would be counted once, when wait_until is called).
count_is() { [ "$("$1")" = "$2" ]; }

# wait_until SECONDS CMD...: polls CMD until it succeeds or the time is up.
wait_until() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    while [ $SECONDS -lt $end ]; do "$@" && return 0; sleep 0.2; done
    return 1
}

# assert_accounted N RESULTS_POSITIONS_FILE: positions 1..N each appear exactly once, either
# in the results or in the dead-letter queue; the work queues (the shared one and every job's
# still there) are empty.
assert_accounted() {
    local n=$1 results=$2
    dead_positions | sort -n >"$TMP/dead.pos"
    local dups
    dups=$(sort -n "$results" "$TMP/dead.pos" | uniq -d | head -5 | tr '\n' ' ')
    [ -z "$dups" ] || fail "positions both in results and dead letters, or twice: $dups"
    sort -n "$results" "$TMP/dead.pos" >"$TMP/all.pos"
    seq 1 "$n" | diff -q - "$TMP/all.pos" >/dev/null ||
        fail "not every item accounted once (< missing, > extra): $(seq 1 "$n" | diff - "$TMP/all.pos" |
            grep '^[<>]' | head -5 | tr '\n' ' ')"
    # The last ack follows the last outcome record by a moment: give it a few seconds.
    work_empty() { [ "$(queue_depth batches)" = 0 ] && [ "$(job_queues_depth)" = 0 ]; }
    wait_until 15 work_empty ||
        fail "work queues not empty: $(queue_depth batches) messages in the shared one, $(job_queues_depth) in the jobs'"
    log "accounted: $(wc -l <"$results") in results, $(wc -l <"$TMP/dead.pos") dead-lettered, of $n"
}

# assert_all_succeeded N TSV WHY: every one of N items is in the output TSV once with its two
# cards, accounted for, and none was dead-lettered (WHY: the failure message if one was).
assert_all_succeeded() {
    local n=$1 tsv=$2 why=$3
    tsv_positions "$tsv" >"$TMP/results.pos"
    [ "$(wc -l <"$TMP/results.pos")" = "$n" ] || fail "$(wc -l <"$TMP/results.pos") of $n items in the output"
    [ "$(tail -n +2 "$tsv" | wc -l)" = $((2 * n)) ] || fail "duplicate or missing cards in the output"
    assert_accounted "$n" "$TMP/results.pos"
    [ "$(wc -l <"$TMP/dead.pos")" = 0 ] || fail "$why"
}

# take_messages SUFFIX OUT FILTER: consumes every message of $QUEUE_PREFIX.SUFFIX through the
# management API, writing what the jq FILTER makes of each chunk of messages to OUT.
take_messages() {
    : >"$2"
    for _ in $(seq 1 200); do
        mgmt -X POST -H 'content-type: application/json' \
            -d '{"count":2000,"ackmode":"ack_requeue_false","encoding":"auto"}' \
            "$MGMT/queues/%2F/$QUEUE_PREFIX.$1/get" >"$TMP/chunk.json"
        [ "$(jq length "$TMP/chunk.json")" = 0 ] && return 0
        jq -rc "$3" "$TMP/chunk.json" >>"$2"
    done
    fail "queue $1 did not empty"
}

# make_csv N FILE: a position,term,type dataset of N rows.
make_csv() {
    { echo "position,term,type"; seq 1 "$1" | awk '{printf "%d,단어%d,noun\n", $1, $1}'; } >"$2"
}
