#!/usr/bin/env bash
# The one benchmark command: starts the local RabbitMQ and Redis (deploy/local/services.sh up),
# builds build/ (or FC_BUILD_DIR) if needed, runs each scenario script BENCH_RUNS times, reads the
# JSON lines each run prints last ({"scenario":ID,"figures":...,"ceilings":...,"ratios":...,
# "targets":...,"met":...}), prints one table of medians and writes them, with every run's
# figures, to BENCH_OUT. Benchmarks are figures, never a pass/fail gate: a target missed is shown
# as such and the command still exits 0; it exits 1 only when a script gave no figures at all.
#
#   bench/run.sh [--quick] [SCRIPT|ID ...]
#     --quick       one run of each script with BENCH_QUICK=1 (their short versions; a smoke run)
#     SCRIPT|ID     only these scripts: bench_producer.sh, bench_producer, producer, or an id it
#                   prints (producer10); default: every script below that exists
#   BENCH_RUNS      runs of each script (default 3; --quick: 1)
#   BENCH_OUT       the JSON file written (default $FC_BUILD_DIR/bench-results.json)
#   BENCH_LOGS      where each run's output is kept (default $FC_BUILD_DIR/bench-logs)
#   BENCH_TIMEOUT   seconds one script run may take before it is stopped (default 1800)
#   BENCH_LOCK      a lock file: each script run holds it (flock), so that benchmarks started by
#                   others on a shared machine never measure at the same time
#   BENCH_NO_BUILD  1: do not build, use FC_BUILD_DIR as it is
#   FC_BUILD_DIR    the CMake build directory (default ./build; configured RelWithDebInfo if new)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
export FC_BUILD_DIR=${FC_BUILD_DIR:-$SRC/build}
BUILD=$FC_BUILD_DIR

# Every script, in the order run, with the scenario ids it prints.
SCRIPTS=(bench_worker.sh bench_concurrency.sh bench_tls.sh bench_fleet.sh bench_scaling.sh bench_crash.sh
         bench_producer.sh bench_limiter.sh)
declare -A IDS=(
    [bench_worker.sh]="t2x16 t3x16"
    [bench_concurrency.sh]="c1024 c4096"
    [bench_tls.sh]="plain_h1 tls_h1 tls_h2"
    [bench_fleet.sh]="fleet100"
    [bench_scaling.sh]="scale1 scale2 scale4"
    [bench_crash.sh]="crash"
    [bench_producer.sh]="producer100 producer10"
    [bench_limiter.sh]="limiter1 limiter4"
)

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

QUICK=""
WANT=()
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    -h | --help) usage 0 ;;
    -*) echo "bench/run.sh: unknown option $a" >&2; usage 2 ;;
    *) WANT+=("$a") ;;
    esac
done
RUNS=${BENCH_RUNS:-3}
[ -n "$QUICK" ] && RUNS=${BENCH_RUNS:-1}
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: BENCH_RUNS must be 1..99" >&2; exit 2; }
TIMEOUT=${BENCH_TIMEOUT:-1800}
OUT=${BENCH_OUT:-$BUILD/bench-results.json}
LOGS=${BENCH_LOGS:-$BUILD/bench-logs}

