#!/usr/bin/env bash
# Sets everything up and runs the main job on sample data: services up, build, the mock API,
# 2 workers, then the producer waits for the job and writes the Anki TSV and a report.
#   bash deploy/local/demo.sh [DATASET]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
dataset=${1:-}
if [ -z "$dataset" ]; then
    if [ -f ../shared/data/vocabulary_1000.csv ]; then dataset=../shared/data/vocabulary_1000.csv
    else dataset=tests/data/vocabulary_200.csv; fi
fi
bash deploy/local/services.sh up
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
out=$root/demo-output
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# The mock stands in for the paid API; set API_BASE_URL and API_KEY to use a real one.
if [ -z "${API_BASE_URL:-}" ]; then
    rm -f "$out/mock.port"
    build/tests/mock-api --port-file "$out/mock.port" --latency-ms 20 >"$out/mock.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do [ -s "$out/mock.port" ] && break; sleep 0.05; done
    export API_BASE_URL="http://127.0.0.1:$(cat "$out/mock.port")/v1" API_KEY=demo-key
fi
export QUEUE_PREFIX=${QUEUE_PREFIX:-flashcard-demo} RATE_LIMIT=${RATE_LIMIT:-6000} WORKER_COUNT=${WORKER_COUNT:-16}
for i in 1 2; do build/worker/flashcard-worker >"$out/worker-$i.log" 2>&1 & pids+=($!); done
build/producer/flashcard-producer "$dataset" --wait --timeout 10m \
    --output "$out/cards.tsv" --report "$out/report.json" && rc=0 || rc=$?
echo
echo "Anki cards:  $out/cards.tsv"
echo "Report:      $out/report.json"
echo "Logs:        $out/worker-*.log"
exit $rc
