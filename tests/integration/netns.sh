# shellcheck shell=bash
# Network namespace helpers for the partition tests (sourced after lib.sh): one namespace joined
# to the root namespace by a veth pair, and TCP forwarders (socat) in the root namespace, bound to
# the veth's root-side address, so that a process inside reaches the loopback-only RabbitMQ, Redis
# and mock API. Cutting the root side of the pair partitions everything inside at once, while its
# sockets stay open (packets vanish, as with a pulled cable).
#
# Names carry $$; netns_down (first in the EXIT trap) removes the forwarders, the veth pair and the
# namespace whatever happened, and keeps the exit status for lib.sh's cleanup.

NS_NAME="fcpart$$"
NS_VETH_ROOT="fcpr$$" # interface names: at most 15 characters
NS_VETH_IN="fcpn$$"
# A /30 of 10.213.0.0/16 chosen by the PID, so concurrent runs do not collide.
NS_ROOT_IP="10.213.$((($$ >> 6) & 255)).$((($$ & 63) * 4 + 1))"
NS_IP="10.213.$((($$ >> 6) & 255)).$((($$ & 63) * 4 + 2))"
NS_FORWARDERS=()      # PIDs of the socat listeners
NS_FORWARDED_PORTS=()
NS_CREATED=0

# netns_need_socat: installs socat from Debian's packages if it is missing.
netns_need_socat() {
    dpkg-query -W -f='${Status}' socat 2>/dev/null | grep -q "install ok installed" && return 0
    log "installing socat"
    { $SUDO apt-get install -y -q --no-install-recommends socat >/dev/null 2>&1 ||
        { $SUDO apt-get update -q >/dev/null 2>&1 &&
            $SUDO apt-get install -y -q --no-install-recommends socat >/dev/null 2>&1; }; } ||
        fail "cannot install socat"
}

# netns_pick_subnet: keeps the PID's /30 unless an interface of the machine has one of its
# addresses already (another run whose PID maps to the same /30), else tries others.
netns_pick_subnet() {
    local k n
    for k in $(seq 0 30); do
        n=$((($$ + k * 7919) & 16383))
        NS_ROOT_IP="10.213.$((n >> 6)).$(((n & 63) * 4 + 1))"
        NS_IP="10.213.$((n >> 6)).$(((n & 63) * 4 + 2))"
        ip -o -4 addr show | grep -qE " inet ($NS_ROOT_IP|$NS_IP)/" || return 0
    done
    fail "no free /30 in 10.213.0.0/16 after 31 tries"
}

# netns_up: creates the namespace and the veth pair, addressed and up. Exits 0 with "SKIP: ..."
# only if the kernel refuses a network namespace (an unprivileged container).
netns_up() {
    command -v ip >/dev/null || fail "ip (iproute2) is missing"
    if ip netns list | awk '{print $1}' | grep -qx "$NS_NAME"; then
        fail "namespace $NS_NAME exists already (left by an earlier run with this PID?)"
    fi
    if ! ip netns add "$NS_NAME" 2>"$TMP/netns-add.err"; then
        echo "SKIP: ip netns add refused: $(head -1 "$TMP/netns-add.err")"
        exit 0
    fi
    NS_CREATED=1
    netns_pick_subnet
    ip link add "$NS_VETH_ROOT" type veth peer name "$NS_VETH_IN" netns "$NS_NAME" || fail "cannot create the veth pair"
    ip addr add "$NS_ROOT_IP/30" dev "$NS_VETH_ROOT" || fail "cannot address $NS_VETH_ROOT"
    ip link set "$NS_VETH_ROOT" up || fail "cannot bring $NS_VETH_ROOT up"
    ip -n "$NS_NAME" addr add "$NS_IP/30" dev "$NS_VETH_IN" || fail "cannot address $NS_VETH_IN"
    ip -n "$NS_NAME" link set "$NS_VETH_IN" up || fail "cannot bring $NS_VETH_IN up"
    ip -n "$NS_NAME" link set lo up || fail "cannot bring lo up in $NS_NAME"
    log "namespace $NS_NAME: $NS_IP <-> $NS_ROOT_IP ($NS_VETH_IN / $NS_VETH_ROOT)"
}

netns_listening() { ss -Hltn "src $NS_ROOT_IP:$1" | grep -q .; }

# netns_forward HOST PORT: forwards $NS_ROOT_IP:PORT (root namespace) to HOST:PORT.
netns_forward() {
    local host=$1 port=$2
    socat -lf "$TMP/socat-$port.log" "TCP4-LISTEN:$port,bind=$NS_ROOT_IP,fork,reuseaddr" "TCP4:$host:$port" &
    NS_FORWARDERS+=("$!")
    NS_FORWARDED_PORTS+=("$port")
    wait_until 10 netns_listening "$port" || fail "the forwarder to port $port did not start"
}

# netns_reaches PORT: true if a TCP connection from inside the namespace to $NS_ROOT_IP:PORT opens.
netns_reaches() {
    timeout 5 ip netns exec "$NS_NAME" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$NS_ROOT_IP" "$1" 2>/dev/null
}

# netns_via URL DEFAULT_PORT: forwards the URL's host and port and sets NS_URL to the URL as seen
# from inside the namespace. (The URL may hold a password: it is never printed.)
netns_via() {
    local re='^([a-z]+://([^@/]*@)?)([^:/@]+)(:([0-9]+))?(/.*)?$'
    [[ $1 =~ $re ]] || fail "cannot parse a service URL to forward"
    local head=${BASH_REMATCH[1]} host=${BASH_REMATCH[3]} port=${BASH_REMATCH[5]:-$2} tail=${BASH_REMATCH[6]}
    netns_forward "$host" "$port"
    NS_URL="$head$NS_ROOT_IP:$port$tail"
}

# netns_exec CMD...: runs CMD inside the namespace. (In the background, $! of a function is a
# subshell: start a process whose PID matters with ip netns exec "$NS_NAME" itself, which execs.)
netns_exec() { ip netns exec "$NS_NAME" "$@"; }

# netns_holds PID: true once process PID runs in the namespace.
netns_holds() { [ "$(readlink "/proc/$1/ns/net" 2>/dev/null)" = "net:[$(stat -L -c %i "/run/netns/$NS_NAME")]" ]; }

# netns_cut / netns_restore: the root side of the veth pair down (the namespace's packets go
# nowhere, its sockets stay open) or up again.
netns_cut() { ip link set "$NS_VETH_ROOT" down; }
netns_restore() { ip link set "$NS_VETH_ROOT" up; }

# netns_children PID: the child processes of PID (a socat listener's: one per connection served).
netns_children() { cat "/proc/$1/task/$1/children" 2>/dev/null || pgrep -P "$1" 2>/dev/null || true; }

# netns_down: stops the forwarders and the connections they serve, deletes the veth pair and the
# namespace. For the EXIT trap, before lib.sh's cleanup: it returns the status it was called with
# (cleanup reads it), so it turns errexit off first (a trap stops at its first failing command).
netns_down() {
    local rc=$? p c
    set +e
    for p in "${NS_FORWARDERS[@]}"; do
        kill -STOP "$p" 2>/dev/null || true # no new connection between listing its children and the kill
        for c in $(netns_children "$p"); do kill -9 "$c" 2>/dev/null || true; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$NS_CREATED" = 1 ]; then
        ip link del "$NS_VETH_ROOT" 2>/dev/null || true
        ip netns del "$NS_NAME" 2>/dev/null || true
    fi
    return $rc
}
