#!/bin/bash
# Counts calls in the mock API's request log ("<arrival_ms> <status> <stage> <position>
# <user-agent> <held_ms> <held_us>", one line per chat request, written when it is answered, so
# not in arrival order). Used by the rate-limit tests and bench/bench_worker.sh.
#
# Usage: bench/mocklog.sh COMMAND LOG [ARGS]   (times are arrival ms, windows [from, to))
#   span LOG                       first and last arrival, and the line count
#   maxwin LOG WIN [FROM [TO]]     most calls in any window [t, t+WIN ms) with t an arrival,
#                                  counting only arrivals in [FROM, TO); prints "count start_ms"
#   count LOG FROM TO              calls arriving in [FROM, TO)
#   steadyrate LOG FROM TO         calls/s between the first and last arrival in [FROM, TO):
#                                  (n - 1) / (last - first), free of edge quantisation
#   shares LOG FROM TO             calls per user agent in [FROM, TO): "count user-agent" lines
#   status LOG CODE                arrival times of the calls answered with status CODE
set -euo pipefail

cmd=${1:?command}
log=${2:?log file}
shift 2

arrivals() { awk '{print $1}' "$log" | sort -n; }

case $cmd in
span)
    arrivals | awk 'NR == 1 {f = $1} {l = $1} END {printf "%.0f %.0f %d\n", f, l, NR}'
    ;;
maxwin)
    win=${1:?window ms}
    from=${2:-0}
    to=${3:-99999999999999}
    # Two pointers over the sorted arrivals: for each i, j is the first arrival >= t[i] + win.
    arrivals | awk -v w="$win" -v f="$from" -v e="$to" '$1 >= f && $1 < e {t[n++] = $1}
        END {j = 0; m = 0; s = 0
             for (i = 0; i < n; i++) { while (j < n && t[j] < t[i] + w) j++; if (j - i > m) { m = j - i; s = t[i] } }
             print m, s}'
    ;;
count)
    awk -v f="${1:?from}" -v e="${2:?to}" '$1 >= f && $1 < e {c++} END {print c + 0}' "$log"
    ;;
steadyrate)
    arrivals | awk -v f="${1:?from}" -v e="${2:?to}" '$1 >= f && $1 < e {if (!n++) a = $1; b = $1}
        END {printf "%.2f\n", (n > 1 && b > a ? (n - 1) * 1000 / (b - a) : 0)}'
    ;;
shares)
    awk -v f="${1:?from}" -v e="${2:?to}" '$1 >= f && $1 < e {c[$5]++} END {for (u in c) print c[u], u}' "$log" | sort -n
    ;;
status)
    awk -v s="${1:?status}" '$2 == s {print $1}' "$log" | sort -n
    ;;
*)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
