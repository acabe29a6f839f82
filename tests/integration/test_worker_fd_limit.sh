#!/usr/bin/env bash
# The open-files limit: a worker raises its own soft limit to what WORKER_COUNT needs (WORKER_COUNT
# + 256 descriptors) where the hard limit allows, and refuses to start, exit 2 with a message
# naming WORKER_COUNT, the limit and how to raise it, where it does not.
. "$(dirname "$0")/lib.sh"

command -v prlimit >/dev/null || fail "prlimit (util-linux) is needed"
export API_BASE_URL=http://127.0.0.1:9/v1 API_KEY=sk-fd-limit

# 1. A hard limit too low for WORKER_COUNT: exit 2 at once, the message says what to do.
rc=0
WORKER_COUNT=4096 timeout 20 prlimit --nofile=1024:1024 "$WORKER" >"$TMP/worker-low.log" 2>&1 || rc=$?
[ $rc = 2 ] || fail "exit $rc with a hard limit of 1024 (want 2): $(tail -3 "$TMP/worker-low.log")"
grep -qE 'WORKER_COUNT=4096 needs [0-9]+ open files.*hard limit RLIMIT_NOFILE is 1024' "$TMP/worker-low.log" ||
    fail "no clear message: $(tail -3 "$TMP/worker-low.log")"
grep -q 'ulimit -n' "$TMP/worker-low.log" || fail "the message does not say how to raise the limit"
! grep -q sk-fd-limit "$TMP/worker-low.log" || fail "the API key is in the log"

# 2. A soft limit too low but a hard limit high enough: the worker raises its own and runs.
WORKER_COUNT=2048 prlimit --nofile=1024:8192 "$WORKER" >"$TMP/worker-1.log" 2>&1 &
W=$!
PIDS+=("$W")
wait_until 20 grep -q consuming "$TMP/worker-1.log" || fail "the worker did not start: $(tail -3 "$TMP/worker-1.log")"
soft=$(awk '/^Max open files/ {print $4}' "/proc/$W/limits")
[ "$soft" -ge $((2048 + 256)) ] || fail "soft limit $soft, want at least $((2048 + 256))"
kill -TERM $W
wait $W || fail "worker exit $? after SIGTERM"
log "ok: refused with a hard limit of 1024 (exit 2, told how to raise it); raised its soft limit to $soft"
