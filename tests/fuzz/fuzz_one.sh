#!/usr/bin/env bash
# fuzz_one.sh BINARY NAME WORKDIR SEEDS [REGRESSIONS]: fuzzes one target for $FC_FUZZ_SECONDS (default 60)
# with libFuzzer. New inputs go to WORKDIR/corpus/NAME (the seed directories are only read), crashes to
# WORKDIR/artifacts/NAME/, the log to WORKDIR/NAME.log. Prints the one-line summary
#   fuzz NAME: N execs, cov C, ft F, corpus K
# and exits with libFuzzer's status (0 when nothing was found).
set -u
bin=$1 name=$2 work=$3 seeds=$4 regressions=${5:-}
secs=${FC_FUZZ_SECONDS:-60}
case $secs in '' | *[!0-9]*) echo "FC_FUZZ_SECONDS must be a number of seconds" >&2; exit 2 ;; esac
mkdir -p "$work/corpus/$name" "$work/artifacts/$name"
log=$work/$name.log
dirs=("$work/corpus/$name" "$seeds")
[ -n "$regressions" ] && [ -d "$regressions" ] && dirs+=("$regressions")
"$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$name/" "${dirs[@]}" >"$log" 2>&1
rc=$?
# The last status line (#N DONE/pulse/NEW ... cov: C ft: F corp: K/...) and the final stats.
last=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz $name: FAILED (exit $rc); the input is in $work/artifacts/$name/, the log in $log"
fi
echo "fuzz $name: ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
exit "$rc"