# script_of NAME: the script NAME designates (a script's name with or without .sh or bench_, or an
# id it prints); nothing if none.
script_of() {
    local n=${1%.sh} s
    n=${n#bench/}
    for s in "${SCRIPTS[@]}"; do
        if [ "$n" = "${s%.sh}" ] || [ "bench_$n" = "${s%.sh}" ] || [[ " ${IDS[$s]} " == *" $1 "* ]]; then
            echo "$s"
            return
        fi
    done
}

TORUN=()
if [ ${#WANT[@]} -eq 0 ]; then
    TORUN=("${SCRIPTS[@]}")
else
    for w in "${WANT[@]}"; do
        s=$(script_of "$w")
        [ -n "$s" ] || { echo "bench/run.sh: no script or scenario '$w' (scripts: ${SCRIPTS[*]})" >&2; exit 2; }
        [[ " ${TORUN[*]} " == *" $s "* ]] || TORUN+=("$s")
    done
fi

echo "== services"
bash "$SRC/deploy/local/services.sh" up
# The load generator (h2load) and the HTTP/2 TLS front (nghttpx) of the concurrency and TLS scenarios.
if ! command -v h2load >/dev/null || ! command -v nghttpx >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nghttp2-client nghttp2-proxy \
        >/dev/null || echo "bench/run.sh: nghttp2-client and nghttp2-proxy could not be installed" >&2
fi
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
    echo "== build in $BUILD"
    mkdir -p "$LOGS"
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$LOGS/cmake.log" 2>&1 ||
            { echo "bench/run.sh: cmake failed, see $LOGS/cmake.log" >&2; exit 1; }
    fi
    cmake --build "$BUILD" -j"$(nproc)" >"$LOGS/build.log" 2>&1 ||
        { echo "bench/run.sh: the build failed, see $LOGS/build.log" >&2; exit 1; }
fi
mkdir -p "$LOGS" "$(dirname "$OUT")"
ALL=$LOGS/runs.jsonl
: >"$ALL"
SKIPPED=()
FAILED=()

# run_script SCRIPT K: one run; its output goes to $LOGS/SCRIPT.K.log, its JSON lines to $ALL.
run_script() {
    local s=$1 k=$2 log=$LOGS/${1%.sh}.$2.log t0 rc=0 n
    local cmd=(timeout -k 30 "$TIMEOUT" bash "$SRC/bench/$s")
    [ -z "${BENCH_LOCK:-}" ] || cmd=(flock "$BENCH_LOCK" "${cmd[@]}")
    t0=$(date +%s)
    env ${QUICK:+BENCH_QUICK=1} "${cmd[@]}" >"$log" 2>&1 </dev/null || rc=$?
    n=0
    while IFS= read -r line; do
        if jq -e 'type == "object" and (.scenario | type == "string")' >/dev/null 2>&1 <<<"$line"; then
            jq -c --arg script "$s" --argjson run "$k" '. + {script: $script, run: $run}' <<<"$line" >>"$ALL"
            n=$((n + 1))
        fi
    done < <(grep '^{' "$log" || true)
    printf '   %-22s run %d/%d: %4d s, exit %d, %d scenario(s)%s\n' "$s" "$k" "$RUNS" $(($(date +%s) - t0)) "$rc" "$n" \
        "$([ "$n" -gt 0 ] || echo ": no figures, see $log")"
    [ "$n" -gt 0 ] || FAILED+=("$s run $k")
}

for s in "${TORUN[@]}"; do
    if [ ! -f "$SRC/bench/$s" ]; then
        echo "== $s: not there yet, skipped"
        SKIPPED+=("$s")
        continue
    fi
    echo "== $s (${IDS[$s]}), $RUNS run(s)${QUICK:+, quick}; logs in $LOGS"
    for k in $(seq 1 "$RUNS"); do run_script "$s" "$k"; done
done

# The medians of every scenario: figures, ceilings and ratios per key over the runs (the median of
# each run's own ratio, not a ratio of medians); targets as the scripts state them; met as
# "runs that met it / runs".
jq -s --argjson runs "$RUNS" --arg quick "${QUICK:-0}" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --argjson cpus "$(nproc)" --arg host "$(hostname)" \
    --argjson skipped "$(printf '%s\n' "${SKIPPED[@]}" | jq -R 'select(length > 0)' | jq -s .)" \
    --argjson failed "$(printf '%s\n' "${FAILED[@]}" | jq -R 'select(length > 0)' | jq -s .)" '
    def median: map(select(type == "number")) | sort |
        if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def medians($f): . as $rs | (map(.[$f] // {} | keys) | add // [] | unique) as $k |
        reduce $k[] as $key ({}; . + {($key): ([$rs[] | .[$f][$key]?] | median)});
    . as $all |
    {date: $date, runs: $runs, quick: ($quick == "1"), machine: {cpus: $cpus, host: $host},
     skipped: $skipped, failed: $failed,
     scenarios: (reduce (.[] | .scenario) as $s ([]; if any(.[]; . == $s) then . else . + [$s] end)
         | map(. as $id | [$all[] | select(.scenario == $id)] | . as $in | {key: $id, value: {
         script: .[0].script, runs: length,
         figures: medians("figures"), ceilings: medians("ceilings"), ratios: medians("ratios"),
         targets: (map(.targets // {}) | add // {}),
         met: ((map(.met // {} | keys) | add // [] | unique) as $k |
               reduce $k[] as $key ({}; . + {($key): {met: ([$in[] | select(.met[$key]? == true)] | length),
                                                        of: ([$in[] | select(.met[$key]? != null)] | length)}}))}})
         | from_entries),
     raw: .}' "$ALL" >"$OUT"

# The table: one line per measure that has a ceiling, a ratio or a target; the scenario's other
# figures on one line below it.
echo
echo "Benchmark medians over $RUNS run(s)${QUICK:+ (quick)}, $(nproc) CPUs; ratio = figure / ceiling, both from the same run"
jq -r '
    def num: if . == null then "-" elif type != "number" then tostring
        elif (if . < 0 then -. else . end) >= 100 then (. | round | tostring)
        elif (if . < 0 then -. else . end) >= 1 then ((. * 100 | round) / 100 | tostring)
        else ((. * 1000 | round) / 1000 | tostring) end;
    .scenarios | to_entries[] | .key as $id | .value as $v |
    (($v.ceilings + $v.ratios + $v.targets + $v.met) | keys) as $main |
    ($main[] | . as $k |
        [$id, $k, ($v.figures[$k] | num), ($v.ceilings[$k] | num), ($v.ratios[$k] | num),
         ($v.targets[$k] // "-" | tostring),
         (if $v.met[$k] then (if $v.met[$k].met == $v.met[$k].of then "yes" else "NO" end) +
             " (\($v.met[$k].met)/\($v.met[$k].of))" else "-" end)] | @tsv),
    ([$v.figures | to_entries[] | select(.key as $k | $main | index($k) | not) | "\(.key)=\(.value | num)"]
        | if length > 0 then "\t  also: " + join(", ") else empty end)' "$OUT" |
    awk -F'\t' -v hdr="scenario\tmeasure\tfigure\tceiling\tratio\ttarget\tmet" '
        BEGIN { n = 1; line[1] = hdr; w = 7 }
        { line[++n] = $0; if (NF > 2 && length($2) > w) w = length($2) }
        END { for (i = 1; i <= n; i++) {
                  k = split(line[i], f, "\t")
                  if (k == 2) { print "            " f[2]; continue }
                  printf "%-12s %-" w "s %12s %12s %7s %-9s %s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7] } }'
# Ids a script should have printed but did not.
for s in "${TORUN[@]}"; do
    [[ " ${SKIPPED[*]} " == *" $s "* ]] && continue
    for id in ${IDS[$s]}; do
        jq -e --arg id "$id" '.scenarios[$id]' "$OUT" >/dev/null || echo "   ($id: no figures from $s)"
    done
done
[ ${#SKIPPED[@]} -eq 0 ] || echo "Skipped (not written yet): ${SKIPPED[*]}"
echo "Written: $OUT (medians, and every run's figures under raw); logs in $LOGS"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "No figures from: ${FAILED[*]}" >&2
    exit 1
fi
exit 0
