"""
The monitoring files in deploy/ hold together with the nodes' metrics.

- C{deploy/prometheus/alerts.yml}: each rule is complete (alert, expr, for,
  a severity, a summary), and its expression names only metrics and labels
  the nodes' C{/metrics} shows (L{CONTRACT}, the list docs/metrics.md gives).
- C{deploy/grafana/wazuhcluster.json}: a Grafana dashboard with a uid,
  unique panel ids, panels that do not overlap, each on the C{$datasource}
  variable, whose queries name only those metrics and labels and only
  variables the dashboard defines.
- C{deploy/prometheus/prometheus.yml}: scrapes every 15 s the job the alerts
  expect, with alerts.yml as its rule file.
- With promtool (Debian: apt-get install prometheus), C{promtool check
  rules} and C{check config} accept the files, the dashboard's queries parse
  as PromQL, and the alerts pass their unit tests (tests/unit/alerts_test.yml:
  each fires when it should and not when it should not).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
ALERTS = REPOSITORY / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPOSITORY / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPOSITORY / "deploy" / "grafana" / "wazuhcluster.json"
ALERTS_TESTS = Path(__file__).resolve().parent / "alerts_test.yml"

#: The metrics a node shows (docs/metrics.md): name to (type, labels).
#: Prometheus adds C{up} and the C{job} and C{instance} labels.
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels))
    for name, kind, labels in [
        # The master's.
        ("wazuhcluster_workers_connected", "gauge", ()),
        ("wazuhcluster_integrity_syncs_total", "counter", ("worker", "result")),
        ("wazuhcluster_integrity_sync_duration_seconds", "histogram", ("worker",)),
        ("wazuhcluster_files_sent_total", "counter", ("worker",)),
        ("wazuhcluster_bytes_sent_total", "counter", ("worker",)),
        ("wazuhcluster_keepalive_age_seconds", "gauge", ("worker",)),
        ("wazuhcluster_agents", "gauge", ("status",)),
        ("wazuhcluster_agent_info_updates_total", "counter", ("worker",)),
        ("wazuhcluster_api_requests_total", "counter", ("method", "code")),
        ("wazuhcluster_api_request_duration_seconds", "histogram", ()),
        # The worker's.
        ("wazuhcluster_master_connected", "gauge", ()),
        ("wazuhcluster_reconnects_total", "counter", ()),
        ("wazuhcluster_last_sync_timestamp_seconds", "gauge", ()),
        ("wazuhcluster_files_received_total", "counter", ()),
        # Every node's.
        ("wazuhcluster_reactor_lag_seconds", "histogram", ()),
        ("wazuhcluster_threadpool_queue_length", "gauge", ()),
        ("wazuhcluster_threadpool_busy_threads", "gauge", ()),
        ("wazuhcluster_node_info", "gauge", ("node", "cluster", "type", "version")),
        ("process_resident_memory_bytes", "gauge", ()),
        ("process_virtual_memory_bytes", "gauge", ()),
        ("process_cpu_seconds_total", "counter", ()),
        ("process_open_fds", "gauge", ()),
        ("process_max_fds", "gauge", ()),
        ("process_start_time_seconds", "gauge", ()),
        # Prometheus's, for each target.
        ("up", "gauge", ()),
    ]
}

#: The values some labels take.
LABEL_VALUES = {
    "result": {"in_sync", "sent", "failed"},
    "status": {"Active", "Disconnected", "Never connected", "Pending"},
    "type": {"master", "worker"},
}

#: The labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

#: Metrics the dashboard may leave out.
NOT_ON_THE_DASHBOARD = {"process_virtual_memory_bytes", "process_start_time_seconds"}

PROMQL_FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max
    clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv exp
    floor histogram_quantile holt_winters hour idelta increase irate label_join label_replace last_over_time
    ln log10 log2 max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
""".split())

GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

#: Grafana's own variables (intervals).
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"})

_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_TOKEN = re.compile(
    rf"(?P<string>{_STRING})"
    rf"|(?P<selector>\{{(?:[^}}\"'`]|{_STRING})*\}})"
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<variable>\$\{?\w+(?::\w+)?\}?)"
    r"|(?P<number>\d[\w.]*)"
    r"|(?P<name>[A-Za-z_:][\w:]*)"
    r"|(?P<open>\()|(?P<close>\))"
    r"|(?P<other>\S)"
)
_MATCHER = re.compile(rf"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*,?")


