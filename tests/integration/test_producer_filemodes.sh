#!/usr/bin/env bash
# The spool OUTPUT.<job>.part holds the job's results: it is created readable by its owner only
# (0600) whatever the umask. The output and the report are created as any file is (0666 less the
# umask). A report that cannot be written in full is an error that is said.
. "$(dirname "$0")/lib.sh"

make_csv 3 "$TMP/items.csv"

# run_wait NAME UMASK ARGS...: publishes the dataset and waits 2 s (no worker runs): exit 1, timed out.
run_wait() {
    local name=$1 mask=$2
    shift 2
    RC=0
    (umask "$mask" && exec timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "$name-$$" --wait --timeout 2s "$@") \
        >"$TMP/$name.log" 2>&1 || RC=$?
}
mode() { stat -c %a "$1"; }

for case in 022:644 027:640 077:600 002:664; do
    mask=${case%:*} want=${case#*:}
    run_wait "m$mask" "$mask" --output "$TMP/out$mask.tsv" --report "$TMP/report$mask.json"
    [ "$RC" = 1 ] || fail "umask $mask: exit $RC, want 1 (timed out): $(tail -3 "$TMP/m$mask.log")"
    spool=$TMP/out$mask.tsv.m$mask-$$.part
    [ -e "$spool" ] || fail "umask $mask: no spool left"
    [ "$(mode "$spool")" = 600 ] || fail "umask $mask: spool mode $(mode "$spool"), want 600"
    [ "$(mode "$TMP/out$mask.tsv")" = "$want" ] || fail "umask $mask: output mode $(mode "$TMP/out$mask.tsv"), want $want"
    [ "$(mode "$TMP/report$mask.json")" = "$want" ] || fail "umask $mask: report mode $(mode "$TMP/report$mask.json")"
done

# A spool left by an older version, readable by others, is made private when a run continues it.
chmod 644 "$TMP/out022.tsv.m022-$$.part"
RC=0
(umask 022 && exec timeout 60 "$PRODUCER" "$TMP/items.csv" --job-id "m022-$$" --resume --wait --timeout 2s \
    --output "$TMP/out022.tsv") >"$TMP/resume.log" 2>&1 || RC=$?
[ "$RC" = 1 ] || fail "resumed wait: exit $RC, want 1: $(tail -3 "$TMP/resume.log")"
[ "$(mode "$TMP/out022.tsv.m022-$$.part")" = 600 ] || fail "the continued spool was left readable by others"

# A report that cannot be written in full (the disk is full) is an error, not a silent half report.
run_wait full 022 --report /dev/full
[ "$RC" = 1 ] || fail "--report /dev/full: exit $RC, want 1"
grep -q -- "--report: cannot write '/dev/full'" "$TMP/full.log" || fail "no message about the report: $(tail -3 "$TMP/full.log")"
log "ok"
