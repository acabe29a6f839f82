# RabbitMQ nodes of a test's own (sourced after lib.sh): one node, or a cluster of them, beside
# the machine's broker and never touching it. Everything lives under $TMP/rabbit: the nodes' data,
# logs and configuration, an Erlang cookie in a HOME of their own (the main broker's cookie in
# /var/lib/rabbitmq is not read), and an epmd of their own on a free port, so their node names
# cannot meet the main broker's. The nodes run as the test's user, in the foreground of a
# background job, so each has a PID. Sourcing this file sets the EXIT trap to rn_exit: it stops
# the nodes and the epmd by PID whatever happened, then runs lib.sh's cleanup with the test's exit
# status (a test that needs more in its trap calls rn_exit last).
#
#   rn_init                      the epmd and the cookie (once, before any node)
#   rn_start NAME [CONF...]      starts node NAME (short name, e.g. n1) with its own AMQP, dist and
#                                CLI ports; extra rabbitmq.conf lines may follow; does not wait
#   rn_await NAME [SECONDS]      waits until the node has booted
#   rn_cluster N                 starts n1..nN joined into one cluster and waits for all
#   rn_ctl NAME ARGS...          rabbitmqctl -n NODE ARGS (also rn_queues, rn_diag)
#   rn_port NAME                 the node's AMQP port;  rn_url NAME: its guest URL via localhost
#   rn_stop NAME                 graceful stop (rabbitmqctl stop), waits for the process to end
#   rn_kill NAME                 SIGKILL: the node is lost, its sockets reset by the kernel
#   rn_restart NAME              starts a stopped node again with its data (it rejoins its cluster)
#   rn_running_nodes NAME        the running members of NAME's cluster
#   rn_clients NAME              the connection names of the clients connected to NAME
#   rn_depths NAME               "queue messages" of every queue of $QUEUE_PREFIX, asked of NAME
#   rn_all_empty NAME            every queue of $QUEUE_PREFIX is empty (ready and unacked)
#   rn_members_online NAME K     every quorum queue of $QUEUE_PREFIX has K members online
#   rn_checks_on NAME            lib.sh's queue checks (assert_accounted...) ask NAME
#   rn_since T LINE, rn_first_after T FILE PATTERN   seconds from T to a client's log line
#   rn_stop_all                  every node and the epmd, by PID
#
# The CLI tools are called from /usr/lib/rabbitmq/bin, not the /usr/sbin wrappers, which switch
# to the rabbitmq user and its HOME (and so the main broker's cookie).

RN_BIN=${RN_BIN:-/usr/lib/rabbitmq/bin}
RN_DIR=$TMP/rabbit
RN_HOST=localhost
declare -A RN_PID=() RN_AMQP=() RN_DIST=()
RN_EPMD_PID=""
RN_EPMD_PORT=""
RN_CTL_MIN=""
RN_USED=" " # ports handed out to this test's nodes and CLI tools

# rn_free_range N: the first of N consecutive loopback ports that nobody listens on and this
# test has not handed out yet (nodes bind theirs only as they boot); marks them handed out and
# reserves them from the tests running beside it (ports.sh). Sets RN_PORT (no subshell, so that
# the marks stay).
rn_free_range() {
    local n=$1 base ok p
    for _ in $(seq 1 50); do
        base=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768-)
        ok=1
        for p in $(seq "$base" $((base + n - 1))); do
            case $RN_USED in *" $p "*) ok=0; break ;; esac
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=0; break; fi
            port_reserve "$p" || { ok=0; break; } # (a range given up keeps its reservations till exit)
        done
        if [ $ok = 1 ]; then
            for p in $(seq "$base" $((base + n - 1))); do RN_USED+="$p "; done
            RN_PORT=$base
            return 0
        fi
    done
    fail "no $n free consecutive ports"
}

rn_init() {
    [ -x "$RN_BIN/rabbitmq-server" ] || fail "RabbitMQ is not installed ($RN_BIN/rabbitmq-server)"
    mkdir -p "$RN_DIR/home"
    chmod 700 "$RN_DIR" "$RN_DIR/home"
    head -c 30 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$RN_DIR/home/.erlang.cookie"
    chmod 400 "$RN_DIR/home/.erlang.cookie"
    : >"$RN_DIR/rabbitmq-env.conf" # read instead of /etc/rabbitmq/rabbitmq-env.conf
    rn_free_range 1
    RN_EPMD_PORT=$RN_PORT
    rn_free_range 11
    RN_CTL_MIN=$RN_PORT
    epmd -port "$RN_EPMD_PORT" -address 127.0.0.1 >"$RN_DIR/epmd.log" 2>&1 &
    RN_EPMD_PID=$!
    rn_epmd_up() { (exec 3<>"/dev/tcp/127.0.0.1/$RN_EPMD_PORT") 2>/dev/null; }
    wait_until 10 rn_epmd_up || fail "epmd did not start on port $RN_EPMD_PORT"
}

