#!/usr/bin/env bash
# Static checks of the deployment files with tools that run on this machine (no container engine,
# cluster or systemd needed), in a few seconds:
#   - YAML: yamllint (strict) on compose, the Kubernetes manifests and the CI workflow;
#   - Kubernetes: k8s/check_schema.py passes every manifest and refuses each k8s/testdata/bad-*.yaml
#     with the messages its "# expect:" lines name; then the project's own rules (secrets as mounted
#     files, grace period above SHUTDOWN_TIMEOUT, readiness on /readyz, non-root, KEDA on the queue);
#   - compose: `docker-compose config`, mounts inside the repository, definitions loaded, users per role;
#   - systemd: `systemd-analyze verify` silent on the template unit (ExecStart pointed at a binary
#     that exists here), exposure score at most 2.0, stop timeout above SHUTDOWN_TIMEOUT;
#   - the Dockerfile: non-root numeric user, ENTRYPOINT flashcard-worker, no secret setting;
#   - every setting name any of these files sets is a setting of common/fc_config.c, and no file
#     holds a password (URLs carry CHANGE-ME placeholders at most).
# Missing tools (yamllint, docker-compose, python3-yaml, jq, systemd) are installed from Debian's
# packages when run as root (or with sudo); otherwise it fails naming them.
set -euo pipefail
cd "$(dirname "$0")"
REPO=$(cd .. && pwd)
BUILD=${FC_BUILD_DIR:-$REPO/build}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
YAMLLINT_CONF='{extends: default, rules: {line-length: {max: 120}, document-start: disable,
  comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}'
TMP=$(mktemp -d /tmp/deploy-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "deploy/check.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "deploy/check.sh: ok: $*"; }

# need_tools: installs the Debian packages of missing tools, or fails naming them.
need_tools() {
    local missing=() p sudo=""
    for p in yamllint docker-compose python3-yaml jq systemd; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then fail "install ${missing[*]} (Debian packages)"; fi
    echo "deploy/check.sh: installing ${missing[*]}" >&2
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "could not install ${missing[*]} (Debian packages)"
}

# secs DURATION: a setting's duration (500ms, 30s, 2m, 1h, bare seconds) in whole seconds, rounded up.
secs() {
    local d=$1
    case $d in
    *ms) echo $(((${d%ms} + 999) / 1000)) ;;
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
    esac
}

need_tools

