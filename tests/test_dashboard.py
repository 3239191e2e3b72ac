"""contrib/grafana/gatewayd.json and contrib/prometheus/gatewayd-rules.yml: every PromQL
expression in them names only metrics (and labels) a live gateway's /metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from conftest import GatewayFactory, openai_entry
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import Error, FakeUpstream, Stream, StreamThenCut

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "gatewayd.json"
RULES = ROOT / "contrib" / "prometheus" / "gatewayd-rules.yml"

#: PromQL's own words: functions, aggregations, operators, modifiers.
PROMQL = {
    *("sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile"),
    *("count_values", "group", "rate", "irate", "increase", "delta", "idelta", "deriv"),
    *("histogram_quantile", "time", "timestamp", "abs", "ceil", "floor", "round", "clamp_min"),
    *("clamp_max", "clamp", "label_replace", "label_join", "vector", "scalar", "absent"),
    *("avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time"),
    *("and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"),
    *("group_left", "group_right", "changes", "resets", "sort", "sort_desc", "label_values"),
}
DASH_KEY = "sk-dash-SECRET-1234"
AUTH = {"authorization": f"Bearer {DASH_KEY}"}

#: Labels the Prometheus server adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}


def dashboard_exprs() -> Iterator[str]:
    board = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for p in panels:
            for t in p.get("targets", []):
                yield t["expr"]
            yield from walk(p.get("panels", []))

    yield from walk(board["panels"])
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            q = var["query"]
            yield q["query"] if isinstance(q, dict) else q


def rule_exprs() -> Iterator[str]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr"} <= set(rule), rule
            yield rule["expr"]


def references(expr: str) -> tuple[set[str], dict[str, set[str]]]:
    """(metric names, label names used per metric) in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings hold no names
    text = re.sub(r"\$\w+", "", text)  # Grafana variables ($__rate_interval, $alias)
    labels: dict[str, set[str]] = {}
    for metric, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", text):
        labels.setdefault(metric, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    grouped: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        grouped.update(x.strip() for x in group.split(",") if x.strip())
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"label_values\(\s*([\w:]+)\s*,\s*\w+\s*\)", r"\1", bare)
    names = {
        w
        for w in re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", bare)
        if w not in PROMQL and not re.fullmatch(r"\d+[smhdwy]", w)
    }
    for name in names:
        labels.setdefault(name, set())
    labels["*grouped*"] = grouped
    return names, labels


def exported(text: str) -> dict[str, set[str]]:
    """Every series name /metrics can hold (with histogram/counter suffixes), with the
    label names seen on its samples."""
    out: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            out.setdefault(family.name + suffix, set())
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_files_parse_and_have_the_panels_and_alerts_asked_for() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for word in ("requests", "error", "latency", "first token", "overhead", "retries", "fallback"):
        assert word in titles
    for word in ("cooling", "tokens", "reactor lag"):
        assert word in titles
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {
        "GatewaydHighErrorRatio",
        "GatewaydAliasAllDeploymentsCoolingDown",
        "GatewaydReactorLag",
    } <= alerts


def test_references_reads_promql() -> None:
    names, labels = references(
        'sum by (alias) (rate(gatewayd_requests_total{alias=~"$alias",status=~"5.."}[5m]))'
        " / on(alias) histogram_quantile(0.9, sum by (le) (rate(x_bucket[$__rate_interval])))"
    )
    assert names == {"gatewayd_requests_total", "x_bucket"}
    assert labels["gatewayd_requests_total"] == {"alias", "status"}
    assert labels["*grouped*"] == {"alias", "le"}


def test_every_expression_uses_exported_metrics(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [
                openai_entry("a", upstream, input_cost_per_token=1e-6),
                openai_entry("b", upstream2),
            ],
            "general_settings": {"num_retries": 1, "fallbacks": [{"a": ["b"]}]},
            # A client key, so that the key and spend families have series too.
            "keys": [{"key": DASH_KEY, "name": "dash"}],
        }
    )
    # Traffic that fills every family: a retry, a fallback, a stream, a broken stream.
    upstream.enqueue(Error(503))
    upstream.enqueue(Error(503))
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"}, AUTH)[0] == 200
    upstream.enqueue(Stream(events=2))
    stream = json.dumps({**CHAT, "model": "a", "stream": True}).encode()
    headers = {"content-type": "application/json", **AUTH}
    assert raw(gw.port, "POST", "/v1/chat/completions", stream, headers)[0] == 200
    upstream.enqueue(StreamThenCut(events=2))
    raw(gw.port, "POST", "/v1/chat/completions", stream, headers)
    status, _, body = raw(gw.port, "GET", "/metrics")
    assert status == 200
    live = exported(body.decode())

    exprs = [*dashboard_exprs(), *rule_exprs()]
    assert len(exprs) >= 20
    all_labels = set().union(*live.values()) | TARGET_LABELS
    for expr in exprs:
        names, labels = references(expr)
        assert names, expr
        for name in names:
            assert name in live, f"{name} (in {expr!r}) is not exported"
            unknown = labels[name] - live[name] - TARGET_LABELS
            assert not unknown, f"{name} has no label(s) {unknown} (in {expr!r})"
        grouped = labels["*grouped*"] - all_labels - {"le"}
        assert not grouped, f"grouping by unknown label(s) {grouped} in {expr!r}"
