#!/usr/bin/env bash
# Static checks of the deployment files, with the tools that run on this machine (no container
# engine or cluster needed): YAML syntax and shape, Kubernetes manifest fields, and that the
# Dockerfile copies only what exists and sets what the worker reads.
set -euo pipefail
cd "$(dirname "$0")"
fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
command -v yamllint >/dev/null || fail "yamllint is not installed (deploy/local/services.sh installs it)"
yamllint -d '{extends: relaxed, rules: {line-length: {max: 120}}}' container/compose.yaml k8s/*.yaml
for f in k8s/*.yaml; do
    grep -q '^apiVersion: ' "$f" && grep -q '^kind: ' "$f" || fail "$f lacks apiVersion/kind"
done
grep -q 'terminationGracePeriodSeconds: 45' k8s/worker.yaml || fail "worker grace period must outlast SHUTDOWN_TIMEOUT"
grep -q 'path: /readyz' k8s/worker.yaml || fail "worker readiness probe must use /readyz"
# Every COPY source in the Dockerfile exists in the repository.
for src in $(awk '$1 == "COPY" && $2 !~ /^--from/ {for (i = 2; i < NF; i++) print $i}' container/Dockerfile); do
    [ -e "../$src" ] || fail "Dockerfile copies '$src', which does not exist"
done
# The settings the container sets are settings the worker knows.
for v in $(grep '^ENV' container/Dockerfile | grep -o '[A-Z_]*=' | tr -d '='); do
    grep -q "\"$v\"" ../common/fc_config.c || fail "Dockerfile sets $v, which is not a setting"
done
for v in $(grep -o 'name: [A-Z_]*' k8s/*.yaml | awk '{print $2}' | sort -u); do
    grep -q "\"$v\"" ../common/fc_config.c || fail "a manifest sets $v, which is not a setting"
done
echo "deploy/check.sh: ok"
