#!/usr/bin/env bash
# Offline checks of the monitoring files (no services, a few seconds; CTest deploy.prometheus):
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
# promtool and python3-yaml are installed from Debian's packages when run as root (or with sudo).
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

# promtool prints its findings on stdout and stderr: show them only on failure.
out=$(promtool check rules alerts.yml 2>&1) || fail "promtool check rules: $out"
ok "promtool check rules: $(grep -o '[0-9]* rules found' <<<"$out")"
out=$(promtool test rules alerts_test.yml 2>&1) || fail "promtool test rules: $out"
ok "promtool test rules alerts_test.yml"
out=$(promtool check config prometheus.yml 2>&1) || fail "promtool check config: $out"
ok "promtool check config prometheus.yml"

"$PY" - metrics.txt alerts.yml alerts_test.yml ../grafana/flashcard.json ../k8s/worker-hpa.yaml "$REPO/README.md" <<'EOF' ||
import json, re, sys, yaml

metrics_file, alerts_file, tests_file, dash_file, hpa_file, readme_file = sys.argv[1:7]
errors = []
def err(msg):
    errors.append(msg)

# --- The documented list: name -> (type, {label: set of values or None for any}).
documented = {}
for n, line in enumerate(open(metrics_file), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    fields = [f.strip() for f in line.split("|")]
    if len(fields) != 4:
        err(f"{metrics_file}:{n}: expected 'name | type | labels | help'")
        continue
    name, mtype, labels, _ = fields
    if mtype.split()[0] not in ("counter", "gauge", "histogram", "summary"):
        err(f"{metrics_file}:{n}: unknown type {mtype!r}")
    if name in documented:
        err(f"{metrics_file}:{n}: {name} listed twice")
    lab = {}
    if labels != "-":
        for part in labels.split(";"):
            k, _, v = part.partition("=")
            lab[k] = None if v == "*" else set(v.split(","))
    documented[name] = (mtype.split()[0], lab)
if not documented:
    err(f"{metrics_file}: no metrics")

COMMON_LABELS = {"job", "instance"}

def resolve(series):
    """resolve maps a series name to its documented metric (a histogram's _bucket/_sum/_count to it)."""
    if series in documented:
        return series, set()
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and documented.get(base, ("",))[0] == "histogram":
            return base, ({"le"} if suffix == "_bucket" else set())
    return None, set()

NAME = re.compile(r"\b((?:flashcard|process)_[A-Za-z0-9_]*)\b")
SELECTOR = re.compile(r"\b((?:flashcard|process)_[A-Za-z0-9_]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")

def check_expr(expr, where):
    """check_expr reports every unknown metric, label or enumerated value expr uses."""
    used = []
    for series in sorted(set(NAME.findall(expr))):
        base, extra = resolve(series)
        if base is None:
            err(f"{where}: unknown metric {series} (not in metrics.txt)")
        else:
            used.append((series, base, extra))
    for series, body in SELECTOR.findall(expr):
        base, extra = resolve(series)
        if base is None:
            continue
        allowed = documented[base][1]
        body = body.strip()
        pos = 0
        while pos < len(body):
            m = MATCHER.match(body, pos)
            if not m:
                err(f"{where}: cannot read the matchers of {series}{{{body}}}")
                break
            label, op, value = m.groups()
            pos = m.end()
            if label not in allowed and label not in COMMON_LABELS | extra:
                err(f"{where}: {series} has no label {label!r} (metrics.txt: {sorted(allowed) or 'none'})")
            elif op == "=" and allowed.get(label) is not None and value not in allowed[label]:
                err(f"{where}: {series}{{{label}=\"{value}\"}}: not one of {sorted(allowed[label])}")
    # Labels used to aggregate or match must belong to one of the metrics the expression reads.
    known = set(COMMON_LABELS)
    for _, base, extra in used:
        known |= set(documented[base][1]) | extra
    for group in GROUPING.findall(expr):
        for label in filter(None, (l.strip() for l in group.split(","))):
            if label not in known:
                err(f"{where}: label {label!r} in by/on(...) belongs to none of its metrics")
    return [b for _, b, _ in used]

# --- Alert rules.
rules = [r for g in yaml.safe_load(open(alerts_file))["groups"] for r in g["rules"]]
alerts = {}
for r in rules:
    name = r.get("alert") or r.get("record")
    where = f"{alerts_file}: {name}"
    check_expr(r["expr"], where)
    if "alert" not in r:
        continue
    alerts[name] = r
    if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
        err(f"{where}: severity label missing or not critical/warning/info")
    ann = r.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            err(f"{where}: no {key} annotation")
    if ann.get("runbook_url") != f"README.md#{name.lower()}":
        err(f"{where}: runbook_url is not README.md#{name.lower()}")
if not alerts:
    err(f"{alerts_file}: no alerts")

# Every alert fires in a test and stays quiet in another.
fires, quiet = set(), set()
for t in yaml.safe_load(open(tests_file))["tests"]:
    for case in t.get("alert_rule_test", []):
        (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
for name in sorted(alerts):
    if name not in fires:
        err(f"{tests_file}: no test where {name} fires")
    if name not in quiet:
        err(f"{tests_file}: no near-miss test where {name} does not fire")
for name in sorted((fires | quiet) - set(alerts)):
    err(f"{tests_file}: tests an alert {name} that alerts.yml does not define")

# The runbook links land on a heading of the README, once the README has the section.
readme = open(readme_file).read()
if re.search(r"^#+ Operating the fleet\s*$", readme, re.M):
    slugs = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.*)$", readme, re.M)}
    for name, r in sorted(alerts.items()):
        anchor = r["annotations"].get("runbook_url", "").partition("#")[2]
        if anchor not in slugs:
            err(f"{alerts_file}: {name}: README.md has no heading for #{anchor}")
    print("deploy/prometheus/check.sh: ok: runbook links land on README headings")
else:
    print("deploy/prometheus/check.sh: note: README.md has no 'Operating the fleet' section yet; runbook links not checked")

# --- The dashboard.
try:
    dash = json.load(open(dash_file))
except ValueError as e:
    err(f"{dash_file}: not valid JSON: {e}")
    dash = {"panels": [], "templating": {"list": []}, "schemaVersion": 0}
if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
    err(f"{dash_file}: schemaVersion {dash.get('schemaVersion')!r} is not 36 or later")
for key in ("title", "uid"):
    if not dash.get(key):
        err(f"{dash_file}: no {key}")
variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    err(f"{dash_file}: no template variable 'datasource' of type datasource, query prometheus")
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
for v in variables.values():
    if v.get("type") == "query":
        if v.get("datasource") != DS_REF:
            err(f"{dash_file}: variable {v.get('name')} does not use ${{datasource}}")
        q = v.get("query")
        check_expr(q.get("query", "") if isinstance(q, dict) else str(q), f"{dash_file}: variable {v.get('name')}")
ids, cells, used = set(), {}, set()
panels = dash.get("panels", [])
if not panels:
    err(f"{dash_file}: no panels")
for p in panels:
    title = p.get("title", "?")
    where = f"{dash_file}: panel {title!r}"
    if p.get("type") == "row":
        continue
    if p.get("id") in ids or not isinstance(p.get("id"), int):
        err(f"{where}: id {p.get('id')!r} missing or not unique")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    try:
        x, y, w, h = (int(g[k]) for k in "xywh")
    except (KeyError, TypeError, ValueError):
        err(f"{where}: no gridPos x, y, w, h")
        continue
    if x < 0 or w < 1 or x + w > 24 or h < 1 or y < 0:
        err(f"{where}: gridPos {g} outside the 24-column grid")
    for cx in range(x, x + w):
        for cy in range(y, y + h):
            if (cx, cy) in cells:
                err(f"{where}: overlaps panel {cells[(cx, cy)]!r}")
                break
            cells[(cx, cy)] = title
        else:
            continue
        break
    if p.get("datasource") != DS_REF:
        err(f"{where}: datasource is not ${{datasource}}")
    targets = p.get("targets") or []
    if not targets:
        err(f"{where}: no queries")
    refs = [t.get("refId") for t in targets]
    if len(set(refs)) != len(refs) or None in refs:
        err(f"{where}: refIds missing or not unique")
    for t in targets:
        if t.get("datasource", DS_REF) != DS_REF:
            err(f"{where}: query {t.get('refId')} does not use ${{datasource}}")
        if not t.get("expr"):
            err(f"{where}: query {t.get('refId')} has no expr")
            continue
        used |= set(check_expr(t["expr"], f"{where} query {t.get('refId')}"))

# --- The Kubernetes HPA's external metric (served by a metrics adapter from these series).
for n, line in enumerate(open(hpa_file), 1):
    for name in NAME.findall(line.split("#")[0]):
        if resolve(name)[0] is None:
            err(f"{hpa_file}:{n}: unknown metric {name} (not in metrics.txt)")

for e in errors:
    print(f"deploy/prometheus/check.sh: FAIL: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"deploy/prometheus/check.sh: ok: {len(alerts)} alerts and {len(panels)} panels use only the "
      f"{len(documented)} documented metrics ({len(used)} of them on the dashboard)")
EOF
    fail "names or structure (above)"
echo "deploy/prometheus/check.sh: ok"
