"""``k8s/monitoring/``: the ServiceMonitor and the Grafana dashboard of ``modelport build
--target kubernetes``.

Neither Grafana's dashboard JSON nor the Prometheus Operator's CRDs come as a JSON schema from a
package registry (``@grafana/schema`` on npm holds TypeScript types only), so the checks are
structural: the dashboard's layout, variables and legends; and every metric and label its
queries name is one a real server exports, scraped from ``/metrics`` of a server that has
served traffic with a canary, a shadow and the prediction log on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelport.deploy import Bundle, DeployOptions, build
from modelport.deploy.kubernetes import DASHBOARD_SCHEMA_VERSION
from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.server.conftest import LiveServer

MONITORING = ("grafana-dashboard.json", "kustomization.yaml", "servicemonitor.yaml")
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
"""Labels Prometheus (and the Operator) add to every scraped series."""
UNCHARTED = {
    "modelport_shadow_seconds_total": "the shadow's latency is in the report; agreement charted",
    "modelport_version_failures_total": "modelport_version_failed is charted instead",
    "modelport_prediction_log_queued": "a transient; records/s and database up are charted",
    "modelport_prediction_log_spool_bytes": "likewise",
}
"""Metrics the server exports that the dashboard leaves out, and why."""
UNSEEN = {"modelport_version_failed"}
"""Declared by the server but without a sample unless a version failed: its labels cannot be
read from the scrape (they are model and version, server/admin.py)."""
LABELS = {"model", "version"}
SERVICE_MONITOR_SPEC = {
    "selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels",
    "sampleLimit", "targetLimit", "attachMetadata",
}  # fmt: skip
ENDPOINT = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "authorization",
    "bearerTokenSecret", "tlsConfig", "honorLabels", "relabelings", "metricRelabelings", "params",
}  # fmt: skip
"""Fields of ``monitoring.coreos.com/v1`` ServiceMonitor's spec and endpoints (a subset)."""
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


def _load(bundle: Bundle, name: str) -> Any:
    path = bundle.directory / "k8s" / "monitoring" / name
    text = path.read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@pytest.fixture(scope="module")
