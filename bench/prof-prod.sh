set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export FC_SOURCE_DIR=$SRC
. "$SRC/tests/integration/lib.sh"
export LOG_LEVEL=warn
{ echo "position,term,type,definition"; seq 1 1000000 | awk '{ printf "%d,단어%d,noun,\"meaning %d, with a comma\"\n", $1, $1, $1 }'; } > "$TMP/bench.csv"; sync
perf record -q -F 1999 -g -o /tmp/prodperf "$PRODUCER" "$TMP/bench.csv" --job-id bench-prof --batch-size 100 --report "$TMP/r.json" > "$TMP/out" 2>&1
jq -c '{elapsed_seconds}' "$TMP/r.json"
mgmt -X DELETE "$MGMT/queues/%2F/$QUEUE_PREFIX.job.bench-prof" >/dev/null 2>&1 || true
