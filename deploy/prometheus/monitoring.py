#!/usr/bin/env python3
"""Checks of the monitoring files against the documented metric list (metrics.txt).

  monitoring.py check METRICS ALERTS TESTS DASHBOARD HPA README
      the offline checks of check.sh: every metric, label and enumerated value the alert rules,
      the dashboard and the HPA use is documented; alert labels, annotations and tests; the
      dashboard's structure. Prints each problem and exits 1 if there is one.
  monitoring.py series ALERTS DASHBOARD
      the series names the rules and the dashboard query (a histogram's as _bucket, _sum or
      _count), one a line.
  monitoring.py conventions METRICS SCRAPE
      a real /metrics page against the list: every family documented with its type and labels,
      every documented one present (optional ones may be absent), enumerated labels complete,
      histograms cumulative with +Inf equal to _count.
"""
import json
import re
import sys

import yaml

errors = []


def err(msg):
    errors.append(msg)


# --- The documented list ---------------------------------------------------------------

COMMON_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def load_documented(path):
    """load_documented reads metrics.txt: name -> (type, {label: set of values, or None for any},
    optional)."""
    out = {}
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 4:
            err(f"{path}:{n}: expected 'name | type | labels | help'")
            continue
        name, mtype, labels, _ = fields
        kind = mtype.split()
        if not kind or kind[0] not in ("counter", "gauge", "histogram", "summary"):
            err(f"{path}:{n}: unknown type {mtype!r}")
            continue
        if name in out:
            err(f"{path}:{n}: {name} listed twice")
        lab = {}
        if labels != "-":
            for part in labels.split(";"):
                k, _, v = part.partition("=")
                lab[k] = None if v == "*" else set(v.split(","))
        out[name] = (kind[0], lab, "optional" in kind[1:])
    if not out:
        err(f"{path}: no metrics")
    return out


def resolve(documented, series):
    """resolve maps a series name to its documented metric (a histogram's _bucket, _sum and
    _count to the histogram) and the labels the suffix adds; (None, set()) if unknown."""
    if series in documented:
        return series, set()
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and documented.get(base, ("",))[0] == "histogram":
            return base, ({"le"} if suffix == "_bucket" else set())
    return None, set()


# --- PromQL, as far as names go ----------------------------------------------------------

