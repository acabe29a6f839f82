#!/usr/bin/env bash
# Offline checks of the monitoring files (no services, a few seconds; CTest deploy.prometheus):
#   - the YAML files pass yamllint (deploy/check.sh's rules);
#   - alerts.yml passes `promtool check rules`, and `promtool test rules alerts_test.yml` passes;
#     every alert has a severity, a summary, a description and a runbook_url into the README, and
#     a test where it fires and one where it does not;
#   - prometheus.yml passes `promtool check config` (which checks the rule file it loads too);
#   - ../grafana/flashcard.json is a dashboard: valid JSON, schemaVersion 36 or later, a
#     "datasource" variable of type prometheus used by every panel and query, unique panel ids,
#     panels inside the 24-column grid and not overlapping;
#   - every metric the rules, the dashboard and the Kubernetes HPA name, and every label their
#     selectors and aggregations use, is in metrics.txt (the documented list); a matched value of
#     an enumerated label is one of its values. Anything unknown fails, naming it and where.
# The last two are monitoring.py's (`monitoring.py check`); tests/integration/
# test_metrics_conventions.sh holds metrics.txt against a real worker's /metrics.
# promtool, yamllint and python3-yaml are installed from Debian's packages when run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")"
REPO=$(cd ../.. && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

fail() { echo "deploy/prometheus/check.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "deploy/prometheus/check.sh: ok: $*"; }

# need_tools: installs the Debian packages of missing tools, or fails naming them.
need_tools() {
    local missing=() sudo=""
    command -v promtool >/dev/null || missing+=(prometheus)
    "$PY" -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
    command -v yamllint >/dev/null || missing+=(yamllint)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then fail "install ${missing[*]} (Debian packages)"; fi
    echo "deploy/prometheus/check.sh: installing ${missing[*]}" >&2
    # RUNLEVEL=1: the package's scripts must not start a Prometheus server.
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "could not install ${missing[*]} (Debian packages)"
}

need_tools

# YAML style as deploy/check.sh has it.
yamllint --strict -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable,
  comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' alerts.yml alerts_test.yml prometheus.yml ||
    fail "yamllint"
ok "yamllint"

# promtool prints its findings on stdout and stderr: show them only on failure.
out=$(promtool check rules alerts.yml 2>&1) || fail "promtool check rules: $out"
ok "promtool check rules: $(grep -o '[0-9]* rules found' <<<"$out")"
out=$(promtool test rules alerts_test.yml 2>&1) || fail "promtool test rules: $out"
ok "promtool test rules alerts_test.yml"
out=$(promtool check config prometheus.yml 2>&1) || fail "promtool check config: $out"
ok "promtool check config prometheus.yml"

"$PY" monitoring.py check metrics.txt alerts.yml alerts_test.yml ../grafana/flashcard.json ../k8s/worker-hpa.yaml \
    "$REPO/README.md" ||
    fail "names or structure (above)"
echo "deploy/prometheus/check.sh: ok"
