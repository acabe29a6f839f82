#!/usr/bin/env bash
# The container image, built and run on this machine: deploy/container/Dockerfile is built with
# podman (deploy/container/image.sh: a debootstrapped bookworm base, cached under /var/tmp; no
# daemon, no registry), checked (non-root numeric user, both binaries, the prompts, ENTRYPOINT
# flashcard-worker, no secret in its configuration or history), then two workers and the producer
# (--wait) run from it with buildah against the machine's RabbitMQ and Redis and the mock API, their
# secrets given only as mounted files (API_KEY_FILE, AMQP_URL_FILE, REDIS_URL_FILE): every item is
# in the output once, nothing is left in a queue, the key appears in no log, output or command line,
# and the workers stop cleanly (exit 0) on SIGTERM. Phase 2 runs compose's broker and Redis set-up
# (setup.sh, rabbitmq.conf with the definitions, rabbitmq-passwords.sh, the Redis ACL file) on a
# RabbitMQ node and a redis-server of the test's own, and a job from the image as the least-privilege
# users flashcard-worker and flashcard-producer.
# SKIP only if podman, buildah or debootstrap cannot be installed. Run time (2 cores): about 50 s
# with a cached base and unchanged sources, 70 s when the sources changed, 2 minutes from scratch.
# SKIP too in a sanitized build (FC_SANITIZE or FC_FUZZ set in $BUILD/CMakeCache.txt): the image
# compiles its own binaries, so that suite would only build the same image again, in the same
# store and under the same tag as the plain suite running beside it.
. "$(dirname "$0")/lib.sh"

sanitized=$(sed -nE 's/^FC_(SANITIZE|FUZZ):[A-Z]+=(.*)$/\2/p' "$BUILD/CMakeCache.txt" 2>/dev/null |
    grep -viE '^(off|0|false|no|n|ignore|notfound|)$|-notfound$' | head -1 || true)
if [ -n "$sanitized" ]; then
    echo "SKIP: $BUILD is a sanitized build (the image builds its own binaries: the plain suite tests it)"
    exit 0
fi
. "$SRC/deploy/container/image.sh"

export FC_IMAGE_STORE=${FC_IMAGE_STORE:-$FC_IMAGE_CACHE/store}
IMAGE=localhost/flashcard:it
N=50
STORE_MAX_MB=6000 # each build with changed sources adds about 750 MB to the vfs store
LAUNCHERS=()      # PIDs of background `buildah run`s
CTR=""            # the working container every process runs in

# descendants PID: every process under PID, deepest first.
descendants() {
    local p
    for p in $(pgrep -P "$1"); do descendants "$p"; echo "$p"; done
}

