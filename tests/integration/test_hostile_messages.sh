#!/usr/bin/env bash
# Hostile messages on the work queue are dead-lettered with a reason an operator can read, crash
# nothing and touch no other job's data. Published straight to the work exchange beside a normal job
# B: a 17 MiB message (over the 16 MiB limit), JSON nested 100,000 deep, invalid UTF-8, a NUL byte,
# a wrong content type (with a body that is not JSON, and with a valid batch), job ids that would reach into B's keys
# ("B}:job:{x", "B\u0000x") or be patterns (":" "*"), positions out of range or twice in a batch,
# 10,001 items, a not_before that is not a number or is years ahead, and a message id carrying a newline and an ESC
# sequence. Checks: each is in the dead-letter queue with its x-error; B completes with every item
# once in its output; no Redis key of a job other than B and the hostile messages' own valid job ids
# appears, B's record holds its N outcomes alone; the worker is alive and its log one line per event.
. "$(dirname "$0")/lib.sh"

N=30
B=job-b-$$
make_csv $N "$TMP/items.csv"
start_mock --latency-ms 2
export API_KEY=sk-hostile-messages WORKER_COUNT=4 RATE_LIMIT=0 BATCH_SIZE=10
start_worker 1
W1=$LAST_PID
wait_until 20 grep -q consuming "$TMP/worker-1.log" || fail "the worker did not start"
EX="$QUEUE_PREFIX.batches"
HDR='"schema":1,"batch":0,"attempt":1'
declare -A WANT # expected x-error text -> how many dead letters carry it
SENT=0

# publish ID FILE ENCODING CONTENT_TYPE WANT: publishes the bytes of FILE to the work exchange through
# the management API (ENCODING string or base64) and expects a dead letter whose x-error holds WANT.
publish() {
    local payload=$2
    [ "$3" = base64 ] && { base64 -w0 "$2" >"$2.b64"; payload=$2.b64; }
    jq -n --arg id "$1" --rawfile body "$payload" --arg enc "$3" --arg ct "$4" \
        '{properties: {delivery_mode: 2, message_id: $id, content_type: $ct}, routing_key: "", payload: $body,
          payload_encoding: $enc}' >"$TMP/publish.json"
    mgmt -X POST -H 'content-type: application/json' --data-binary @"$TMP/publish.json" \
        "$MGMT/exchanges/%2F/$EX/publish" | jq -e '.routed' >/dev/null || fail "publishing $1 was not routed"
    WANT[$5]=$((${WANT[$5]:-0} + 1))
    SENT=$((SENT + 1))
}
# body NAME TEXT: writes TEXT (printf format, so \xNN and \0 make bytes) to $TMP/NAME and echoes the path.
body() { printf "$2" >"$TMP/$1"; echo "$TMP/$1"; }
items() { seq "$1" "$2" | awk '{printf "%s{\"position\":%d,\"term\":\"x%d\"}", (NR > 1 ? "," : ""), $1, $1}'; }

