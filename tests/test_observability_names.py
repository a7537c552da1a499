"""Every metric the dashboards and alert rules query is one the code exports.

A renamed or dropped metric must break the build here, not silently blank a
panel or disarm an alert. Also: the rules file passes ``promtool check rules``
and the scrape config passes ``promtool check config``.

The helpers (collecting panel and rule expressions, finding metric names in
PromQL) are shared with ``test_observability_prometheus.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar._metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "prometheus" / "rules.yml"
SCRAPE_CONFIG = GRAFANA / "prometheus" / "prometheus.yml"

# Series Prometheus itself attaches to every target (not in any exposition).
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                        "scrape_series_added"}
# Grafana's built-in variables and what stands in for them when a query is sent to Prometheus directly.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "${__range}": "1h",
                "${__rate_interval}": "1m"}

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABELS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?")


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def all_panels(dashboard: dict):
    """Panels, including those nested inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(with_kind: bool = False) -> list[tuple]:
    """(``"<dashboard> / <panel> / <refId>"``, expr) for every panel target; with ``with_kind`` a third
    item says whether Grafana runs it as a range query (time-series panels) or an instant one."""
    out = []
    for name, dash in dashboards().items():
        for panel in all_panels(dash):
            for target in panel.get("targets", []):
                item = (f"{name} / {panel['title']} / {target['refId']}", target["expr"])
                out.append(item + (bool(target.get("range", True)),) if with_kind else item)
    return out


def variable_queries() -> list[tuple[str, str]]:
    """(``"<dashboard> / $<name>"``, query) for every Prometheus-backed template variable."""
    out = []
    for name, dash in dashboards().items():
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((f"{name} / ${var['name']}", query))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """(alert or record name, expr) for every rule in the rules file."""
    import yaml  # noqa: PLC0415 - only the observability tests need PyYAML

    doc = yaml.safe_load(RULES.read_text())
    return [(rule.get("alert") or rule["record"], rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana variables so Prometheus can evaluate the query directly.

    ``$job``/``$instance``-style template variables become ``.*`` (they only appear in ``=~`` matchers).
    """
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    for var, value in (values or {}).items():
        expr = expr.replace(f"${var}", value).replace(f"${{{var}}}", value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a regex tokenizer, good enough for our own queries)."""
    s = _STRING.sub('""', expr)
    s = _LABELS.sub("", s)
    s = _RANGE.sub("", s)
    s = _GROUPING.sub("", s)
    names = set()
    for m in _IDENT.finditer(s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    # A metric given as __name__ inside a matcher.
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def exported_names() -> set[str]:
    """Every sample name in the exposition of a fresh ``Metrics()`` (incl. _bucket/_sum/_count)."""
    text = generate_latest(Metrics().registry).decode()
    names = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    # A counter whose label values exist only at run time (epochgate_slot_requests_total{slot}: the table's
    # slots) has no sample before its first increment; its family is declared all the same.
    names |= {f"{family.name}_total" for family in text_string_to_metric_families(text)
              if family.type == "counter" and not family.samples}
    return names


def referenced() -> list[tuple[str, str, set[str]]]:
    """(where, expr, metric names) for every dashboard panel, template variable and rule."""
    out = []
    for where, expr in panel_queries() + rule_exprs():
        out.append((where, expr, metric_names(substitute(expr))))
    for where, query in variable_queries():
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        assert m, f"{where}: unsupported variable query {query!r}"
        out.append((where, query, metric_names(substitute(m.group(1)))))
    return out


# --- the tests ----------------------------------------------------------------------------------


def test_metric_name_extraction_sees_every_selector():
    expr = ('histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{x=~"$job", y="up"}[5m]))) / on (job) b '
            'or vector(0) and c offset 5m > bool 2 unless sum without (le) (d{__name__!=""})')
    assert metric_names(substitute(expr)) == {"a_bucket", "b", "c", "d"}


def test_grafana_has_dashboards_rules_and_scrape_config():
    assert {p.name for p in DASHBOARDS} >= {"epochgate-fleet.json", "epochgate-migrations.json"}
    assert RULES.is_file() and SCRAPE_CONFIG.is_file()
    assert len(panel_queries()) >= 20
    assert len(rule_exprs()) >= 6


def test_every_referenced_metric_is_exported():
    exported = exported_names() | PROMETHEUS_SYNTHETIC
    missing = {}
    for where, _expr, names in referenced():
        assert names, f"{where}: no metric found in the query"
        for name in names - exported:
            missing.setdefault(name, []).append(where)
    assert not missing, f"grafana/ queries metrics sidecar/_metrics.py does not export: {missing}"


def test_every_epochgate_token_in_grafana_is_exported():
    """Catches names outside queries too (descriptions, annotations, comments)."""
    exported = exported_names()
    base = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in exported}
    for path in sorted(GRAFANA.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".yml", ".yaml"}:
            for token in set(re.findall(r"\bepochgate_[a-z0-9_]+", path.read_text())):
                assert token in exported or token in base, f"{path.relative_to(ROOT)} mentions unknown metric {token}"


def test_dashboards_are_provisioning_ready():
    uids = set()
    for name, dash in dashboards().items():
        assert dash["uid"] not in uids and len(dash["uid"]) <= 40, name
        uids.add(dash["uid"])
        assert "id" not in dash or dash["id"] is None, f"{name}: a provisioned dashboard must not pin an id"
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert {"job", "instance"} <= set(variables), name
        ids = [p["id"] for p in all_panels(dash)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in all_panels(dash):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", f"{name} / {panel['title']}"
            assert panel.get("description"), f"{name} / {panel['title']}: no description"
            assert panel["targets"], f"{name} / {panel['title']}: no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", f"{name} / {panel['title']}"
                # Every panel honours the Job and Instance selectors.
                assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], \
                    f"{name} / {panel['title']}: query ignores $job/$instance"


def test_rules_carry_summary_description_severity():
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool not installed (scripts/test installs the Debian prometheus package)")
    return found


def test_promtool_check_rules():
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_alerts():
    """grafana/prometheus/rules_test.yml: each alert fires on its failure after its ``for:``, with its
    summary and description rendered, and stays quiet on the healthy series next to it."""
    tests = RULES.with_name("rules_test.yml")
    out = subprocess.run([_promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60,
                         cwd=tests.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    import yaml  # noqa: PLC0415

    tested = {case["alertname"] for test in yaml.safe_load(tests.read_text())["tests"]
              for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert tested == {name for name, _ in rule_exprs()}, "an alert without a firing unit test"


def test_scrape_config_jobs_match_the_rules():
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert doc["rule_files"] == ["rules.yml"]
    jobs = {c["job_name"] for c in doc["scrape_configs"]}
    assert jobs == {"epochgate-sidecar", "epochgate-controller"}
    assert 'job=~"epochgate-.*"' in RULES.read_text()  # EpochgateTargetDown covers exactly these jobs


def test_promtool_check_config():
    out = subprocess.run([_promtool(), "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