class PromQL:
    """What a PromQL expression names: metrics with their matchers, labels, functions."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        #: (metric, [(label, operator, value)]) for each vector selector.
        self.selectors: list[tuple[str, list[tuple[str, str, str]]]] = []
        #: Labels of by/without/on/ignoring/group_left/group_right.
        self.groupingLabels: set[str] = set()
        self.functions: set[str] = set()
        tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
        i = 0
        while i < len(tokens):
            kind, text = tokens[i]
            following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
            if kind == "name" and text in GROUPING and following[0] == "open":
                i += 2
                while i < len(tokens) and tokens[i][0] != "close":
                    if tokens[i][0] == "name":
                        self.groupingLabels.add(tokens[i][1])
                    i += 1
            elif kind == "name" and (following[0] == "open" or following[1] in ("by", "without")):
                # A call, or an aggregation with its grouping first (sum by (le) (...)).
                self.functions.add(text)
            elif kind == "name" and text in KEYWORDS:
                pass
            elif kind == "name":
                matchers = []
                if following[0] == "selector":
                    matchers = self.matchers(following[1])
                    i += 1
                self.selectors.append((text, matchers))
            elif kind == "selector":
                raise AssertionError(f"a selector without a metric name in {expr!r}")
            i += 1

    @staticmethod
    def matchers(selector: str) -> list[tuple[str, str, str]]:
        body, found, position = selector[1:-1], [], 0
        while position < len(body.strip()):
            m = _MATCHER.match(body, position)
            assert m, f"cannot read the matchers {selector!r}"
            found.append((m.group(1), m.group(2), m.group(3)[1:-1]))
            position = m.end()
        return found

    @property
    def metrics(self) -> set[str]:
        return {name for name, _ in self.selectors}


def contractMetric(series: str) -> str | None:
    """The contract's metric that C{series} is, or one of whose histogram series it is."""
    if series in CONTRACT:
        return None if CONTRACT[series][0] == "histogram" else series
    for suffix in HISTOGRAM_SERIES:
        base = series[: -len(suffix)]
        if series.endswith(suffix) and CONTRACT.get(base, ("",))[0] == "histogram":
            return base
    return None


ALL_LABELS = frozenset().union(*(labels for _, labels in CONTRACT.values())) | TARGET_LABELS | {"le"}


def contractProblems(expr: str) -> list[str]:
    """What in C{expr} is not in the contract (an empty list if nothing)."""
    query = PromQL(expr)
    problems = [f"{name}() is not a PromQL function" for name in query.functions - PROMQL_FUNCTIONS]
    for series, matchers in query.selectors:
        metric = contractMetric(series)
        if metric is None:
            problems.append(f"{series} is not a metric the nodes show")
            continue
        labels = CONTRACT[metric][1] | TARGET_LABELS | ({"le"} if series.endswith("_bucket") else set())
        for label, operator, value in matchers:
            if label not in labels:
                problems.append(f"{series} has no label {label}")
            elif label in LABEL_VALUES and "$" not in value:
                values = value.split("|") if operator in ("=~", "!~") else [value]
                problems.extend(f'{series}: {label} is never "{v}"' for v in values if v not in LABEL_VALUES[label])
    problems.extend(f"no metric has the label {label}" for label in query.groupingLabels - ALL_LABELS)
    return problems


# The checker itself.


def test_promql_reading() -> None:
    query = PromQL(
        'histogram_quantile(0.99, sum by (worker, le) (rate(wazuhcluster_integrity_sync_duration_seconds_bucket'
        '{job=~"$job", worker="wazuhcluster_not_a_metric"}[$__rate_interval]))) > 0.5 '
        "and on (instance) up offset 5m"
    )
    assert query.metrics == {"wazuhcluster_integrity_sync_duration_seconds_bucket", "up"}
    assert query.functions == {"histogram_quantile", "sum", "rate"}
    assert query.groupingLabels == {"worker", "le", "instance"}
    assert query.selectors[0][1] == [("job", "=~", "$job"), ("worker", "=", "wazuhcluster_not_a_metric")]
    assert contractProblems(query.expr) == []


