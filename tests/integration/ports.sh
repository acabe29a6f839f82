# Port helpers shared by the integration tests.

# Ports handed out are reserved machine-wide until the test exits, so that one picked but not bound
# yet (a RabbitMQ node binds its ports only as it boots, seconds later) is not handed to a test
# running beside it (another suite's): one directory per port under FC_PORTS_DIR, holding the PID of
# the test's shell. A reservation whose test is gone (killed before its cleanup) is taken over;
# where FC_PORTS_DIR cannot be written, nothing is reserved.
FC_PORTS_DIR=${FC_PORTS_DIR:-/tmp/fc-ports}

# port_reserve PORT: true if this test now holds PORT (nobody else had it reserved).
port_reserve() {
    local d=$FC_PORTS_DIR/$1 owner
    [ -d "$FC_PORTS_DIR" ] || { mkdir -p "$FC_PORTS_DIR" && chmod 1777 "$FC_PORTS_DIR"; } 2>/dev/null
    [ -w "$FC_PORTS_DIR" ] || return 0
    if ! mkdir "$d" 2>/dev/null; then
        owner=$(cat "$d/owner" 2>/dev/null) || return 1 # being made by its owner right now
        [ -n "$owner" ] && [ "$owner" != $$ ] && ! kill -0 "$owner" 2>/dev/null || return 1
        rm -rf "$d" && mkdir "$d" 2>/dev/null || return 1
    fi
    echo $$ >"$d/owner"
}

# ports_release: gives back every port this test reserved (lib.sh's cleanup calls it).
ports_release() {
    local d
    for d in "$FC_PORTS_DIR"/*/; do
        [ "$(cat "$d/owner" 2>/dev/null)" = $$ ] && rm -rf "$d"
    done
    return 0
}

# free_port: a loopback TCP port nobody listens on and no other test has reserved, below the
# kernel's range for outgoing connections (net.ipv4.ip_local_port_range, 32768 and up), so no
# client socket takes it first. It stays reserved for this test until it exits.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12768))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && port_reserve "$p"; then echo "$p"; return 0; fi
    done
    return 1
}
