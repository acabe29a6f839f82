#!/usr/bin/env bash
# TLS to RabbitMQ: amqps:// with the peer's certificate and host name verified, and a client
# certificate. The test makes a CA, a server certificate for DNS:localhost only (so 127.0.0.1 is
# a wrong host name), a client certificate and a second, unrelated CA, and starts a node of its
# own (rabbit_nodes.sh) with only a TLS listener that asks for a client certificate
# (verify_peer, fail_if_no_peer_cert). A small job completes over amqps:// with the right CA and
# the client certificate (producer --wait, one worker); the producer and a worker are refused
# with the wrong CA, with the wrong host name and without the client certificate, each with an
# error that says so and shows no password.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbit_nodes.sh"

t_start=$SECONDS
PKI=$TMP/pki
mkdir -p "$PKI"
# ca NAME: a self-signed CA. cert NAME CA SUBJECT EXT: a key and a certificate signed by CA.
ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=flashcard test $1" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$PKI/$1.key" -out "$PKI/$1.pem" 2>>"$TMP/openssl.log" || fail "openssl: $1"
}
cert() {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$3" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" \
        2>>"$TMP/openssl.log" || fail "openssl: $1 request"
    printf '%s\n' "$4" >"$PKI/$1.ext"
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.pem" -CAkey "$PKI/$2.key" -CAcreateserial -days 2 \
        -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" 2>>"$TMP/openssl.log" || fail "openssl: $1 certificate"
}
ca ca
ca other-ca
cert server ca "flashcard test broker" "subjectAltName=DNS:localhost
extendedKeyUsage=serverAuth"
cert client ca "flashcard-worker" "extendedKeyUsage=clientAuth"

rn_init
rn_free_range 1
TLS_PORT=$RN_PORT
rn_start n1 "listeners.tcp = none" "listeners.ssl.default = 127.0.0.1:$TLS_PORT" \
    "ssl_options.cacertfile = $PKI/ca.pem" "ssl_options.certfile = $PKI/server.pem" \
    "ssl_options.keyfile = $PKI/server.key" "ssl_options.verify = verify_peer" \
    "ssl_options.fail_if_no_peer_cert = true"
rn_await n1
rn_checks_on n1
rn_diag n1 listeners >"$TMP/listeners.txt" 2>&1 || fail "cannot list the node's listeners"
grep -q "port: $TLS_PORT, protocol: amqp/ssl" "$TMP/listeners.txt" || fail "no TLS listener: $(cat "$TMP/listeners.txt")"
! grep -q "protocol: amqp," "$TMP/listeners.txt" || fail "a plain AMQP listener is open: $(cat "$TMP/listeners.txt")"
log "node up with only a TLS listener on $TLS_PORT ($((SECONDS - t_start)) s)"

# A user of its own with a password to look for in every message.
PW="tls-Secret-$$-$RANDOM"
rn_ctl n1 add_user fcuser "$PW" >/dev/null || fail "add_user"
rn_ctl n1 set_permissions -p / fcuser '.*' '.*' '.*' >/dev/null || fail "set_permissions"

GOOD_URL="amqps://fcuser:$PW@localhost:$TLS_PORT/%2f"
export AMQP_URL=$GOOD_URL AMQP_CA_FILE=$PKI/ca.pem AMQP_CERT_FILE=$PKI/client.pem AMQP_KEY_FILE=$PKI/client.key
export API_KEY=sk-tls WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=10

# The job over TLS.
N=60
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 20
start_worker good
WG=$LAST_PID
wait_until 30 grep -q "consuming .* on localhost:$TLS_PORT" "$TMP/worker-good.log" ||
    fail "the worker did not connect over TLS"
prc=0
timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "tls-$$" --wait --timeout 45s --output "$TMP/out.tsv" \
    >"$TMP/producer-good.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "producer over TLS: exit $prc"
assert_all_succeeded $N "$TMP/out.tsv" "dead letters over TLS"
kill -0 $WG || fail "the worker exited"
conns=$(rn_ctl n1 list_connections --no-table-headers ssl ssl_protocol peer_cert_subject 2>/dev/null)
grep -q "^true" <<<"$conns" || fail "the worker's connection is not TLS: $conns"
grep -q "flashcard-worker" <<<"$conns" || fail "the worker's connection shows no client certificate: $conns"
log "job of $N items over TLS done; the worker's connection: $(head -1 <<<"$conns" | tr '\t' ' ')"
kill -TERM $WG
wait $WG || fail "worker exit $? after SIGTERM"

# refused CASE EXPECT [VAR=VALUE...]: the producer and a worker, run with these settings changed,
# are refused: the producer exits 3, the worker keeps retrying; both say EXPECT (an extended
# regular expression) and neither shows the password. Started in the background; check_refused
# CASE checks them.
declare -A EXPECT=() RPID=() RWPID=()
refused() {
    local case=$1 expect=$2
    shift 2
    EXPECT[$case]=$expect
    env "$@" "$PRODUCER" "$TMP/items.csv" --job-id "tls-$case-$$" >"$TMP/producer-$case.log" 2>&1 &
    RPID[$case]=$!
    PIDS+=("${RPID[$case]}")
    env "$@" "$WORKER" >"$TMP/worker-$case.log" 2>&1 &
    RWPID[$case]=$!
    PIDS+=("${RWPID[$case]}")
}
check_refused() {
    local case=$1 prc=0
    wait "${RPID[$case]}" || prc=$?
    [ $prc = 3 ] || fail "$case: producer exit $prc, expected 3 (refused)"
    grep -Eq "${EXPECT[$case]}" "$TMP/producer-$case.log" ||
        fail "$case: the producer does not say why: $(tail -2 "$TMP/producer-$case.log")"
    wait_until 20 grep -Eq "cannot reach the broker.*(${EXPECT[$case]})" "$TMP/worker-$case.log" ||
        fail "$case: the worker does not say why: $(tail -2 "$TMP/worker-$case.log")"
    ! grep -q "consuming" "$TMP/worker-$case.log" || fail "$case: the worker got through"
    kill -TERM "${RWPID[$case]}" 2>/dev/null || true
    wait "${RWPID[$case]}" 2>/dev/null || true
    log "$case refused: $(grep -m1 -E "${EXPECT[$case]}" "$TMP/producer-$case.log")"
}
refused wrong-ca "peer cert(ificate)? verification failed" AMQP_CA_FILE="$PKI/other-ca.pem"
refused wrong-host "host ?name verification failed" AMQP_URL="amqps://fcuser:$PW@127.0.0.1:$TLS_PORT/%2f"
refused no-client-cert "over TLS: .*requires a client certificate" AMQP_CERT_FILE= AMQP_KEY_FILE=
for c in wrong-ca wrong-host no-client-cert; do check_refused $c; done

# No password anywhere: the clients' logs and the producer's messages.
leaks=$(grep -lF "$PW" "$TMP"/*.log || true)
[ -z "$leaks" ] || fail "the password appears in: $leaks"
log "ok (run $((SECONDS - t_start)) s)"