@pytest.mark.parametrize("expr, problem", [
    ("wazuhcluster_workers_conected", "wazuhcluster_workers_conected is not a metric"),
    ("node_cpu_seconds_total", "node_cpu_seconds_total is not a metric"),
    ("rate(wazuhcluster_reactor_lag_seconds[5m])", "wazuhcluster_reactor_lag_seconds is not a metric"),
    ("rate(wazuhcluster_files_sent_total_count[5m])", "wazuhcluster_files_sent_total_count is not a metric"),
    ('wazuhcluster_agents{state="Active"}', "wazuhcluster_agents has no label state"),
    ('wazuhcluster_agents{status="Connected"}', 'wazuhcluster_agents: status is never "Connected"'),
    ('wazuhcluster_integrity_syncs_total{result=~"sent|ok"}', 'result is never "ok"'),
    ("wazuhcluster_master_connected{le='1'}", "wazuhcluster_master_connected has no label le"),
    ("sum by (node_name) (up)", "no metric has the label node_name"),
    ("histogram_quantle(0.5, up)", "histogram_quantle() is not a PromQL function"),
])
def test_contract_problems_are_found(expr: str, problem: str) -> None:
    """The check sees a misspelt metric, a histogram without its suffix, a wrong label or value."""
    problems = contractProblems(expr)
    assert any(problem in p for p in problems), problems


# The alerts.


def alertRules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert isinstance(document, dict) and list(document) == ["groups"], "alerts.yml holds groups: only"
    rules = []
    for group in document["groups"]:
        assert group.get("name") and group.get("rules"), group
        rules.extend(group["rules"])
    return rules


def test_alert_rules_are_complete() -> None:
    rules = alertRules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert "record" not in rule, rule
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"].get("severity") in ("critical", "warning", "info"), rule
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule


def test_alerts_cover_the_cluster() -> None:
    """The alerts the deployment needs are there, each on the metric it is about."""
    expected = {
        "WazuhClusterNodeDown": "up",
        "WazuhClusterWorkerNotJoined": "wazuhcluster_workers_connected",
        "WazuhClusterWorkerGone": "wazuhcluster_keepalive_age_seconds",
        "WazuhClusterMasterNotConnected": "wazuhcluster_master_connected",
        "WazuhClusterIntegritySyncFailing": "wazuhcluster_integrity_syncs_total",
        "WazuhClusterKeepAliveOld": "wazuhcluster_keepalive_age_seconds",
        "WazuhClusterReactorLagHigh": "wazuhcluster_reactor_lag_seconds_bucket",
    }
    rules = {rule["alert"]: rule for rule in alertRules()}
    for alert, metric in expected.items():
        assert alert in rules, f"no {alert} in alerts.yml"
        assert metric in PromQL(rules[alert]["expr"]).metrics, (alert, rules[alert]["expr"])
    assert rules["WazuhClusterKeepAliveOld"]["for"] == "2m"


def test_alerts_use_only_the_metrics_the_nodes_show() -> None:
    for rule in alertRules():
        assert contractProblems(rule["expr"]) == [], (rule["alert"], rule["expr"])


def test_alert_annotations_name_labels_the_alert_has() -> None:
    for rule in alertRules():
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in ALL_LABELS, (rule["alert"], label)


def prometheusConfig() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def test_prometheus_config_scrapes_the_job_the_alerts_expect() -> None:
    config = prometheusConfig()
    assert config["global"]["scrape_interval"] == "15s"
    ruleFiles = [PROMETHEUS_CONFIG.parent / name for name in config["rule_files"]]
    assert ALERTS in ruleFiles
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    alertJobs = {
        value for rule in alertRules() for _, matchers in PromQL(rule["expr"]).selectors
        for label, _, value in matchers if label == "job"
    }
    assert alertJobs and alertJobs <= set(jobs), (alertJobs, set(jobs))
    for job in alertJobs:
        targets = [t for static in jobs[job]["static_configs"] for t in static["targets"]]
        assert len(targets) >= 2, "a master and workers"
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"


# The dashboard.


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def allPanels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from allPanels(panel.get("panels", []))


