# Port helpers shared by the integration tests.

# free_port: a loopback TCP port nobody listens on, below the kernel's range for outgoing
# connections (net.ipv4.ip_local_port_range, 32768 and up), so no client socket takes it first.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12768))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}
