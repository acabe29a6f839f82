#!/usr/bin/env bash
# Local infrastructure for development, demos and CI: RabbitMQ (with the management UI) and
# Redis from Debian's packages, on loopback. Idempotent: safe to run when they already run.
#   deploy/local/services.sh up|down|status
set -euo pipefail

PACKAGES=(rabbitmq-server redis-server librabbitmq-dev libhiredis-dev libcurl4-openssl-dev libjson-c-dev
          libcmocka-dev libmicrohttpd-dev cmake pkg-config gcc make curl jq yamllint socat iproute2 openssl
          docker-compose podman buildah debootstrap python3-yaml systemd prometheus clang valgrind)
REDIS_PORT=${FC_REDIS_PORT:-6379}
REDIS_DIR=${FC_REDIS_DIR:-/var/tmp/flashcard-redis}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "services: $*" >&2; }

install_missing() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    $SUDO apt-get update -q >/dev/null
    # Debian's maintainer scripts must not start services: this script starts them itself.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
}

redis_up() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
rabbit_up() { $SUDO rabbitmqctl -q status >/dev/null 2>&1; }

start_redis() {
    if redis_up; then log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
    mkdir -p "$REDIS_DIR"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$REDIS_DIR" \
        --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save "" --appendonly no
    for _ in $(seq 1 50); do redis_up && { log "redis up on 127.0.0.1:$REDIS_PORT"; return 0; }; sleep 0.1; done
    log "redis did not start; see $REDIS_DIR/redis.log"; return 1
}

# write_rabbitmq_config: loopback only, management UI on 127.0.0.1:15672. Written before the
# package is installed too, so a server its maintainer scripts may start uses it.
write_rabbitmq_config() {
    [ -f /etc/rabbitmq/enabled_plugins ] && grep -q rabbitmq_management /etc/rabbitmq/enabled_plugins && return 0
    $SUDO mkdir -p /etc/rabbitmq
    printf 'listeners.tcp.default = 127.0.0.1:5672\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = 15672\nloopback_users.guest = true\n' |
        $SUDO tee /etc/rabbitmq/rabbitmq.conf >/dev/null
    echo '[rabbitmq_management].' | $SUDO tee /etc/rabbitmq/enabled_plugins >/dev/null
}

start_rabbitmq() {
    write_rabbitmq_config
    if rabbit_up; then log "rabbitmq already running"; else
        $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    # The Erlang VM needs a few seconds before rabbitmqctl can reach it at all.
    for _ in $(seq 1 120); do $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
    rabbit_up || { log "rabbitmq did not start; see /var/log/rabbitmq/"; return 1; }
    mgmt_up() { curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; }
    mgmt_up || $SUDO rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do mgmt_up && break; sleep 0.3; done
    mgmt_up || { log "rabbitmq management API did not come up on 127.0.0.1:15672"; return 1; }
    log "rabbitmq up on 127.0.0.1:5672, management UI on http://127.0.0.1:15672 (guest/guest)"
}

case "${1:-up}" in
up)
    write_rabbitmq_config
    install_missing
    start_redis
    start_rabbitmq
    ;;
down)
    redis_up && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    rabbit_up && $SUDO rabbitmqctl -q stop >/dev/null 2>&1 || true
    log "stopped"
    ;;
status)
    redis_up && echo "redis: up (127.0.0.1:$REDIS_PORT)" || echo "redis: down"
    rabbit_up && echo "rabbitmq: up (127.0.0.1:5672, UI :15672)" || echo "rabbitmq: down"
    ;;
*)
    echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