def dashboard(k8s_bundle: Bundle) -> dict[str, Any]:
    found: dict[str, Any] = _load(k8s_bundle, "grafana-dashboard.json")
    return found


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, PromQL, legend) of every query of the dashboard."""
    return [
        (p["title"], t["expr"], t.get("legendFormat", ""))
        for p in dashboard["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


# -- the files ---------------------------------------------------------------------------------


def test_monitoring_is_written_apart_from_what_kubectl_apply_k_applies(k8s_bundle: Bundle) -> None:
    folder = k8s_bundle.directory / "k8s" / "monitoring"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MONITORING)
    for name in MONITORING:
        assert f"k8s/monitoring/{name}" in k8s_bundle.files
    main = yaml.safe_load((k8s_bundle.directory / "k8s" / "kustomization.yaml").read_text())
    assert not any("monitoring" in r for r in main["resources"])  # no ServiceMonitor CRD needed
    kustomization = _load(k8s_bundle, "kustomization.yaml")
    assert kustomization["namespace"] == "models"
    for resource in kustomization["resources"]:
        assert (folder / resource).is_file()
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["grafana-dashboard.json"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's label
    assert generator["name"] == "iris-mlp-grafana-dashboard"


def test_service_monitor_scrapes_the_services_http_port(k8s_bundle: Bundle) -> None:
    monitor = _load(k8s_bundle, "servicemonitor.yaml")
    k8s = k8s_bundle.directory / "k8s"
    service = yaml.safe_load((k8s / "service.yaml").read_text())
    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    meta = monitor["metadata"]
    assert meta["name"] == service["metadata"]["name"] and meta["namespace"] == "models"
    assert meta["labels"]["team"] == "search"  # e.g. release=... for the Operator's selector
    spec = monitor["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["models"]}
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= ENDPOINT
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
    assert _DURATION.match(endpoint["interval"]) and _DURATION.match(endpoint["scrapeTimeout"])
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def test_without_a_namespace_the_monitor_watches_its_own(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "kubernetes", tmp_path / "b", DeployOptions())
    assert "namespaceSelector" not in _load(bundle, "servicemonitor.yaml")["spec"]
    assert "namespace" not in _load(bundle, "kustomization.yaml")


# -- the dashboard's structure -----------------------------------------------------------------


def test_dashboard_model_fields(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == DASHBOARD_SCHEMA_VERSION
    assert dashboard["title"] == "modelport: iris-mlp"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert "id" not in dashboard  # Grafana assigns it on import
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model"):
        assert variables[name]["type"] == "query" and variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_panels_tile_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert {"x", "y", "w", "h"} == set(g) and all(isinstance(v, int) for v in g.values())
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]
    kinds = {p["type"] for p in panels}
    assert kinds <= {"row", "timeseries", "stat"} and {"row", "timeseries", "stat"} <= kinds


def test_every_query_is_well_formed_and_its_legend_resolves(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["fieldConfig"]["defaults"]["unit"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    queries = _queries(dashboard)
    assert len(queries) >= 15
    for title, expr, legend in queries:
        for opening, closing in ("()", "{}", "[]"):
            depth = 0
            for char in expr:
                depth += (char == opening) - (char == closing)
                assert depth >= 0, (title, expr)
            assert depth == 0, (title, expr)
        used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__range", "__interval"}
        assert used <= variables, (title, used)
        grouped = {
            label.strip()
            for clause in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in clause.split(",")
        }
        for label in re.findall(r"{{(\w+)}}", legend):
            assert label in grouped - {"le"}, (title, label, expr)


# -- against what a real server exports --------------------------------------------------------


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, set[str]], set[str]]:
    """Sample name → its label names, and the names declared without a sample, from
    ``/metrics`` of a real server (models ``a`` and ``b`` in versions 1 and 2) after traffic,
    with a canary on ``a``, a shadow on ``b`` and the prediction log on."""
    from modelport.store.hook import attach

    root = tmp_path_factory.mktemp("scraped")
    for name in ("a", "b"):
        for version in ("1", "2"):
            (root / name / version).mkdir(parents=True)
            onnx_mlp(root / name / version / "model.onnx", [4, 8, 3], seed=int(version))
    db = tmp_path_factory.mktemp("scraped-log") / "log.db"
    settings = Settings(
        model_path=root, grpc_port=None, auth_token="t", admin=True, log_db=str(db),
        log_writer="thread",
    )  # fmt: skip
    dataplane = build_dataplane(settings)
    log = attach(dataplane, str(db), writer="thread", metrics_registry=dataplane.metrics.registry)
    try:
        with (
            LiveServer(dataplane, settings) as server,
            httpx.Client(
                base_url=server.url, headers={"authorization": "Bearer t"}, timeout=60
            ) as c,
        ):
            for path, body in (
                ("a/canary", {"version": "1", "percent": 50}),
                ("b/shadow", {"version": "1"}),
            ):
                assert c.post(f"/admin/models/{path}", json=body).status_code == 200
            row = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
            }
            for _ in range(20):
                for name in ("a", "b"):
                    assert c.post(f"/v2/models/{name}/infer", json=row).status_code == 200
            assert c.post("/v2/models/a/infer", json={"inputs": []}).status_code == 400
            log.flush(10)
            text = c.get("/metrics").text
    finally:
        log.close()
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, set[str]] = {}
    unseen: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
        if not family.samples:  # declared, nothing to report yet: its labels are unknown
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            for suffix in suffixes.get(family.type, [""]):
                unseen.add(family.name + suffix)
    return found, unseen


def test_every_metric_and_label_the_dashboard_queries_is_exported(
    dashboard: dict[str, Any], scraped: tuple[dict[str, set[str]], set[str]]
) -> None:
    samples, unseen = scraped
    assert unseen == UNSEEN
    for title, expr, _ in _queries(dashboard):
        names = set(re.findall(r"\bmodelport_\w+", expr))
        assert names, (title, expr)
        unknown = names - samples.keys() - unseen
        assert not unknown, f"{title}: the server exports no {sorted(unknown)}"
        for name, matchers in re.findall(r"\b(modelport_\w+)\{([^}]*)\}", expr):
            if name in UNSEEN:
                continue
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in samples[name] | TARGET_LABELS, (title, name, label)
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in clause.split(",")}
            known = set().union(*(samples[n] for n in names - UNSEEN))
            assert labels <= known | (LABELS if names & UNSEEN else set()), (title, labels)


def test_every_metric_the_server_exports_is_charted(
    dashboard: dict[str, Any], scraped: tuple[dict[str, set[str]], set[str]]
) -> None:
    charted = {
        n for _, expr, _ in _queries(dashboard) for n in re.findall(r"\bmodelport_\w+", expr)
    }
    exported = {n for n in [*scraped[0], *scraped[1]] if not n.endswith("_created")}
    missing = set()
    for name in exported:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in charted or family in UNCHARTED or name in UNCHARTED:
            continue
        if any(c.startswith(family + "_") for c in charted):  # a histogram charted by a part
            continue
        missing.add(name)
    assert not missing, f"exported but not on the dashboard: {sorted(missing)}"
    assert {"modelport_canary_percent", "modelport_shadow_agreement_ratio"} <= exported
    assert "modelport_prediction_log_records_total" in exported