# rn_env NAME: sets RN_ENV to the environment (NAME=value words) every RabbitMQ program of node
# NAME runs with.
rn_env() {
    local d=$RN_DIR/$1
    RN_ENV=(HOME="$RN_DIR/home" ERL_EPMD_PORT="$RN_EPMD_PORT"
        RABBITMQ_CONF_ENV_FILE="$RN_DIR/rabbitmq-env.conf"
        RABBITMQ_CTL_DIST_PORT_MIN="$RN_CTL_MIN" RABBITMQ_CTL_DIST_PORT_MAX=$((RN_CTL_MIN + 10))
        RABBITMQ_CTL_ERL_ARGS="-start_epmd false"
        RABBITMQ_NODENAME="$1@$RN_HOST" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="${RN_AMQP[$1]}" RABBITMQ_DIST_PORT="${RN_DIST[$1]}"
        RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_LOGS="$d/log/node.log"
        RABBITMQ_PID_FILE="$d/node.pid" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand"
        ERL_CRASH_DUMP="$d/cli_crash.dump")
}

# rn_run NAME PROGRAM ARGS...: runs a RabbitMQ CLI program in node NAME's environment.
rn_run() {
    local name=$1 prog=$2
    shift 2
    rn_env "$name"
    env "${RN_ENV[@]}" "$RN_BIN/$prog" "$@"
}
rn_ctl() { local n=$1; shift; rn_run "$n" rabbitmqctl -q -n "$n@$RN_HOST" "$@"; }
rn_queues() { local n=$1; shift; rn_run "$n" rabbitmq-queues -q -n "$n@$RN_HOST" "$@"; }
rn_diag() { local n=$1; shift; rn_run "$n" rabbitmq-diagnostics -q -n "$n@$RN_HOST" "$@"; }

rn_port() { echo "${RN_AMQP[$1]}"; }
rn_url() { echo "amqp://guest:guest@$RN_HOST:${RN_AMQP[$1]}/%2f"; }

# rn_start NAME [CONF_LINE...]: creates node NAME (ports, directories, rabbitmq.conf with the extra
# lines) and starts it; rn_await waits for the boot.
rn_start() {
    local name=$1 d=$RN_DIR/$1
    shift
    [ -n "$RN_EPMD_PORT" ] || rn_init
    mkdir -p "$d/mnesia" "$d/log"
    rn_free_range 1
    RN_AMQP[$name]=$RN_PORT
    rn_free_range 1
    RN_DIST[$name]=$RN_PORT
    {
        echo "loopback_users.guest = true"
        echo "log.file.level = info"
        echo "log.console = false"
        for line in "$@"; do echo "$line"; done
    } >"$d/rabbitmq.conf"
    echo "[]." >"$d/enabled_plugins"
    rn_restart "$name"
}

# rn_restart NAME: starts node NAME with the ports and data it had. RABBITMQ_ALLOW_INPUT makes
# the start script exec the VM instead of running it as a child, so $! is the node's own PID
# (-noinput comes back through the start arguments, stdin is /dev/null). -start_epmd false: a
# node never starts an epmd of its own (on the main broker's port, or after rn_stop_all).
rn_restart() {
    local name=$1 d=$RN_DIR/$1
    rn_env "$name"
    env "${RN_ENV[@]}" ERL_CRASH_DUMP="$d/erl_crash.dump" RABBITMQ_ALLOW_INPUT=true RABBITMQ_SERVER_START_ARGS="-noinput" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}" \
        "$RN_BIN/rabbitmq-server" </dev/null >>"$d/console.log" 2>&1 &
    RN_PID[$name]=$!
}

# rn_await NAME [SECONDS]: waits (default 90 s) until node NAME has booted and runs rabbit.
rn_await() {
    local name=$1 limit=${2:-90}
    rn_booted() {
        kill -0 "${RN_PID[$name]}" 2>/dev/null || fail "node $name exited during boot (see $RN_DIR/$name)"
        rn_ctl "$name" await_startup --timeout 5 >/dev/null 2>&1
    }
    wait_until "$limit" rn_booted || fail "node $name did not boot in $limit s"
}

