#!/bin/bash
# The compose broker's command wrapper: starts the server given as arguments (rabbitmq-server),
# waits for it to boot, then sets the password of each user of deploy/rabbitmq/definitions.json
# from its secret file (the definitions, imported at every boot, carry no password). The password
# goes to rabbitmqctl on its standard input, never on a command line. A marker file tells the
# healthcheck that the users can log in. SIGTERM/SIGINT are passed on to the server.
#   rabbitmq-passwords rabbitmq-server
# Environment: FLASHCARD_SECRETS (/run/secrets: files amqp_<role>_password, role = producer,
# worker, operator; a missing file leaves that user without a password), FLASHCARD_READY_FILE
# (/tmp/flashcard-users-ready), RABBITMQCTL (rabbitmqctl).
set -uo pipefail
secrets=${FLASHCARD_SECRETS:-/run/secrets}
ready=${FLASHCARD_READY_FILE:-/tmp/flashcard-users-ready}
ctl=${RABBITMQCTL:-rabbitmqctl}
[ $# -gt 0 ] || { echo "usage: $0 rabbitmq-server [ARGS...]" >&2; exit 2; }

rm -f "$ready"
"$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT

# await_startup returns at once with an error while the node is not yet reachable: retry, bounded.
for _ in $(seq 1 120); do
    kill -0 "$server" 2>/dev/null || break
    $ctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
done
if kill -0 "$server" 2>/dev/null && $ctl -q await_startup >/dev/null 2>&1; then
    ok=1
    for role in producer worker operator; do
        f="$secrets/amqp_${role}_password"
        if [ ! -s "$f" ]; then
            echo "rabbitmq-passwords: no $f: flashcard-$role has no usable password" >&2
            continue
        fi
        # The definitions import runs in the background of the boot: the user may not exist yet.
        for _ in $(seq 1 30); do
            $ctl -q change_password "flashcard-$role" <"$f" >/dev/null 2>&1 && continue 2
            sleep 1
        done
        echo "rabbitmq-passwords: could not set the password of flashcard-$role" >&2
        ok=0
    done
    [ $ok = 1 ] && touch "$ready" && echo "rabbitmq-passwords: passwords set" >&2
else
    echo "rabbitmq-passwords: the server did not come up" >&2
fi

# wait returns early when a trapped signal arrives: wait again for the server's own exit status.
while :; do
    wait "$server"
    status=$?
    [ $status -gt 128 ] && kill -0 "$server" 2>/dev/null && continue
    exit $status
done
