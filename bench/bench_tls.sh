#!/usr/bin/env bash
# TLS as the real API serves it (issue 13, scenario 3): the same job against the mock API three ways,
# 2 workers x 64 calls in flight, 20 ms latency, no rate limit, no cache:
#   plain_h1  plain HTTP/1.1 keep-alive (the baseline)
#   tls_h1    HTTPS served by the mock itself (libmicrohttpd + GnuTLS), HTTP/1.1 keep-alive
#   tls_h2    HTTPS + HTTP/2 served by nghttpx in front of the plain mock (libmicrohttpd has no HTTP/2);
#             nghttpx speaks HTTP/1.1 to the mock on loopback
# The certificates come from a CA this script generates (openssl, EC P-256); the workers verify the server
# against it (API_CA_FILE), host name included. TLS handshakes are counted at the server: the mock's accepted
# connections (tls_h1), nghttpx's access log (tls_h2: distinct client connections and TLS sessions).
# Prints a table, then one JSON line per scenario ({"scenario":ID,...}); the last line is the last scenario's.
# Usage: bench/bench_tls.sh [plain_h1|tls_h1|tls_h2]...   (default all three)
#   FC_BUILD_DIR   the CMake build dir (default ./build)
#   BENCH_QUICK=1  2,000 items instead of 8,000
# Every measurement holds /tmp/fc-bench.lock (flock) unless FC_BENCH_LOCK_HELD is set. Needs openssl and
# nghttpx (Debian: nghttp2-proxy).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
. "$SRC/tests/integration/lib.sh"
MOCKLOG=$SRC/bench/mocklog.sh
TICK=$(getconf CLK_TCK)
SCENARIOS=${*:-plain_h1 tls_h1 tls_h2}
ITEMS=8000
[ -z "${BENCH_QUICK:-}" ] || ITEMS=2000
NW=2
LATENCY_MS=20
ROWS=()
JSONS=()
command -v openssl >/dev/null || fail "openssl not found"

export API_KEY=sk-bench LOG_LEVEL=warn CACHE_TTL=0 RETRY_DELAYS=1s RATE_LIMIT=0 WORKER_COUNT=64

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# tree_ticks PID: CPU of PID and its children (nghttpx works in a child of its master process).
tree_ticks() {
    local t c
    t=$(cpu_ticks "$1")
    for c in $(pgrep -P "$1"); do t=$((t + $(cpu_ticks "$c" 2>/dev/null || echo 0))); done
    echo "$t"
}
calc() { awk "BEGIN {printf \"$1\", $2}"; }
lock() { [ -n "${FC_BENCH_LOCK_HELD:-}" ] || { exec 9>/tmp/fc-bench.lock && flock 9; }; }
unlock() { [ -n "${FC_BENCH_LOCK_HELD:-}" ] || flock -u 9; }

# make_certs: a CA, and a server certificate for 127.0.0.1 and localhost signed by it.
make_certs() {
    local d=$TMP/pki
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=flashcard bench CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>"$TMP/openssl.log"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$d/server.key" -out "$d/server.csr" 2>>"$TMP/openssl.log"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/ext.cnf" -out "$d/server.pem" 2>>"$TMP/openssl.log"
    export API_CA_FILE=$d/ca.pem
}

# start_front: nghttpx on a free port, TLS (h2 and http/1.1 by ALPN) in front of the mock; sets FRONT_PID
# and points API_BASE_URL at it.
start_front() {
    local port
    port=$(free_port)
    : >"$TMP/nghttpx-access.log"
    nghttpx --frontend="127.0.0.1,$port" --backend="127.0.0.1,$MOCK_PORT" --workers=1 --no-ocsp \
        --accesslog-file="$TMP/nghttpx-access.log" \
        --accesslog-format='$remote_port $alpn $tls_session_id $tls_session_reused $status' \
        --errorlog-file="$TMP/nghttpx.log" "$TMP/pki/server.key" "$TMP/pki/server.pem" &
    FRONT_PID=$!
    PIDS+=("$FRONT_PID")
    front_up() { curl -fsS --cacert "$API_CA_FILE" "https://127.0.0.1:$port/health" >/dev/null 2>&1; }
    wait_until 20 front_up || fail "nghttpx did not start"
    FRONT_SKIP=$(wc -l <"$TMP/nghttpx-access.log") # the probes are not counted
    export API_BASE_URL="https://127.0.0.1:$port/v1"
}