img_cleanup() {
    local rc=$? p
    set +e
    for p in "${LAUNCHERS[@]}"; do kill -9 $(descendants "$p") "$p" 2>/dev/null; done
    [ ${#LAUNCHERS[@]} = 0 ] || wait "${LAUNCHERS[@]}" 2>/dev/null
    [ -n "$CTR" ] && fc_buildah rm "$CTR" >/dev/null 2>&1
    (exit $rc)
    cleanup
}
trap img_cleanup EXIT

if ! fc_image_tools; then
    echo "SKIP: podman, buildah and debootstrap are not installed and cannot be installed here"
    exit 0
fi

# One run at a time on this machine: the store (which a run may start afresh), the tag and the
# base cache are shared by every copy of this test (another suite's, another checkout's). The lock
# is held by an open descriptor until the test's process exits, whatever happened.
IT_LOCK="$FC_IMAGE_CACHE/it.lock" # not image.sh's "lock", which fc_image_build takes inside
$FC_IMAGE_SUDO mkdir -p "$FC_IMAGE_CACHE" && exec 8>>"$IT_LOCK" || fail "cannot open $IT_LOCK"
t0=$SECONDS
flock -w 420 8 || fail "another run of this test held $IT_LOCK for 420 s"
[ $((SECONDS - t0)) -lt 2 ] || log "waited $((SECONDS - t0)) s for another run of this test"

# --- Build (the base tarball and the layers stay cached between runs; the store is bounded).
if [ -d "$FC_IMAGE_STORE" ] && [ "$(du -sm "$FC_IMAGE_STORE" | cut -f1)" -gt $STORE_MAX_MB ]; then
    log "image store over $STORE_MAX_MB MB: starting it afresh"
    fc_buildah rm --all >/dev/null 2>&1 || true
    $FC_IMAGE_SUDO rm -rf "$FC_IMAGE_STORE"
fi
t0=$SECONDS
fc_image_build "$IMAGE" >"$TMP/build.log" 2>&1 || fail "the image did not build"
log "image built in $((SECONDS - t0)) s"

# --- What the image is.
cfg=$(fc_podman image inspect --format '{{json .Config}}' "$IMAGE") || fail "cannot inspect $IMAGE"
[ "$(jq -c .Entrypoint <<<"$cfg")" = '["flashcard-worker"]' ] || fail "entrypoint: $(jq -c .Entrypoint <<<"$cfg")"
[[ "$(jq -r .User <<<"$cfg")" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "user is not a numeric non-root one: $(jq .User <<<"$cfg")"
[ "$(jq -r .StopSignal <<<"$cfg")" = SIGTERM ] || fail "stop signal: $(jq .StopSignal <<<"$cfg")"
# No secret in the configuration or in any layer's command: no key, password or URL setting.
jq -r '.Env[]' <<<"$cfg" | cut -d= -f1 >"$TMP/image-env"
! grep -qE 'KEY|PASS|SECRET|TOKEN|_URL$' "$TMP/image-env" || fail "the image sets $(grep -E 'KEY|PASS|SECRET|TOKEN|_URL$' "$TMP/image-env")"
fc_podman image history --no-trunc --format '{{.CreatedBy}}' "$IMAGE" >"$TMP/image-history" || fail "no history"
! grep -qiE 'API_KEY=|AMQP_URL=|REDIS_URL=|://[^/ ]*:[^/ ]*@' "$TMP/image-history" || fail "a layer's command holds a secret"

CTR=$(fc_buildah from --pull-never --name "fc-it-$$" "$IMAGE") || fail "buildah from $IMAGE failed"
mkdir -p "$TMP/run/secrets" "$TMP/run/data" "$TMP/run/out"
chmod 0755 "$TMP/run" "$TMP/run/secrets" "$TMP/run/data"
chmod 0777 "$TMP/run/out" # the image's user writes there

# in_image ARGS...: runs ARGS (a command and, before it, -e/-v options) in the working container,
# with the secrets of $TMP/run/secrets: api_key, $IMG_AMQP (an AMQP URL) and redis_url.
IMG_AMQP=amqp_url
IMG_PREFIX=$QUEUE_PREFIX
in_image() {
    local opts=()
    while [ $# -gt 0 ] && [[ $1 == -* ]]; do opts+=("$1" "$2"); shift 2; done
    fc_buildah run --isolation chroot --network host \
        -v "$TMP/run/secrets:/run/secrets/flashcard:ro" -v "$TMP/run/data:/data:ro" -v "$TMP/run/out:/out" \
        -e API_KEY_FILE=/run/secrets/flashcard/api_key -e AMQP_URL_FILE="/run/secrets/flashcard/$IMG_AMQP" \
        -e REDIS_URL_FILE=/run/secrets/flashcard/redis_url -e QUEUE_PREFIX="$IMG_PREFIX" \
        -e API_BASE_URL="${API_BASE_URL:-http://127.0.0.1:1/v1}" "${opts[@]}" "$CTR" -- "$@"
}

[ "$(in_image id -u)" != 0 ] || fail "the image runs as root"
in_image flashcard-worker --version >"$TMP/versions" && in_image flashcard-producer --version >>"$TMP/versions" ||
    fail "a binary does not run in the image: $(cat "$TMP/versions")"
in_image sh -c 'test -s /usr/local/share/flashcard/prompts/stage1_system.txt &&
                test -s /usr/local/share/flashcard/prompts/stage2_system.txt' || fail "the prompts are not in the image"
log "image: $(jq -r .User <<<"$cfg"), $(tr '\n' ' ' <"$TMP/versions")"

# --- A job, run from the image. Secrets only in files, mounted read-only.
KEY="sk-it-image-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$KEY" >"$TMP/run/secrets/api_key"
printf '%s\n' "$AMQP_URL" >"$TMP/run/secrets/amqp_url"
printf '%s\n' "$REDIS_URL" >"$TMP/run/secrets/redis_url"
chmod 0644 "$TMP/run/secrets"/*
make_csv $N "$TMP/run/data/items.csv"
start_mock --latency-ms 20
mock_control "{\"api_key\":\"$KEY\"}" # calls without the key from the file get 401

WENV=(-e WORKER_COUNT=4 -e BATCH_SIZE=5 -e RATE_LIMIT=0 -e SHUTDOWN_TIMEOUT=10s -e METRICS_BIND=127.0.0.1)
declare -A MPORT=() WPID=() WLAUNCHER=()
for i in 1 2; do
    MPORT[$i]=$(free_port) || fail "no free port"
    in_image "${WENV[@]}" -e METRICS_PORT="${MPORT[$i]}" flashcard-worker >"$TMP/worker-$i.log" 2>&1 &
    LAUNCHERS+=("$!")
    WLAUNCHER[$i]=$!
done
ready() { curl -fsS "http://127.0.0.1:${MPORT[$1]}/readyz" >/dev/null 2>&1; }
for i in 1 2; do wait_until 60 ready "$i" || fail "worker $i from the image is not ready"; done
# The workers log JSON (the image's LOG_FORMAT) with their PID, which is the host's (no PID namespace).
for i in 1 2; do
    WPID[$i]=$(jq -Rr 'fromjson? | select(.program == "flashcard-worker") | .pid' "$TMP/worker-$i.log" | head -1)
    [ -n "${WPID[$i]}" ] && [ "$(cat "/proc/${WPID[$i]}/comm" 2>/dev/null)" = flashcard-worke ] ||
        fail "worker $i: no JSON log line with its PID"
done

t1=$SECONDS
in_image -e BATCH_SIZE=5 flashcard-producer /data/items.csv --job-id "image-$$" --wait --timeout 150s \
    --output /out/cards.tsv --report /out/report.json >"$TMP/producer.log" 2>&1 &
PROD=$!
LAUNCHERS+=("$PROD")
gone() { ! kill -0 "$1" 2>/dev/null; }
wait_until 180 gone "$PROD" || fail "the producer did not finish"
rc=0
wait "$PROD" || rc=$?
[ $rc = 0 ] || fail "producer from the image exited $rc"
log "job of $N items done in $((SECONDS - t1)) s"

assert_all_succeeded $N "$TMP/run/out/cards.tsv" "items were dead-lettered"
[ "$(jq .items_succeeded "$TMP/run/out/report.json")" = $N ] || fail "report: items_succeeded"
[ "$(cut -d' ' -f5 "$TMP/mock-requests.log" | sort -u | wc -l)" = 2 ] || fail "not both workers made calls"
awk '$2 == 401 {bad = 1} END {exit bad}' "$TMP/mock-requests.log" || fail "calls went without the key from API_KEY_FILE"

# --- Secrets: in no log or output, not on a command line or in an environment.
! grep -rqF "$KEY" "$TMP"/*.log "$TMP/run/out" || fail "the API key appears in a log or output"
for i in 1 2; do
    for f in cmdline environ; do
        ! tr '\0' '\n' <"/proc/${WPID[$i]}/$f" | grep -qF -e "$KEY" -e "$AMQP_URL" -e "$REDIS_URL" ||
            fail "worker $i: a secret is in /proc/PID/$f"
    done
done

# --- SIGTERM (the image's STOPSIGNAL): each worker drains and exits 0.
for i in 1 2; do kill -TERM "${WPID[$i]}"; done
for i in 1 2; do
    wait_until 30 gone "${WLAUNCHER[$i]}" || fail "worker $i did not stop on SIGTERM"
    rc=0
    wait "${WLAUNCHER[$i]}" || rc=$?
    [ $rc = 0 ] || fail "worker $i exited $rc after SIGTERM"
done
log "phase 1 done: the image against the machine's broker and Redis"

# --- Phase 2: compose's broker and Redis set-up, on a RabbitMQ node and a redis-server of this
# test's own (compose itself needs a container engine): setup.sh's secrets; rabbitmq.conf loading
# deploy/rabbitmq/definitions.json; rabbitmq-passwords.sh starting the node and setting the users'
# passwords; Redis with setup.sh's ACL file. A worker and the producer from the image then run a job
# as flashcard-worker and flashcard-producer (the node has no other user), with URL files made by
# setup.sh (only compose's host names replaced by this node's and this Redis's addresses).
RB=/usr/lib/rabbitmq/bin
[ -x "$RB/rabbitmq-server" ] || fail "RabbitMQ is not installed ($RB)"
C=$TMP/compose
mkdir -p "$C/node/home" "$C/redis"
chmod 0700 "$C/node/home"
SETUP_DIR=$C bash "$SRC/deploy/container/setup.sh" "$TMP/run/secrets/api_key" 2>"$TMP/setup.out" ||
    fail "setup.sh: $(cat "$TMP/setup.out")"
# free_range N: the first of N consecutive free loopback ports (the CLI tools' distribution ports).
free_range() {
    local base p ok
    for _ in $(seq 1 50); do
        base=$((20000 + RANDOM % 12700)) ok=1 # below the ephemeral ports (32768-), as free_port
        for p in $(seq "$base" $((base + $1 - 1))); do
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { ok=0; break; }
            port_reserve "$p" || { ok=0; break; }
        done
        [ $ok = 1 ] && { echo "$base"; return 0; }
    done
    return 1
}
# Four single ports and a range of 11, none the same (free_port picks at random).
for _ in $(seq 1 20); do
    APORT=$(free_port) && DPORT=$(free_port) && EPORT=$(free_port) && RPORT=$(free_port) && CPORT=$(free_range 11) ||
        fail "no free ports"
    [ "$(printf '%s\n' $APORT $DPORT $EPORT $RPORT $(seq "$CPORT" $((CPORT + 10))) | sort -u | wc -l)" = 15 ] && break
done
head -c 30 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$C/node/home/.erlang.cookie"
chmod 0400 "$C/node/home/.erlang.cookie"
: >"$C/node/env.conf"
{
    sed "s#/etc/rabbitmq/definitions.json#$SRC/deploy/rabbitmq/definitions.json#" "$SRC/deploy/container/rabbitmq.conf"
    echo "listeners.tcp.default = 127.0.0.1:$APORT"
} >"$C/node/rabbitmq.conf"
NODE_ENV=(HOME="$C/node/home" ERL_EPMD_PORT="$EPORT" RABBITMQ_CONF_ENV_FILE="$C/node/env.conf"
    RABBITMQ_CTL_DIST_PORT_MIN="$CPORT" RABBITMQ_CTL_DIST_PORT_MAX=$((CPORT + 10))
    RABBITMQ_CTL_ERL_ARGS="-start_epmd false" RABBITMQ_NODENAME="fcimage$$@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$APORT" RABBITMQ_DIST_PORT="$DPORT"
    RABBITMQ_MNESIA_BASE="$C/node/mnesia" RABBITMQ_LOG_BASE="$C/node/log" RABBITMQ_LOGS="$C/node/log/node.log"
    RABBITMQ_PID_FILE="$C/node/node.pid" RABBITMQ_CONFIG_FILE="$C/node/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$C/node/advanced.config" RABBITMQ_ENABLED_PLUGINS_FILE="$C/node/plugins"
    RABBITMQ_PLUGINS_EXPAND_DIR="$C/node/plugins-expand")
echo '[].' >"$C/node/plugins"
node_ctl() { env "${NODE_ENV[@]}" "$RB/rabbitmqctl" -q "$@"; }
epmd -port "$EPORT" -address 127.0.0.1 >"$C/epmd.out" 2>&1 &
PIDS+=("$!")
env "${NODE_ENV[@]}" FLASHCARD_SECRETS="$C/secrets" FLASHCARD_READY_FILE="$C/users-ready" RABBITMQCTL="$RB/rabbitmqctl" \
    bash "$SRC/deploy/container/rabbitmq-passwords.sh" "$RB/rabbitmq-server" >"$TMP/broker.log" 2>&1 &
BROKER=$!
LAUNCHERS+=("$BROKER")
redis-server --port "$RPORT" --bind 127.0.0.1 --aclfile "$C/secrets/redis_users.acl" --save '' --appendonly no \
    --dir "$C/redis" --logfile "$TMP/redis-server.log" &
PIDS+=("$!")
t2=$SECONDS
wait_until 120 test -f "$C/users-ready" || fail "the compose broker set-up did not finish (no users-ready marker)"
log "compose broker up with its users' passwords in $((SECONDS - t2)) s"
redis_up() { redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG; }
wait_until 10 redis_up || fail "redis-server with setup.sh's ACL file did not start"
! node_ctl list_users | grep -qw guest || fail "the node has a guest user: the definitions were not loaded at boot"

sed "s#@rabbitmq:5672/#@127.0.0.1:$APORT/#" "$C/secrets/worker_amqp_url" >"$TMP/run/secrets/amqp_url"
sed "s#@rabbitmq:5672/#@127.0.0.1:$APORT/#" "$C/secrets/producer_amqp_url" >"$TMP/run/secrets/producer_amqp_url"
sed "s#@redis:6379/#@127.0.0.1:$RPORT/#" "$C/secrets/redis_url" >"$TMP/run/secrets/redis_url"
chmod 0644 "$TMP/run/secrets"/*
cmp -s "$TMP/run/secrets/amqp_url" "$C/secrets/worker_amqp_url" && fail "the worker's URL names no rabbitmq host"
N2=20
make_csv $N2 "$TMP/run/data/items2.csv"
IMG_PREFIX=flashcard # the definitions' prefix
MPORT[3]=$(free_port) || fail "no free port"
in_image "${WENV[@]}" -e METRICS_PORT="${MPORT[3]}" flashcard-worker >"$TMP/worker-3.log" 2>&1 &
W3=$!
LAUNCHERS+=("$W3")
wait_until 60 ready 3 || fail "the worker is not ready against the compose broker"
node_ctl list_connections user | grep -qx flashcard-worker || fail "the worker is not connected as flashcard-worker"
IMG_AMQP=producer_amqp_url
in_image -e BATCH_SIZE=5 flashcard-producer /data/items2.csv --job-id "image2-$$" --wait --timeout 120s \
    --output /out/cards2.tsv --report /out/report2.json >"$TMP/producer2.log" 2>&1 &
PROD=$!
LAUNCHERS+=("$PROD")
wait_until 150 gone "$PROD" || fail "the producer did not finish against the compose broker"
rc=0
wait "$PROD" || rc=$?
[ $rc = 0 ] || fail "producer (flashcard-producer user) exited $rc"
tsv_positions "$TMP/run/out/cards2.tsv" >"$TMP/results2.pos"
seq 1 $N2 | diff -q - "$TMP/results2.pos" >/dev/null || fail "not every item once in the output of the compose job"
[ "$(tail -n +2 "$TMP/run/out/cards2.tsv" | wc -l)" = $((2 * N2)) ] || fail "duplicate or missing cards (compose job)"
# Nothing left: the definitions' queues are all empty and the job's results queue is gone.
want_q=$(jq '.queues | length' "$SRC/deploy/rabbitmq/definitions.json")
node_empty() {
    local q
    q=$(node_ctl list_queues --no-table-headers name messages) || return 1
    [ "$(wc -l <<<"$q")" = "$want_q" ] && awk '$2 != 0 {bad = 1} END {exit bad}' <<<"$q"
}
wait_until 20 node_empty || fail "queues of the compose broker not empty: $(node_ctl list_queues name messages | tr '\n' ' ')"
! grep -qi 'noperm\|access_refused\|access refused' "$TMP/worker-3.log" "$TMP/producer2.log" ||
    fail "a permission was refused to the worker or the producer"
! grep -rqF -f <(cat "$C/secrets"/*_password) "$TMP"/*.log "$TMP/run/out" || fail "a password appears in a log or output"
kill -TERM "$(jq -Rr 'fromjson? | select(.program == "flashcard-worker") | .pid' "$TMP/worker-3.log" | head -1)"
wait_until 30 gone "$W3" || fail "worker 3 did not stop on SIGTERM"
rc=0
wait "$W3" || rc=$?
[ $rc = 0 ] || fail "worker 3 exited $rc after SIGTERM"
kill -TERM "$BROKER"
wait_until 60 gone "$BROKER" || fail "the compose broker did not stop on SIGTERM"
log "ok"