NAME = re.compile(r"\b((?:flashcard|process)_[A-Za-z0-9_]*)\b")
SELECTOR = re.compile(r"\b((?:flashcard|process)_[A-Za-z0-9_]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def check_expr(documented, expr, where):
    """check_expr reports every unknown metric, label or enumerated value expr uses; returns the
    documented metrics it reads."""
    used = []
    for series in sorted(set(NAME.findall(expr))):
        base, extra = resolve(documented, series)
        if base is None:
            err(f"{where}: unknown metric {series} (not in metrics.txt)")
        else:
            used.append((base, extra))
    for series, body in SELECTOR.findall(expr):
        base, extra = resolve(documented, series)
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
                err(f'{where}: {series}{{{label}="{value}"}}: not one of {sorted(allowed[label])}')
    # Labels used to aggregate or match must belong to one of the metrics the expression reads.
    known = set(COMMON_LABELS)
    for base, extra in used:
        known |= set(documented[base][1]) | extra
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in known:
                err(f"{where}: label {label!r} in by/on(...) belongs to none of its metrics")
    return {base for base, _ in used}


def alert_rules(path):
    return [r for g in yaml.safe_load(open(path))["groups"] for r in g["rules"]]


def dashboard_targets(dash):
    """dashboard_targets yields (panel, target) for every query of the dashboard's panels,
    those inside collapsed rows included."""
    for p in dash.get("panels", []):
        for q in [p] + p.get("panels", []):
            for t in q.get("targets") or []:
                yield q, t


# --- check ---------------------------------------------------------------------------------

DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def check_alerts(documented, alerts_file, tests_file, readme_file):
    alerts = {}
    for r in alert_rules(alerts_file):
        name = r.get("alert") or r.get("record")
        where = f"{alerts_file}: {name}"
        check_expr(documented, r["expr"], where)
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

    # The runbook links land on headings of the README, once the README has the section.
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
        print("deploy/prometheus/check.sh: note: README.md has no 'Operating the fleet' section yet; "
              "runbook links not checked")
    return alerts


def check_grid(panels, dash_file):
    cells = {}
    for p in panels:
        where = f"{dash_file}: panel {p.get('title', '?')!r}"
        g = p.get("gridPos", {})
        try:
            x, y, w, h = (int(g[k]) for k in "xywh")
        except (KeyError, TypeError, ValueError):
            err(f"{where}: no gridPos x, y, w, h")
            continue
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > 24:
            err(f"{where}: gridPos {g} outside the 24-column grid")
        clash = next((cells[(cx, cy)] for cx in range(x, x + w) for cy in range(y, y + h) if (cx, cy) in cells), None)
        if clash:
            err(f"{where}: overlaps panel {clash!r}")
        cells.update({(cx, cy): p.get("title", "?") for cx in range(x, x + w) for cy in range(y, y + h)})


def check_dashboard(documented, dash_file):
    try:
        dash = json.load(open(dash_file))
    except ValueError as e:
        err(f"{dash_file}: not valid JSON: {e}")
        return 0, set()
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        err(f"{dash_file}: schemaVersion {dash.get('schemaVersion')!r} is not 36 or later")
    for key in ("title", "uid"):
        if not dash.get(key):
            err(f"{dash_file}: no {key}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err(f"{dash_file}: no template variable 'datasource' of type datasource, query prometheus")
    for v in variables.values():
        if v.get("type") == "query":
            if v.get("datasource") != DS_REF:
                err(f"{dash_file}: variable {v.get('name')} does not use ${{datasource}}")
            q = v.get("query")
            check_expr(documented, q.get("query", "") if isinstance(q, dict) else str(q),
                       f"{dash_file}: variable {v.get('name')}")
    panels = [q for p in dash.get("panels", []) for q in [p] + p.get("panels", []) if q.get("type") != "row"]
    if not panels:
        err(f"{dash_file}: no panels")
    ids = [p.get("id") for p in panels]
    for p in panels:
        where = f"{dash_file}: panel {p.get('title', '?')!r}"
        if not isinstance(p.get("id"), int) or ids.count(p.get("id")) > 1:
            err(f"{where}: id {p.get('id')!r} missing or not unique")
        if p.get("datasource") != DS_REF:
            err(f"{where}: datasource is not ${{datasource}}")
        refs = [t.get("refId") for t in p.get("targets") or []]
        if not refs:
            err(f"{where}: no queries")
        if len(set(refs)) != len(refs) or None in refs:
            err(f"{where}: refIds missing or not unique")
    check_grid([p for p in dash.get("panels", [])], dash_file)
    used = set()
    for p, t in dashboard_targets(dash):
        where = f"{dash_file}: panel {p.get('title', '?')!r} query {t.get('refId')}"
        if t.get("datasource", DS_REF) != DS_REF:
            err(f"{where}: does not use ${{datasource}}")
        if not t.get("expr"):
            err(f"{where}: no expr")
            continue
        used |= check_expr(documented, t["expr"], where)
    return len(panels), used


def cmd_check(metrics_file, alerts_file, tests_file, dash_file, hpa_file, readme_file):
    documented = load_documented(metrics_file)
    alerts = check_alerts(documented, alerts_file, tests_file, readme_file)
    npanels, used = check_dashboard(documented, dash_file)
    # The Kubernetes HPA's external metric, served by a metrics adapter from these series.
    for n, line in enumerate(open(hpa_file), 1):
        for name in NAME.findall(line.split("#")[0]):
            if resolve(documented, name)[0] is None:
                err(f"{hpa_file}:{n}: unknown metric {name} (not in metrics.txt)")
    if not errors:
        print(f"deploy/prometheus/check.sh: ok: {len(alerts)} alerts and {npanels} panels use only the "
              f"{len(documented)} documented metrics ({len(used)} of them on the dashboard)")


# --- series --------------------------------------------------------------------------------

def cmd_series(alerts_file, dash_file):
    exprs = [r["expr"] for r in alert_rules(alerts_file)]
    exprs += [t.get("expr", "") for _, t in dashboard_targets(json.load(open(dash_file)))]
    print("\n".join(sorted({n for e in exprs for n in NAME.findall(e)})))


# --- conventions ---------------------------------------------------------------------------

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def parse_scrape(path):
    """parse_scrape reads a text-format page: ({family: type}, [(name, {label: value}, value)])."""
    types, samples = {}, []
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if line.startswith("# TYPE "):
            _, _, fam, kind = line.split(" ", 3)
            types[fam] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if not m:
                err(f"{path}:{n}: cannot read the sample {line!r}")
                continue
            labels = dict(LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def cmd_conventions(metrics_file, scrape_file):
    documented = load_documented(metrics_file)
    types, samples = parse_scrape(scrape_file)
    for fam, kind in sorted(types.items()):
        if fam not in documented:
            err(f"served but not documented: {fam} ({kind})")
        elif documented[fam][0] != kind:
            err(f"{fam}: served as {kind}, documented as {documented[fam][0]}")
    for name, (kind, labels, optional) in sorted(documented.items()):
        if name not in types and not optional:
            err(f"documented but not served: {name}")
    seen = {}
    for name, labels, value in samples:
        base, extra = resolve(documented, name)
        if base is None:
            if name not in types:
                err(f"sample {name} has no TYPE line and is not documented")
            continue
        allowed = documented[base][1]
        for label, v in labels.items():
            if label not in allowed and label not in extra:
                err(f"{name}: undocumented label {label}")
            seen.setdefault((base, label), set()).add(v)
    for name, (kind, labels, _) in sorted(documented.items()):
        for label, values in labels.items():
            if name in types and values is not None and seen.get((name, label), set()) != values:
                err(f"{name}{{{label}}}: served {sorted(seen.get((name, label), set()))}, documented {sorted(values)}")
    # Histograms: cumulative buckets, +Inf bucket equal to _count, for each label set.
    for name, (kind, _, _) in documented.items():
        if kind != "histogram" or name not in types:
            continue
        groups = {}
        for s, labels, value in samples:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            if s == f"{name}_bucket":
                groups.setdefault(key, {}).setdefault("buckets", []).append((labels["le"], value))
            elif s == f"{name}_count":
                groups.setdefault(key, {})["count"] = value
        for key, g in groups.items():
            buckets = g.get("buckets", [])
            les = [float(le) for le, _ in buckets]
            vals = [v for _, v in buckets]
            where = f"{name}{dict(key)}"
            if not buckets or buckets[-1][0] != "+Inf":
                err(f"{where}: no +Inf bucket last")
            elif les != sorted(les) or vals != sorted(vals):
                err(f"{where}: buckets not in order or not cumulative")
            elif vals[-1] != g.get("count"):
                err(f"{where}: +Inf bucket {vals[-1]} != _count {g.get('count')}")
    if not errors:
        print(f"conventions: ok: {len(types)} families, {len(samples)} samples, all documented and all present")


def main(argv):
    commands = {"check": (cmd_check, 6), "series": (cmd_series, 2), "conventions": (cmd_conventions, 2)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.stderr.write(__doc__)
        return 2
    commands[argv[1]][0](*argv[2:])
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