# rn_cluster N: nodes n1..nN in one cluster. n1 boots first; the others find it through the
# classic peer discovery list and join it as they boot (in parallel), then the membership is
# checked from n1.
rn_cluster() {
    local n=$1 i disc=()
    for i in $(seq 1 "$n"); do disc+=("cluster_formation.classic_config.nodes.$i = n$i@$RN_HOST"); done
    rn_start n1 "cluster_formation.peer_discovery_backend = classic_config" "${disc[@]}"
    rn_await n1
    for i in $(seq 2 "$n"); do
        rn_start "n$i" "cluster_formation.peer_discovery_backend = classic_config" "${disc[@]}"
    done
    for i in $(seq 2 "$n"); do rn_await "n$i"; done
    rn_all_joined() { [ "$(rn_running_nodes n1 | wc -l)" = "$n" ]; }
    wait_until 60 rn_all_joined || fail "the cluster did not form: $(rn_running_nodes n1 | tr '\n' ' ')"
}

# rn_running_nodes NAME: the running members of NAME's cluster, one per line.
rn_running_nodes() {
    rn_ctl "$1" cluster_status --formatter json 2>/dev/null | jq -r '.running_nodes[]' 2>/dev/null
}

# rn_stop NAME: a graceful stop, as for an upgrade; waits for the process to exit.
rn_stop() {
    local name=$1 pid=${RN_PID[$1]}
    rn_ctl "$name" stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    rn_gone() { ! kill -0 "$pid" 2>/dev/null; }
    wait_until 60 rn_gone || fail "node $name did not stop in 60 s"
    wait "$pid" 2>/dev/null || true
    RN_PID[$name]="" # gone: its PID may be reused, never signal it again
}

# rn_kill NAME: the node dies at once (SIGKILL): no goodbye to clients or peers.
rn_kill() {
    local pid=${RN_PID[$1]}
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    RN_PID[$1]=""
}

# rn_depths NAME: "name messages" for every queue of $QUEUE_PREFIX, as node NAME sees them.
# Returns 1 (printing nothing) if the node does not answer.
rn_depths() {
    local out
    out=$(rn_ctl "$1" list_queues --no-table-headers name messages 2>/dev/null) || return 1
    awk -v p="$QUEUE_PREFIX." 'index($1, p) == 1 { print $1, $2 }' <<<"$out"
}

# rn_stop_all: stops every node (SIGTERM, then SIGKILL after 20 s) and the epmd, by PID.
rn_stop_all() {
    local name pid
    for name in "${!RN_PID[@]}"; do
        pid=${RN_PID[$name]}
        if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for name in "${!RN_PID[@]}"; do
        pid=${RN_PID[$name]}
        [ -n "$pid" ] || continue
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$RN_EPMD_PID" ]; then
        kill "$RN_EPMD_PID" 2>/dev/null || true
        wait "$RN_EPMD_PID" 2>/dev/null || true
    fi
    return 0
}

# rn_exit, the EXIT trap: the nodes and the epmd go first, then lib.sh's cleanup runs with the
# test's exit status (a failing command in a trap would end it under set -e, so errexit is off).
rn_exit() {
    local rc=$?
    set +e
    rn_stop_all
    (exit $rc)
    cleanup
}
trap rn_exit EXIT

# rn_clients NAME: the client-given names (connection_name) of the connections made to node NAME,
# one per line: "flashcard-producer JOB" for a producer, "HOST:PID" for a worker. (list_connections
# lists the whole cluster's; a connection's name ends with the port of the node it was made to.)
rn_clients() {
    rn_ctl "$1" list_connections --formatter json name client_properties 2>/dev/null |
        jq -r --arg port ":${RN_AMQP[$1]}" '.[] | select(.name | endswith($port)) |
            .client_properties[] | select(.[0] == "connection_name") | .[2]'
}

# rn_checks_on NAME: lib.sh's queue_depth, job_queues_depth and dead_positions (and so assert_accounted and
# assert_all_succeeded) ask node NAME of this test's cluster instead of the machine's broker. The
# nodes run no management plugin (it costs boot time), so dead letters are counted, not read:
# dead_positions fails the test if the dead-letter queue holds anything.
rn_checks_on() {
    RN_CHECK_NODE=$1
    queue_depth() {
        local out n
        out=$(rn_depths "$RN_CHECK_NODE") || return 1
        n=$(awk -v q="$QUEUE_PREFIX.$1" '$1 == q { print $2 }' <<<"$out")
        echo "${n:-absent}"
    }
    job_queues_depth() {
        local out
        out=$(rn_depths "$RN_CHECK_NODE") || return 1
        awk -v p="$QUEUE_PREFIX.job." 'index($1, p) == 1 { n += $2 } END { print n + 0 }' <<<"$out"
    }
    dead_positions() {
        local n
        n=$(queue_depth dead) || fail "node $RN_CHECK_NODE did not answer"
        [ "$n" = 0 ] || [ "$n" = absent ] || fail "$n messages in the dead-letter queue"
    }
}