# --- YAML syntax and style.
yamllint --strict -d "$YAMLLINT_CONF" container/compose.yaml k8s/*.yaml ci/*.yml || fail "yamllint"
ok "yamllint"

# --- Kubernetes: the schema of every manifest, and the checker's teeth.
$PY k8s/check_schema.py k8s/*.yaml >"$TMP/schema.out" 2>&1 || { cat "$TMP/schema.out" >&2; fail "k8s schema"; }
n=0
for bad in k8s/testdata/bad-*.yaml; do
    rc=0
    $PY k8s/check_schema.py "$bad" >"$TMP/bad.out" 2>&1 || rc=$?
    [ $rc = 1 ] || fail "check_schema.py accepted $bad (exit $rc): $(cat "$TMP/bad.out")"
    grep -q '^# expect: ' "$bad" || fail "$bad has no '# expect:' line"
    while IFS= read -r want; do
        grep -qF -- "$want" "$TMP/bad.out" || fail "$bad: expected '$want', got: $(cat "$TMP/bad.out")"
    done < <(sed -n 's/^# expect: //p' "$bad")
    n=$((n + 1))
done
ok "k8s schema: $(tail -1 "$TMP/schema.out" | sed 's/^check_schema.py: //'); $n broken examples refused"

# --- Kubernetes: the project's rules.
$PY k8s/check_schema.py --json k8s/*.yaml >"$TMP/k8s.json"
k8s() { jq -r "$@" "$TMP/k8s.json"; }
# Pod specs of the workloads: "kind/name" and the spec.
PODS='.[] | .object | select(.kind == "Deployment" or .kind == "Job") | {id: "\(.kind)/\(.metadata.name)", s: .spec.template.spec}'
# Secrets only as files: no key or URL in an environment variable or a ConfigMap.
bad=$(k8s "[.[] | .object | (select(.kind == \"ConfigMap\") | .data // {} | keys[]),
           (select(.kind == \"Deployment\" or .kind == \"Job\") | .spec.template.spec.containers[].env[]?.name)]
         | map(select(. == \"API_KEY\" or . == \"AMQP_URL\" or . == \"REDIS_URL\")) | unique | join(\" \")")
[ -z "$bad" ] || fail "k8s: $bad set in an environment; give secrets as files (*_FILE)"
# Every *_FILE setting names a file of a mounted Secret volume (mount path + an item of the Secret).
bad=$(k8s "$PODS | .id as \$id | .s as \$s | .s.containers[] as \$c | (\$c.env // [])[] | select(.name | endswith(\"_FILE\"))
         | . as \$e | [\$c.volumeMounts[]? as \$m | \$s.volumes[]? | select(.name == \$m.name and .secret)
                      | \$m.mountPath + \"/\" + (.secret.items[]?.path)] as \$files
         | select(\$files | index(\$e.value) | not) | \"\(\$id): \(\$e.name)=\(\$e.value)\"")
[ -z "$bad" ] || fail "k8s: not a file of a mounted Secret: $bad"
[ "$(k8s "$PODS | select(.id == \"Deployment/flashcard-worker\") | .s.containers[0].env[]
          | select(.name == \"API_KEY_FILE\") | .value")" = /run/secrets/flashcard/api_key ] ||
    fail "k8s: the worker's API_KEY_FILE is not /run/secrets/flashcard/api_key"
# Non-root pods; the worker ready on /readyz; its grace period above SHUTDOWN_TIMEOUT.
bad=$(k8s "$PODS | select(.s.securityContext.runAsNonRoot != true) | .id")
[ -z "$bad" ] || fail "k8s: $bad may run as root (securityContext.runAsNonRoot)"
[ "$(k8s "$PODS | select(.id == \"Deployment/flashcard-worker\") | .s.containers[0].readinessProbe.httpGet.path")" = /readyz ] ||
    fail "k8s: the worker's readiness probe is not /readyz"
grace=$(k8s "$PODS | select(.id == \"Deployment/flashcard-worker\") | .s.terminationGracePeriodSeconds // 30")
shutdown=$(k8s '[.[] | .object | select(.kind == "ConfigMap" and .metadata.name == "flashcard-worker") | .data.SHUTDOWN_TIMEOUT]
                + [.[] | .object | select(.kind == "Deployment") | .spec.template.spec.containers[0].env[]?
                   | select(.name == "SHUTDOWN_TIMEOUT") | .value] | map(select(.)) | last // "30s"')
[ "$grace" -gt "$(secs "$shutdown")" ] ||
    fail "k8s: terminationGracePeriodSeconds $grace is not above SHUTDOWN_TIMEOUT $shutdown"
# KEDA scales on the work waiting, in the shared queue and the jobs' own ones (a regular expression
# over the http protocol, summed); the HPA is the alternative (both target the worker).
[ "$(k8s '.[] | .object | select(.kind == "ScaledObject") | .spec.triggers[] | select(.type == "rabbitmq")
          | "\(.metadata.queueName) \(.metadata.mode) \(.metadata.useRegex) \(.metadata.operation) \(.metadata.protocol)"')" = \
  '^flashcard\.(batches|job\..+)$ QueueLength true sum http' ] ||
    fail "k8s: the ScaledObject does not scale on the length of flashcard.batches and the jobs' queues"
for kind in ScaledObject HorizontalPodAutoscaler PodDisruptionBudget; do
    [ "$(k8s "[.[] | .object | select(.kind == \"$kind\")] | length")" = 1 ] || fail "k8s: expected one $kind"
done
ok "k8s rules: secrets as files, non-root, /readyz, grace ${grace}s > SHUTDOWN_TIMEOUT $shutdown, KEDA, HPA, PDB"

# --- Compose.
(cd container && docker-compose -f compose.yaml config) >"$TMP/compose.yaml" 2>"$TMP/compose.err" ||
    { cat "$TMP/compose.err" >&2; fail "docker-compose config"; }
$PY - "$TMP/compose.yaml" "$REPO" <<'EOF' || fail "compose rules"
import os, sys, yaml
cfg, repo = yaml.safe_load(open(sys.argv[1])), os.path.realpath(sys.argv[2])
made = {os.path.join(repo, "deploy/container", d) for d in ("out", "secrets")}  # made by setup.sh
bad = []
def inside(path, what):
    p = os.path.realpath(path)
    if os.path.commonpath([p, repo]) != repo:
        bad.append(f"{what} {path} is outside the repository")
    elif not os.path.exists(p) and not any(p == m or p.startswith(m + "/") for m in made):
        bad.append(f"{what} {path} does not exist")
for name, svc in cfg["services"].items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("/") or src.startswith("."):
            inside(src, f"{name}: mount")
    env = svc.get("environment") or {}
    for k in ("API_KEY", "AMQP_URL", "REDIS_URL"):
        if k in env:
            bad.append(f"{name}: {k} in the environment; use {k}_FILE and a secret")
    secrets = [s["source"] if isinstance(s, dict) else s for s in svc.get("secrets", [])]
    for k, v in env.items():
        if k.endswith("_FILE") and not any(v == f"/run/secrets/{s}" for s in secrets):
            bad.append(f"{name}: {k}={v} is not one of its secrets")
for name, s in cfg.get("secrets", {}).items():
    inside(s["file"], f"secret {name}:")
rabbit = cfg["services"]["rabbitmq"]
if not any(":/etc/rabbitmq/definitions.json" in v for v in rabbit.get("volumes", [])):
    bad.append("rabbitmq: deploy/rabbitmq/definitions.json is not mounted")
want = {"worker": "worker_amqp_url", "producer": "producer_amqp_url"}
for name, secret in want.items():
    if cfg["services"][name]["environment"].get("AMQP_URL_FILE") != f"/run/secrets/{secret}":
        bad.append(f"{name}: AMQP_URL_FILE is not its own user's URL ({secret})")
print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
grep -q '^load_definitions = /etc/rabbitmq/definitions.json$' container/rabbitmq.conf ||
    fail "compose: rabbitmq.conf does not load the definitions"
grep -q '"name": "flashcard-worker"' rabbitmq/definitions.json 2>/dev/null ||
    fail "compose: deploy/rabbitmq/definitions.json lacks the flashcard-worker user"
grep -q 'flashcard-worker:' container/setup.sh && grep -q 'flashcard-producer:' container/setup.sh ||
    fail "compose: setup.sh does not make the worker's and the producer's URLs"
ok "compose: docker-compose config, mounts in the repository, definitions, secrets as files, a user per role"

# --- systemd: verify a copy whose ExecStart exists here (verify wants it executable).
unit=systemd/flashcard-worker@.service
exe=$BUILD/worker/flashcard-worker
[ -x "$exe" ] || exe=/bin/true
mkdir "$TMP/units"
sed "s#^ExecStart=/usr/local/bin/flashcard-worker#ExecStart=$exe#" "$unit" >"$TMP/units/flashcard-worker@.service"
grep -q "^ExecStart=$exe$" "$TMP/units/flashcard-worker@.service" || fail "systemd: ExecStart is not /usr/local/bin/flashcard-worker"
# verify only warns (exit 0) about unknown keys and bad values: any message is a failure.
out=$(systemd-analyze verify "$TMP/units/flashcard-worker@check.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
systemd-analyze security --offline=yes --threshold=20 "$TMP/units/flashcard-worker@.service" >"$TMP/security.out" 2>&1 ||
    fail "systemd: exposure above 2.0: $(grep 'Overall' "$TMP/security.out")"
for want in '^Restart=on-failure$' '^RestartSec=' '^KillSignal=SIGTERM$' '^EnvironmentFile=/etc/flashcard/%i.env$' \
    '^User=' '^NoNewPrivileges=yes$' '^ProtectSystem=strict$' '^PrivateTmp=yes$'; do
    grep -q "$want" "$unit" || fail "systemd: $unit lacks $want"
done
stop=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
shutdown=$(sed -n 's/^SHUTDOWN_TIMEOUT=//p' systemd/flashcard-worker.env.example)
[ "$(secs "$stop")" -gt "$(secs "${shutdown:-30s}")" ] ||
    fail "systemd: TimeoutStopSec $stop is not above SHUTDOWN_TIMEOUT ${shutdown:-30s}"
ok "systemd: verify, $(grep -o 'exposure level.*' "$TMP/security.out" | sed 's/exposure level for [^:]*: //'), TimeoutStopSec $stop > $shutdown"

# --- The Dockerfile.
df=container/Dockerfile
grep -qE '^USER [1-9][0-9]*(:[0-9]+)?$' "$df" || fail "Dockerfile: USER is not a numeric non-root user"
grep -q '^ENTRYPOINT \["flashcard-worker"\]$' "$df" || fail "Dockerfile: ENTRYPOINT is not flashcard-worker"
! grep -qE '^(ENV|ARG).*(KEY|PASS|SECRET|TOKEN|_URL)' "$df" || fail "Dockerfile: a secret setting is baked in"
for src in $(awk '$1 == "COPY" && $2 !~ /^--from/ {for (i = 2; i < NF; i++) print $i}' "$df"); do
    [ -e "../$src" ] || fail "Dockerfile copies '$src', which does not exist"
done
ok "Dockerfile: numeric user, entrypoint, no secret"

# --- Setting names: every one a file sets is a setting of common/fc_config.c.
grep -oE '^ *\{"[A-Z][A-Z0-9_]*",' ../common/fc_config.c | grep -oE '[A-Z][A-Z0-9_]*' | sort -u >"$TMP/settings"
[ -s "$TMP/settings" ] || fail "no settings found in common/fc_config.c"
{
    grep '^ENV' "$df" | grep -oE '[A-Z_][A-Z0-9_]*=' | tr -d '='
    $PY - "$TMP/compose.yaml" ci/flashcard-job.yml <<'EOF'
import sys, yaml
compose, ci = (yaml.safe_load(open(f)) for f in sys.argv[1:3])
for svc in compose["services"].values():
    print("\n".join(svc.get("environment") or {}))
def envs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "env" and isinstance(v, dict):
                print("\n".join(v))
            envs(v)
    elif isinstance(node, list):
        for v in node:
            envs(v)
envs(ci)
EOF
    k8s '.[] | .object | (select(.kind == "ConfigMap") | .data // {} | keys[]),
         (select(.kind == "Deployment" or .kind == "Job") | .spec.template.spec.containers[].env[]?.name)'
    sed -n 's/^\([A-Z][A-Z0-9_]*\)=.*/\1/p' systemd/flashcard-worker.env.example
    sed -n 's/^Environment=//p' "$unit" | tr ' ' '\n' | cut -d= -f1
} | sort -u >"$TMP/used"
# Not settings: the CI step's own variables.
grep -xE '[A-Z_][A-Z0-9_]*' "$TMP/used" | grep -vxE 'DATASET|AMQP_URL_SECRET|REDIS_URL_SECRET' >"$TMP/used-settings" ||
    true
unknown=$(comm -23 "$TMP/used-settings" "$TMP/settings" | tr '\n' ' ')
[ -z "$unknown" ] || fail "not settings of common/fc_config.c: $unknown"
ok "settings: $(wc -l <"$TMP/used-settings") names, all in common/fc_config.c"

# --- No credentials in any deployment file: URLs carry placeholders at most.
# (secrets/ and out/ are setup.sh's, never committed; only file and line are shown, never the match.)
creds=$(grep -rnoE --exclude-dir=secrets --exclude-dir=out --exclude-dir=testdata \
    '[a-z]+://[^:/@[:space:]]+:[^@[:space:]]+@' container k8s ci systemd README.md 2>/dev/null |
    grep -v ':CHANGE-ME@$' | cut -d: -f1,2 | tr '\n' ' ' || true)
[ -z "$creds" ] || fail "a password in a deployment file (file:line): $creds"
ok "no credentials in the files"
echo "deploy/check.sh: ok"