# Oversized: a valid batch of its own job padded past 16 MiB. Too big for the management API's
# request limit: sent with amqp-publish (amqp-tools), the credentials in a file, never an argument.
if command -v amqp-publish >/dev/null; then
    { printf '{%s,"job_id":"hostile-big-%s","items":[{"position":1,"term":"x","pad":"' "$HDR" $$
      head -c $((17 * 1024 * 1024)) /dev/zero | tr '\0' 'x'; printf '"}]}'; } >"$TMP/big"
    url=${AMQP_URL#amqp://}
    creds=${url%%@*} hostport=${url#*@}
    hostport=${hostport%%/*} vhost=${url##*/}
    (umask 077; printf 'username:%s\npassword:%s\n' "${creds%%:*}" "${creds#*:}" >"$TMP/amqp.auth")
    amqp-publish -s "${hostport%%:*}" --port "${hostport##*:}" --vhost "$(printf '%b' "${vhost//%/\\x}")" \
        --authfile "$TMP/amqp.auth" -e "$EX" -r "" -p -C application/json <"$TMP/big" || fail "amqp-publish failed"
    rm -f "$TMP/amqp.auth" "$TMP/big"
    WANT["exceeds 16777216"]=1
    SENT=$((SENT + 1))
else
    log "amqp-tools not installed: the oversized message is left out (the decoder's unit test covers it)"
fi
# Nested 100,000 deep.
{ printf '{%s,"job_id":"hostile-deep-%s","items":[{"position":1,"term":"x","extra":{"e":' "$HDR" $$
  head -c 100000 /dev/zero | tr '\0' '['; head -c 100000 /dev/zero | tr '\0' ']'; printf '}}]}'; } >"$TMP/deep"
publish h-deep "$TMP/deep" string application/json "nesting too deep"
publish h-utf8 "$(body utf8 "{$HDR,\"job_id\":\"$B\",\"items\":[{\"position\":1,\"term\":\"\\xff\\xc0\\xaf\"}]}")" base64 \
    application/json "invalid UTF-8 at offset"
publish h-nul "$(body nul "{$HDR,\"job_id\":\"$B\",\"items\":[{\"position\":1,\"term\":\"x\"}]}\\0{}")" base64 \
    application/json "a NUL byte at offset"
publish h-ctype "$(body ctype "<batch job=\"$B\"><item position=\"1\"/></batch>")" string application/xml \
    "content type 'application/xml' is not application/json"
publish h-ctype2 "$(body ctype2 "{$HDR,\"job_id\":\"hostile-ctype-$$\",\"items\":[$(items 1 2)]}")" string text/plain \
    "content type 'text/plain' is not application/json"
# Job ids that would name B's keys or a pattern; B's own positions inside.
for id in "$B}:job:{x" "$B\\\\u0000x" "a:b" "*" "$B}" ""; do
    publish "h-id" "$(body id "{$HDR,\"job_id\":\"$id\",\"items\":[$(items 1 3)]}")" string application/json \
        "missing or invalid 'job_id'"
done
publish h-pos0 "$(body pos0 "{$HDR,\"job_id\":\"hostile-pos-$$\",\"items\":[{\"position\":0,\"term\":\"x\"}]}")" \
    string application/json "field 'position' = 0 is out of range"
publish h-posbig "$(body posbig "{$HDR,\"job_id\":\"hostile-pos-$$\",\"items\":[{\"position\":10000000000000,\"term\":\"x\"}]}")" \
    string application/json "field 'position' = 10000000000000 is out of range"
publish h-dup "$(body dup "{$HDR,\"job_id\":\"hostile-dup-$$\",\"items\":[$(items 1 2),{\"position\":1,\"term\":\"again\"}]}")" \
    string application/json "items hold position 1 more than once"
publish h-many "$(body many "{$HDR,\"job_id\":\"hostile-many-$$\",\"items\":[$(items 1 10001)]}")" string \
    application/json "'items' holds 10001 items"
publish h-nb "$(body nb "{$HDR,\"not_before\":\"soon\",\"job_id\":\"hostile-nb-$$\",\"items\":[$(items 1 2)]}")" \
    string application/json "field 'not_before' is not an integer"
publish h-nb2 "$(body nb2 "{$HDR,\"not_before\":4000000000000,\"job_id\":\"hostile-nb-$$\",\"items\":[$(items 3 4)]}")" \
    string application/json "field 'not_before' is "
publish $'h-msgid\n\x1b[2J' "$(body msgid 'not JSON at all')" string application/json "not JSON"
log "published $SENT hostile messages"

# Job B beside them.
prc=0
timeout 90 "$PRODUCER" "$TMP/items.csv" --job-id "$B" --wait --timeout 75s --output "$TMP/b.tsv" \
    --report "$TMP/b.json" >"$TMP/producer-b.log" 2>&1 || prc=$?
[ $prc = 0 ] || fail "job B: producer exit $prc"
all_dead() { [ "$(dead_messages | jq length)" -ge $SENT ]; }
wait_until 60 all_dead || fail "$(dead_messages | jq length) of $SENT hostile messages dead-lettered"
dead_messages >"$TMP/dead.json"
[ "$(jq length "$TMP/dead.json")" = $SENT ] || fail "$(jq length "$TMP/dead.json") dead letters, want $SENT"

# Each hostile message with its reason, dead-lettered as poison.
jq -r '.[].properties.headers["x-error"]' "$TMP/dead.json" >"$TMP/dead.reasons"
for want in "${!WANT[@]}"; do
    got=$(grep -cF -- "$want" "$TMP/dead.reasons" || true)
    [ "$got" -ge "${WANT[$want]}" ] || fail "$got dead letters say '$want', want ${WANT[$want]}: $(sort "$TMP/dead.reasons" | uniq -c | head -20)"
done
[ "$(jq -r '[.[].properties.headers["x-error-class"]] | unique | join(",")' "$TMP/dead.json")" = poison ] ||
    fail "hostile messages not dead-lettered as poison"
log "dead letters: $(sort "$TMP/dead.reasons" | sed 's/ at offset [0-9]*//; s/ = -\?[0-9]*//' | uniq -c | sort -rn | awk '{$1=$1; print}' | paste -sd';' | cut -c1-400)"

# Job B: every item once in its output, none dead-lettered, its record its own.
tsv_positions "$TMP/b.tsv" >"$TMP/b.pos"
[ "$(jq .items_succeeded "$TMP/b.json")" = $N ] || fail "job B: $(jq .items_succeeded "$TMP/b.json") of $N succeeded"
: >"$TMP/none.pos"
[ "$(jq -r --arg j "$B" '[.[].payload | fromjson? | select(.job_id == $j)] | length' "$TMP/dead.json")" = 0 ] ||
    fail "dead letters of job B"
seq 1 $N | diff -q - "$TMP/b.pos" >/dev/null || fail "job B: output positions are not 1..$N"
[ "$(tail -n +2 "$TMP/b.tsv" | wc -l)" = $((2 * N)) ] || fail "job B: duplicate or missing cards"
work_empty() { [ "$(queue_depth batches)" = 0 ]; }
wait_until 15 work_empty || fail "work queue not empty"
[ "$(redis-cli hlen "$QUEUE_PREFIX:job:{$B}:outcome")" = $N ] || fail "job B's record holds $(redis-cli hlen "$QUEUE_PREFIX:job:{$B}:outcome") outcomes, want $N"
[ "$(redis-cli hvals "$QUEUE_PREFIX:job:{$B}:outcome" | sort -u)" = ok ] || fail "job B's record holds outcomes other than ok"
[ "$(redis-cli hlen "$QUEUE_PREFIX:job:{$B}:failed")" = 0 ] || fail "job B's record holds failures"

# No Redis key of any other job: only B's and the hostile messages' own valid job ids; every other
# key one the worker or the producer always makes; the job registry names B alone.
redis-cli --scan --pattern "$QUEUE_PREFIX:*" >"$TMP/keys"
jobs="($B|hostile-(big|dup|many|pos|nb|ctype)-$$)"
ok_re="^$QUEUE_PREFIX:(job:\\{$jobs\\}:[a-z]+|cache:s[0-9]+:[0-9a-f]{64}|jobs|active|timeline:[0-9]+|workers|worker:[A-Za-z0-9._:-]+|rl:\\{[^{}*]*\\}:[a-z]+|breaker:\\{[^{}*]*\\})\$"
bad=$(grep -vE "$ok_re" "$TMP/keys" | head -5 || true)
[ -z "$bad" ] || fail "Redis keys of another job, or unexpected: $bad"
case $(redis-cli type "$QUEUE_PREFIX:jobs") in
zset) redis-cli zrange "$QUEUE_PREFIX:jobs" 0 -1 ;;
set) redis-cli smembers "$QUEUE_PREFIX:jobs" ;;
hash) redis-cli hkeys "$QUEUE_PREFIX:jobs" ;;
esac >"$TMP/jobs"
[ "$(cat "$TMP/jobs")" = "$B" ] || fail "the job registry holds $(tr '\n' ' ' <"$TMP/jobs"), want $B alone"
log "Redis keys of jobs: $(grep -F ":job:" "$TMP/keys" | sed 's/.*:job:{\([^}]*\)}.*/\1/' | sort -u | paste -sd' ')"

# The worker is alive, and its log is one line per event (the hostile message id escaped).
kill -0 $W1 || fail "the worker died"
LINE_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z flashcard-worker\[[0-9]+\] (debug|info |warn |error) '
[ "$(grep -acvE "$LINE_RE" "$TMP/worker-1.log" || true)" = 0 ] ||
    fail "worker: lines that are not log lines: $(grep -avnE "$LINE_RE" "$TMP/worker-1.log" | head -3)"
grep -qaF "poison message 'h-msgid\\n\\x1b[2J'" "$TMP/worker-1.log" || fail "the hostile message id is not logged escaped"
! LC_ALL=C grep -qaP '[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]' "$TMP/worker-1.log" || fail "a control character in the log"
kill -TERM $W1
wait $W1 || fail "worker exit $? after SIGTERM"
log "ok"