# rn_all_empty NAME: every queue of $QUEUE_PREFIX exists empty on NAME's cluster (ready and
# unacked); false if there is none or NAME does not answer. Quorum queues' counts lag a few
# seconds: poll it with wait_until.
rn_all_empty() {
    local out
    out=$(rn_depths "$1") || return 1
    [ -n "$out" ] && awk '$2 != 0 { bad = 1 } END { exit bad }' <<<"$out"
}

# rn_since T LOGLINE: seconds (to 0.01) from T (date +%s.%N) to a flashcard log line's timestamp.
rn_since() {
    awk -v a="$(date -d "$(cut -d' ' -f1 <<<"$2")" +%s.%N)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'
}

# rn_first_after T FILE PATTERN: seconds from T to the first line of the flashcard log FILE that
# matches PATTERN (grep -E) and was written at or after T; prints nothing if there is none.
rn_first_after() {
    local line d
    while IFS= read -r line; do
        d=$(rn_since "$1" "$line")
        case $d in -*) continue ;; esac
        echo "$d"
        return 0
    done < <(grep -E "$3" "$2" || true)
}

# rn_members_online NAME K: every quorum queue of $QUEUE_PREFIX has K members online, as NAME
# sees it (the queues and their online members are left in $TMP/online).
rn_members_online() {
    rn_ctl "$1" list_queues --no-table-headers name type online 2>/dev/null |
        awk -v p="$QUEUE_PREFIX." 'index($1, p) == 1 && $2 == "quorum"' >"$TMP/online" || return 1
    [ -s "$TMP/online" ] && awk -v k="$2" '{ n = gsub(/@/, "@") } n != k { bad = 1 } END { exit bad }' "$TMP/online"
}

# rn_fleet_job JOB TIMEOUT: on a cluster of 3 (rn_cluster 3), the clients of a job: the mock API
# (100 ms a call), worker A (AMQP_URL n1,n2,n3) checked on n1, worker B (n2,n3,n1) checked on n2,
# 4 calls in flight each and 20 calls/s for the fleet (so the job's length does not depend on the
# machine), and the producer (n1,n2,n3) publishing $TMP/items.csv as job JOB and waiting up to
# TIMEOUT for it. Sets U1..U3, WA, WB, PROD and OUTCOME; done_items prints the items done so far.
rn_fleet_job() {
    JOB=$1
    U1=$(rn_url n1) U2=$(rn_url n2) U3=$(rn_url n3)
    start_mock --latency-ms 100
    export API_KEY=sk-$JOB WORKER_COUNT=4 RATE_LIMIT=1200 BATCH_SIZE=10
    OUTCOME="$QUEUE_PREFIX:job:{$JOB}:outcome"
    AMQP_URL="$U1,$U2,$U3" start_worker a
    WA=$LAST_PID
    AMQP_URL="$U2,$U3,$U1" start_worker b
    WB=$LAST_PID
    wait_until 30 grep -q "consuming .* on localhost:$(rn_port n1) " "$TMP/worker-a.log" || fail "worker A is not on n1"
    wait_until 30 grep -q "consuming .* on localhost:$(rn_port n2) " "$TMP/worker-b.log" || fail "worker B is not on n2"
    AMQP_URL="$U1,$U2,$U3" "$PRODUCER" "$TMP/items.csv" --job-id "$JOB" --wait --timeout "$2" \
        --output "$TMP/out.tsv" --report "$TMP/report.json" >"$TMP/producer.log" 2>&1 &
    PROD=$!
    PIDS+=("$PROD")
}
done_items() { redis-cli hlen "$OUTCOME"; }

# rn_job_done NODE LIMIT WHY: the job of rn_fleet_job ends within LIMIT seconds with the producer's
# exit 0, every item once in the output and none dead-lettered (else WHY), every queue of the
# prefix empty as NODE sees it, and both workers still running.
rn_job_done() {
    producer_gone() { ! kill -0 "$PROD" 2>/dev/null; }
    wait_until "$2" producer_gone || fail "the producer did not finish: $(done_items) of $N items done"
    local prc=0
    wait "$PROD" || prc=$?
    [ $prc = 0 ] || fail "producer exit $prc: $(tail -3 "$TMP/producer.log")"
    assert_all_succeeded "$N" "$TMP/out.tsv" "$3"
    wait_until 30 rn_all_empty "$1" || fail "queues not empty: $(rn_depths "$1" | awk '$2 != 0' | tr '\n' ';')"
    kill -0 "$WA" && kill -0 "$WB" || fail "a worker exited"
}
