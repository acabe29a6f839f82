#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts RabbitMQ and Redis, builds
# with warnings as errors, then runs three lanes at the same time and fails if any lane fails:
#   plain     build/       every unit and integration test, and the hardening runs beside them
#                          (soak with kills, valgrind, ThreadSanitizer)
#   sanitize  build-asan/  every unit and integration test again, built with ASan+UBSan; any
#                          sanitizer report from any process fails the lane, even one no test read
#   fuzz      build-fuzz/  each libFuzzer target for FC_FUZZ_SECONDS (default 60), with clang
# Integration tests run one at a time within a lane (CTest resource lock); the lanes share the
# machine's broker and Redis, which no test disturbs (a test that restarts or blocks a broker
# starts a node of its own).
#
#   bash tests/run.sh                       all three lanes (about 30 minutes on 2 cores)
#   bash tests/run.sh --plain [CTEST ARGS]  one lane, in the foreground: e.g. --plain -L unit,
#   bash tests/run.sh --sanitize [ARGS]     --plain -R test_e2e (FC_SANITIZE=1 means --sanitize)
#   bash tests/run.sh --fuzz [ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

lanes=(plain sanitize fuzz)
if [ $# -gt 0 ]; then
    case $1 in
    --plain | --sanitize | --fuzz) lanes=("${1#--}"); shift ;;
    esac
fi
[ "${FC_SANITIZE:-0}" = 1 ] && lanes=(sanitize)
ctest_args=("$@")

bash deploy/local/services.sh up

# configure LANE: configures and builds the lane's directory (printed on stdout).
configure() {
    local dir flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFC_WERROR=ON)
    case $1 in
    plain) dir=build ;;
    sanitize) dir=build-asan flags+=(-DFC_SANITIZE=ON) ;;
    fuzz) dir=build-fuzz flags+=(-DCMAKE_C_COMPILER=clang -DFC_FUZZ=ON) ;;
    esac
    local target=() # the fuzz lane needs only its targets
    [ "$1" = fuzz ] && target=(--target fuzz)
    cmake -S . -B "$dir" "${flags[@]}" >/dev/null
    cmake --build "$dir" -j"$(nproc)" "${target[@]}" >"$dir/build.log" 2>&1 || { cat "$dir/build.log" >&2; return 1; }
    echo "$dir"
}

# figures DIR: the figures the hardening and fuzz runs print (passing tests' output is not shown).
figures() {
    grep -hE '^(soak: |fuzz [a-z_]+: )|\[test_(soak|valgrind_e2e|tsan_metrics)\] (ok|survivor RSS)' \
        "$1/Testing/Temporary/LastTest.log" 2>/dev/null || true
}

# run_lane LANE DIR: the lane's tests; the fuzz lane runs niced so that it only takes the CPU the
# timed tests leave.
run_lane() {
    case $1 in
    plain)
        local rc=0
        ctest --test-dir "$2" --output-on-failure -j3 "${ctest_args[@]}" || rc=$?
        figures "$2"
        return $rc
        ;;
    sanitize)
        # Every sanitizer report also goes to a file of its own (log_path): a worker that reports
        # at exit after its test stopped reading its output still fails the lane.
        local san_logs=$top/$2/sanitizer-reports
        rm -rf "$san_logs" && mkdir -p "$san_logs"
        export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:log_path=$san_logs/asan"
        export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$san_logs/ubsan"
        local rc=0
        ctest --test-dir "$2" --output-on-failure -j2 "${ctest_args[@]}" || rc=$?
        if compgen -G "$san_logs/*" >/dev/null; then
            echo "sanitizer reports (a process reported an error its test did not catch):"
            for f in "$san_logs"/*; do echo "--- $f"; head -60 "$f"; done
            rc=1
        fi
        return $rc
        ;;
    fuzz)
        local rc=0
        nice -n 15 ctest --test-dir "$2" --output-on-failure -L fuzz "${ctest_args[@]}" || rc=$?
        figures "$2"
        return $rc
        ;;
    esac
}

declare -A dirs=()
for lane in "${lanes[@]}"; do dirs[$lane]=$(configure "$lane"); done

if [ ${#lanes[@]} = 1 ]; then
    run_lane "${lanes[0]}" "${dirs[${lanes[0]}]}"
    exit
fi

# Three lanes at once, each into its own log; each log is printed whole once its lane ends.
declare -A pid=()
t0=$SECONDS
for lane in "${lanes[@]}"; do
    run_lane "$lane" "${dirs[$lane]}" >"${dirs[$lane]}/lane.log" 2>&1 &
    pid[$lane]=$!
done
failed=()
for lane in "${lanes[@]}"; do
    rc=0
    wait "${pid[$lane]}" || rc=$?
    echo "===== lane $lane: exit $rc after $((SECONDS - t0)) s ====="
    cat "${dirs[$lane]}/lane.log"
    [ $rc = 0 ] || failed+=("$lane")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED lanes: ${failed[*]}"
    exit 1
fi
echo "all lanes passed in $((SECONDS - t0)) s"
