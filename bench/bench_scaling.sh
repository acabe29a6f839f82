#!/usr/bin/env bash
# Scenario 5 (ids "scale1", "scale2", "scale4"): 1, 2 and 4 worker processes against the mock at
# 50 ms latency, each WORKER_COUNT=SCALE_WC (default 256, a bound of 5,120 calls/s per process, far
# above what this machine's cores can serve), no rate limit, no cache. calls/s should grow with
# the processes until the cores are the limit; the machine's CPU busy share over each job
# (/proc/stat) and the cores the workers and the mock used say where that is.
# Runs bench/bench_worker.sh's scenarios s1 s2 s4 (its table), then a scaling table, then one JSON
# line per id as the last lines.
#   BENCH_QUICK=1   3,000 items per scenario instead of 20,000 (ITEMS as $1 overrides both)
#   SCALE_WC        calls in flight per process
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp /tmp/fc-bench-scaling.XXXXXX)
trap 'rm -f "$OUT"' EXIT
BENCH_ONLY="s1 s2 s4" "$HERE/bench_worker.sh" "$@" | tee "$OUT" | grep -v '^{"scenario"' || exit 1
grep '^{"scenario"' "$OUT" >"$OUT.json" || { echo "no scenario figures" >&2; exit 1; }
trap 'rm -f "$OUT" "$OUT.json"' EXIT

# growth: each step's calls/s over the step before; the cores are the limit at the first step
# whose growth stays under 1.25x for twice the processes, or where the machine is 90 % busy.
jq -sr '
    . as $a | range(0; length) as $i | $a[$i] |
    [.figures.workers, .figures.calls_per_s,
     (if $i > 0 then (.figures.calls_per_s / $a[$i - 1].figures.calls_per_s * 100 | floor) / 100 else 1 end),
     .figures.machine_busy, .figures.worker_cores, .figures.mock_cores, .figures.cpu_s_per_1k_calls,
     .ratios.calls_per_s] | @tsv' "$OUT.json" >"$OUT.tsv"
echo
echo "scaling at 50 ms latency, WORKER_COUNT=${SCALE_WC:-256} per process, $(nproc) CPUs"
printf '%8s %8s %7s %6s %6s %6s %8s %7s\n' workers calls/s growth busy wcore mcore cpu/1kc /bound
awk -F'\t' '{printf "%8d %8d %7.2f %6.2f %6.2f %6.2f %8.3f %7.2f\n", $1, $2, $3, $4, $5, $6, $7, $8}' "$OUT.tsv"
limit=$(awk -F'\t' 'NR > 1 && ($3 < 1.25 || $4 >= 0.9) {print prev; found = 1; exit} {prev = $1}
    END {if (!found) print "none"}' "$OUT.tsv")
if [ "$limit" = none ]; then
    echo "calls/s grew at every step: the cores were not the limit up to $(tail -1 "$OUT.tsv" | cut -f1) processes"
else
    echo "the cores are the limit from $limit process(es): more processes add under 25 % (or the machine is 90 % busy)"
fi
echo "(growth: calls/s over the step before; busy: machine CPU busy share over the job, every process on it;"
echo " wcore, mcore: cores the workers and the mock used; /bound: calls/s over processes x WORKER_COUNT / 50 ms)"
rm -f "$OUT.tsv"
jq -c --arg limit "$limit" '.figures.cores_limit_from_workers = (if $limit == "none" then null else ($limit | tonumber) end)' "$OUT.json"
