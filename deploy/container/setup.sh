#!/usr/bin/env bash
# Prepares what compose.yaml needs beside the repository's files: the secret files (random
# passwords for the broker's three users and Redis, the URLs that carry them, the API key) in
# deploy/container/secrets/ and the output directory deploy/container/out/. Existing files are
# kept, so running it again changes nothing; remove secrets/ to make new passwords (then recreate
# the redis and rabbitmq containers).
#   bash deploy/container/setup.sh [API_KEY_FILE]
# Without API_KEY_FILE (and no secrets/api_key yet) a placeholder key is written: enough for the
# mock API, replace it for a real one. SETUP_DIR makes secrets/ and out/ elsewhere (tests).
set -euo pipefail
[ $# -eq 0 ] || key_file=$(realpath "$1")
cd "${SETUP_DIR:-$(dirname "$0")}"
umask 077
mkdir -p secrets out
chmod 0700 secrets
# The containers' users (flashcard 10001, rabbitmq 999, redis 999) read the files through bind
# mounts that keep the host's owner and mode: the files are readable, the directory is not.
chmod 1777 out

pw() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# put NAME CONTENT: writes secrets/NAME unless it exists.
put() { [ -s "secrets/$1" ] || { printf '%s\n' "$2" >"secrets/$1"; chmod 0644 "secrets/$1"; }; }
# secret NAME: the content of secrets/NAME.
secret() { head -n 1 "secrets/$1"; }

if [ -n "${key_file:-}" ]; then
    install -m 0644 "$key_file" secrets/api_key
elif [ ! -s secrets/api_key ]; then
    put api_key "placeholder-key-for-the-mock-api"
    echo "setup: wrote a placeholder API key to secrets/api_key (replace it for a real API)" >&2
fi
for role in producer worker operator; do put "amqp_${role}_password" "$(pw)"; done
put producer_amqp_url "amqp://flashcard-producer:$(secret amqp_producer_password)@rabbitmq:5672/%2f"
put worker_amqp_url "amqp://flashcard-worker:$(secret amqp_worker_password)@rabbitmq:5672/%2f"
put redis_password "$(pw)"
put redis_url "redis://flashcard:$(secret redis_password)@redis:6379/0"
# Redis: the default user may only PING (the healthcheck); the flashcard user may run the
# project's commands on its key prefix. The password is stored as its SHA-256.
put redis_users.acl "$(printf '%s\n' \
    "user default on nopass resetchannels -@all +ping" \
    "user flashcard on #$(printf '%s' "$(secret redis_password)" | sha256sum | cut -d' ' -f1) ~flashcard:* resetchannels -@all +evalsha +eval +time +get +set +mget +pttl +hset +hincrby +expire +hmget +setbit +hlen +hgetall +hvals +hdel +hsetnx +hexists +zadd +zrem +zrange +zremrangebyscore +multi +exec +select")"
echo "setup: secrets in $(pwd)/secrets, output in $(pwd)/out" >&2