def dashboardQueries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for each panel target and each query variable."""
    for panel in allPanels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert m, f"variable {variable['name']}: {query!r} is not label_values(selector, label)"
            assert m.group(2) in ALL_LABELS, f"variable {variable['name']}: no metric has the label {m.group(2)}"
            yield f"variable {variable['name']}", m.group(1)


def asPromQL(expr: str) -> str:
    """A dashboard's expression as Prometheus gets it: intervals for Grafana's, any value for the others."""
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: "1m" if m.group(1).startswith("__") else ".*", expr)


def test_dashboard_is_a_dashboard() -> None:
    board = dashboard()
    assert board["title"] and isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), board["uid"]
    assert board.get("id") is None, "an exported dashboard carries no database id"
    ids = [panel["id"] for panel in allPanels(board["panels"])]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)


def test_dashboard_panels_use_the_datasource_variable() -> None:
    uses = ({"type": "prometheus", "uid": "${datasource}"}, {"type": "prometheus", "uid": "$datasource"})
    board = dashboard()
    for panel in allPanels(board["panels"]):
        assert panel.get("datasource") in uses, (panel["id"], panel["title"], panel.get("datasource"))
        for target in panel.get("targets", []):
            assert target.get("datasource", uses[0]) in uses, (panel["title"], target)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] in uses, variable


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def test_dashboard_queries_use_only_the_metrics_the_nodes_show() -> None:
    board = dashboard()
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_VARIABLES
    used: set[str] = set()
    queries = list(dashboardQueries())
    assert len(queries) > 20
    for where, expr in queries:
        assert contractProblems(expr) == [], (where, expr)
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert variable in defined, f"{where}: ${variable} is not a variable of the dashboard"
        used |= {contractMetric(series) or series for series in PromQL(expr).metrics}
    for panel in allPanels(board["panels"]):
        for target in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in ALL_LABELS, (panel["title"], label)
    missing = set(CONTRACT) - used - NOT_ON_THE_DASHBOARD
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


def test_dashboard_has_the_panels_operators_look_for() -> None:
    """The views the issue asks for, each found by what its query shows."""
    queries = [expr for _, expr in dashboardQueries()]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in queries)

    assert some(r"histogram_quantile\(.*by \((worker, le|le, worker)\).*integrity_sync_duration_seconds_bucket")
    assert some(r"histogram_quantile\(0\.5,.*by \((instance, le|le, instance)\).*reactor_lag_seconds_bucket")
    assert some(r"histogram_quantile\(0\.99,.*by \((instance, le|le, instance)\).*reactor_lag_seconds_bucket")
    assert some(r"sum by \(result\) \(rate\(wazuhcluster_integrity_syncs_total")
    assert some(r"sum by \(code\) \(rate\(wazuhcluster_api_requests_total")
    assert some(r"time\(\) - wazuhcluster_last_sync_timestamp_seconds")
    assert some(r"rate\(process_cpu_seconds_total")


# promtool.


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus): the files are not checked by it")
    return found


def runPromtool(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, arguments)], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_the_config() -> None:
    rules = runPromtool("check", "rules", ALERTS)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alertRules())} rules found" in rules.stdout + rules.stderr
    config = runPromtool("check", "config", PROMETHEUS_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above would see a mistake: an expression that does not parse."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("up{job=\"wazuhcluster\"} == 0", "up{job=\"wazuhcluster\" == 0", 1))
    assert broken.read_text() != ALERTS.read_text()
    result = runPromtool("check", "rules", broken)
    assert result.returncode != 0, result.stdout


def test_promtool_parses_the_dashboard_queries(tmp_path: Path) -> None:
    """Each of the dashboard's queries, as a recording rule, passes promtool check rules."""
    queries = list(dashboardQueries())
    rules = tmp_path / "dashboard.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": asPromQL(expr)} for n, (_, expr) in enumerate(queries)
    ]}]}))
    result = runPromtool("check", "rules", rules)
    output = result.stdout + result.stderr
    assert result.returncode == 0, "\n".join(f"query_{n}: {where}" for n, (where, _) in enumerate(queries)) + output


def test_promtool_alert_unit_tests() -> None:
    """Each alert fires on its trouble, and not on what merely looks like it (tests/unit/alerts_test.yml)."""
    result = runPromtool("test", "rules", ALERTS_TESTS)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "SUCCESS" in output, output
    tested = {case["alertname"] for test in yaml.safe_load(ALERTS_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alertRules()}, "every alert has its unit test"