# scenario ID: one job of ITEMS; appends a table row and a JSON line.
scenario() {
    local id=$1 pids=() i
    lock
    rm -f "$TMP/mock-requests.log"
    FRONT_PID=""
    case $id in
    plain_h1) start_mock --latency-ms "$LATENCY_MS" ;;
    tls_h1)
        start_mock --latency-ms "$LATENCY_MS" --tls-cert "$TMP/pki/server.pem" --tls-key "$TMP/pki/server.key"
        export API_BASE_URL="https://127.0.0.1:$MOCK_PORT/v1"
        ;;
    tls_h2)
        start_mock --latency-ms "$LATENCY_MS"
        start_front
        ;;
    esac
    for i in $(seq 1 "$NW"); do
        LOG_LEVEL=info start_worker "$id-$i" # "consuming" is an info line
        pids+=("$LAST_PID")
    done
    for i in $(seq 1 "$NW"); do
        wait_until 30 grep -q consuming "$TMP/worker-$id-$i.log" || fail "$id: worker $i did not start"
    done
    make_csv "$ITEMS" "$TMP/$id.csv"
    local -A cpu0
    local p mock0 front0=0
    for p in "${pids[@]}"; do cpu0[$p]=$(cpu_ticks "$p"); done
    mock0=$(cpu_ticks "$MOCK_PID")
    [ -z "$FRONT_PID" ] || front0=$(tree_ticks "$FRONT_PID")
    local mscheme=http
    [ "$id" = tls_h1 ] && mscheme=https
    curl -fsS --cacert "$API_CA_FILE" -X POST -d '{"reset_stats":true}' "$mscheme://127.0.0.1:$MOCK_PORT/control" \
        >/dev/null
    timeout 600 "$PRODUCER" "$TMP/$id.csv" --job-id "bench-$id-$$" --wait --timeout 500s --output "$TMP/$id.tsv" \
        --report "$TMP/$id.report.json" >"$TMP/producer-$id.log" 2>&1 || fail "$id: producer exit $?"
    local ticks=0 front_ticks=0 mock_ticks conns
    for p in "${pids[@]}"; do ticks=$((ticks + $(cpu_ticks "$p") - cpu0[$p])); done
    mock_ticks=$(($(cpu_ticks "$MOCK_PID") - mock0))
    [ -z "$FRONT_PID" ] || front_ticks=$(($(tree_ticks "$FRONT_PID") - front0))
    conns=$(curl -fsS --cacert "$API_CA_FILE" "$mscheme://127.0.0.1:$MOCK_PORT/stats" | jq .connections)
    conns=$((conns - 1)) # this /stats request's own connection
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$FRONT_PID" ]; then kill -TERM "$FRONT_PID" 2>/dev/null || true; wait "$FRONT_PID" 2>/dev/null || true; fi
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    unlock

    local L=$TMP/mock-requests.log t0 t1 calls ok
    read -r t0 t1 calls < <("$MOCKLOG" span "$L")
    ok=$(jq .items_succeeded "$TMP/$id.report.json")
    [ "$ok" = "$ITEMS" ] || log "$id: WARNING only $ok of $ITEMS items succeeded"
    # Connections and TLS handshakes the workers caused at the server they spoke to.
    local client_conns handshakes proto
    case $id in
    plain_h1) client_conns=$conns handshakes=0 proto=http/1.1 ;;
    tls_h1) client_conns=$conns handshakes=$conns proto=http/1.1 ;;
    tls_h2)
        local A=$TMP/nghttpx-access.calls
        tail -n +$((FRONT_SKIP + 1)) "$TMP/nghttpx-access.log" >"$A"
        client_conns=$(awk '{print $1}' "$A" | sort -u | wc -l)
        # A TLS session id per handshake; without one ('-'), count connections instead.
        if grep -q '^[0-9]* [^ ]* - ' "$A"; then handshakes=$client_conns
        else handshakes=$(awk '{print $3}' "$A" | sort -u | wc -l); fi
        proto=$(awk '{print $2}' "$A" | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
        ;;
    esac
    local secs cps cpu_k mock_k front_k bound
    secs=$(calc %.2f "($t1 - $t0) / 1000")
    cps=$(calc %.0f "$calls / $secs")
    cpu_k=$(calc %.4f "$ticks / $TICK / $calls * 1000")
    mock_k=$(calc %.4f "$mock_ticks / $TICK / $calls * 1000")
    front_k=$(calc %.4f "$front_ticks / $TICK / $calls * 1000")
    bound=$((NW * WORKER_COUNT * 1000 / LATENCY_MS))
    ROWS+=("$(printf '%-9s %-8s %6d %6.2f %7d %6.3f %8.4f %8.4f %8.4f %6d %6d %9.4f' "$id" "$proto" "$calls" "$secs" \
        "$cps" "$(calc %.3f "$cps / $bound")" "$cpu_k" "$mock_k" "$front_k" "$client_conns" "$handshakes" \
        "$(calc %.4f "$handshakes / $calls")")")
    JSONS+=("$(jq -cn --arg id "$id" --arg proto "$proto" --argjson items "$ITEMS" --argjson ok "$ok" \
        --argjson calls "$calls" --argjson secs "$secs" --argjson cps "$cps" --argjson cpu "$cpu_k" \
        --argjson mock "$mock_k" --argjson front "$front_k" --argjson conns "$client_conns" \
        --argjson hs "$handshakes" --argjson mconns "$conns" --argjson bound "$bound" --argjson nw "$NW" '
        {scenario: $id,
         figures: {protocol: $proto, items: $items, items_succeeded: $ok, calls: $calls, seconds: $secs,
                   calls_per_s: $cps, worker_cpu_s_per_1k_calls: $cpu, mock_cpu_s_per_1k_calls: $mock,
                   front_cpu_s_per_1k_calls: $front, client_connections: $conns, tls_handshakes: $hs,
                   mock_connections: $mconns},
         ceilings: {bound_calls_per_s: $bound},
         ratios: {calls_per_s: ($cps / $bound), tls_handshakes_per_call: ($hs / $calls)},
         targets: {tls_handshakes_per_worker_max: 64},
         met: {all_items_succeeded: ($ok == $items),
               tls_handshakes: ($hs <= 64 * $nw)}}')")
    log "$id done: $calls calls in ${secs}s"
}

make_certs
for s in $SCENARIOS; do
    case $s in
    plain_h1 | tls_h1) scenario "$s" ;;
    tls_h2) command -v nghttpx >/dev/null || fail "nghttpx not found (apt-get install nghttp2-proxy)"; scenario "$s" ;;
    *) fail "unknown scenario $s (plain_h1, tls_h1, tls_h2)" ;;
    esac
done

echo
echo "flashcard-worker over TLS: $NW workers x $WORKER_COUNT in flight, mock latency ${LATENCY_MS} ms, $ITEMS items," \
    "no rate limit, CACHE_TTL=0, $(nproc) CPUs"
printf '%-9s %-8s %6s %6s %7s %6s %8s %8s %8s %6s %6s %9s\n' \
    sc proto calls secs calls/s /bound cpu/1kc mock/k front/k conns tls_hs hs/call
for r in "${ROWS[@]}"; do echo "$r"; done
echo "(proto: what the workers spoke to the server; cpu/1kc: worker CPU s per 1,000 calls, both workers;"
echo " mock/k, front/k: the mock's and nghttpx's CPU s per 1,000 calls; conns: client connections the server"
echo " accepted (tls_h2: distinct client ports in nghttpx's log); tls_hs: TLS handshakes (the mock's accepted"
echo " connections; tls_h2: distinct TLS sessions in nghttpx's log); /bound: calls/s over workers x in flight / latency."
echo " With keep-alive a worker makes at most one handshake per connection: <= $WORKER_COUNT each over HTTP/1.1,"
echo " 1 over HTTP/2.)"
for j in "${JSONS[@]}"; do echo "$j"; done
