"""Kubernetes manifests for the modelport image: Deployment, Service, HPA, PDB, kustomization;
and, for clusters that run the Prometheus Operator and Grafana, a ServiceMonitor and a Grafana
dashboard of the server's metrics (``k8s/monitoring/``, applied on its own: a cluster without
the Operator has no ServiceMonitor kind, and ``kubectl apply -k k8s`` must work there).

Each function returns one manifest as a plain dict, ready for ``yaml.safe_dump`` (the
dashboard for ``json.dumps``).
"""

from __future__ import annotations

import re
from typing import Any

from . import gpu
from .docker import UID, model_path
from .options import DeployOptions

__all__ = [
    "container",
    "deployment",
    "grafana_dashboard",
    "horizontal_pod_autoscaler",
    "kustomization",
    "labels",
    "manifests",
    "monitoring",
    "pod_disruption_budget",
    "service",
    "service_monitor",
]

Manifest = dict[str, Any]
CONTAINER = "modelport"


def labels(options: DeployOptions, version: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels plus the user's own."""
    return {
        "app.kubernetes.io/name": str(options.name),
        "app.kubernetes.io/version": version[:63],
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/managed-by": "modelport",
        **options.labels,
    }


def _selector(options: DeployOptions) -> dict[str, str]:
    # Only the name: a selector is immutable, so it must not hold the version.
    return {"app.kubernetes.io/name": str(options.name)}


def _metadata(options: DeployOptions, version: str, name: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or options.name, "labels": labels(options, version)}
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(options: DeployOptions, model_dir: str) -> dict[str, Any]:
    """The server container: V2 health probes, resources, drain-aware preStop, locked down."""
    resources = {"cpu": options.cpu, "memory": options.memory}
    spec: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "http", "containerPort": options.http_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": options.grpc_port, "protocol": "TCP"},
        ],
        # The startup probe gives a large model time to load before liveness applies.
        "startupProbe": _probe("/v2/health/live", 5, 60),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "env": [{"name": "MODELPORT_THREADS", "value": str(options.threads)}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        # Keep serving while the endpoint is removed from the Service; SIGTERM then starts the
        # server's drain (its drain period included), all within --shutdown-timeout, which
        # terminationGracePeriodSeconds covers (docs/deploy-kubernetes.md#graceful-shutdown).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(options.pre_stop_seconds)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if options.mount:
        spec["volumeMounts"].append(
            {"name": "model", "mountPath": model_path(model_dir, options), "readOnly": True}
        )
    if options.gpus:
        spec["resources"]["limits"].update(gpu.resources(options.gpus))
        spec["env"] += gpu.container_env()
    return spec


def _volumes(options: DeployOptions) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if options.mount:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": f"{options.name}-model", "readOnly": True},
            }
        )
    return volumes


def deployment(options: DeployOptions, version: str, model_dir: str) -> Manifest:
    """The Deployment. It has no ``replicas``: the HPA owns the count, and a re-apply must not
    reset it."""
    pod_labels = labels(options, version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options, version),
        "spec": {
            "selector": {"matchLabels": _selector(options)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(options.http_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": options.termination_grace_seconds,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector(options)},
                        }
                    ],
                    "containers": [container(options, model_dir)],
                    "volumes": _volumes(options),
                    **(gpu.pod_spec() if options.gpus else {}),
                },
            },
        },
    }


def service(options: DeployOptions, version: str) -> Manifest:
    """A ClusterIP Service with the HTTP and gRPC ports, spreading over every ready replica."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options, version),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(options),
            "ports": [
                {
                    "name": "http",
                    "port": options.http_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": options.grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def horizontal_pod_autoscaler(options: DeployOptions, version: str) -> Manifest:
    """Scale on CPU (and queue depth, if asked) between ``replicas`` and ``max_replicas``;
    scale down slowly."""
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": options.target_cpu_percent},
            },
        }
    ]
    if options.queue_target is not None:
        # Served to the HPA by a custom-metrics adapter (docs/deploy-kubernetes.md).
        average = f"{round(options.queue_target * 1000)}m"
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "modelport_queue_depth"},
                    "target": {"type": "AverageValue", "averageValue": average},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options, version),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def pod_disruption_budget(options: DeployOptions, version: str) -> Manifest:
    """At most one replica down at a time for voluntary disruptions (node drains)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(options, version),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(options)}},
    }


def manifests(options: DeployOptions, version: str, model_dir: str) -> dict[str, Manifest]:
    """File name → manifest, in the order ``kubectl apply`` should see them."""
    return {
        "deployment.yaml": deployment(options, version, model_dir),
        "service.yaml": service(options, version),
        "hpa.yaml": horizontal_pod_autoscaler(options, version),
        "pdb.yaml": pod_disruption_budget(options, version),
    }


def kustomization(options: DeployOptions, resources: list[str]) -> Manifest:
    """A kustomization over ``resources``; ``kustomize edit set image`` retargets the image."""
    name, tag, digest = _split_image(str(options.image))
    entry = {"name": name, **({"digest": digest} if digest else {"newTag": tag} if tag else {})}
    doc: Manifest = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [entry],
    }
    if options.namespace:
        doc["namespace"] = options.namespace
    return doc


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an image reference."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        return name, tag, digest or None
    return name, None, digest or None


# -- monitoring: the Prometheus Operator and Grafana -------------------------------------------


def service_monitor(options: DeployOptions, version: str) -> Manifest:
    """A ``monitoring.coreos.com/v1`` ServiceMonitor: the Operator's Prometheus scrapes
    ``/metrics`` on the Service's ``http`` port of every ready pod."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": _selector(options)},
        "endpoints": [
            {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
        ],
    }
    if options.namespace:
        spec["namespaceSelector"] = {"matchNames": [options.namespace]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(options, version),
        "spec": spec,
    }


DASHBOARD_SCHEMA_VERSION = 39
"""Grafana's dashboard JSON model version written (Grafana 10.4 and 11 read it as is)."""
_SEL = 'namespace=~"$namespace", model=~"$model"'
"""The dashboard's variables as label matchers (``namespace`` is the Operator's target label;
``.*`` also matches a series without it)."""
_RATE = "[$__rate_interval]"
_OK = 'status=~"200|OK"'


def _by(expr: str, labels: str = "model, version") -> str:
    return f"sum by ({labels}) ({expr})"


def _quantile(q: float, metric: str) -> str:
    inner = _by(f"rate({metric}_bucket{{{_SEL}}}{_RATE})", "le, model, version")
    return f"histogram_quantile({q}, {inner})"


# Panel: (title, unit, [(PromQL, legend)], type, description)
_Panel = tuple[str, str, list[tuple[str, str]], str, str]
_PANELS: tuple[tuple[str, tuple[_Panel, ...]], ...] = (
    (
        "Traffic",
        (
            (
                "Requests per second",
                "reqps",
                [
                    (
                        _by(f"rate(modelport_requests_total{{{_SEL}}}{_RATE})"),
                        "{{model}} v{{version}}",
                    )
                ],
                "timeseries",
                "Inference requests answered (both protocols), per model version.",
            ),
            (
                "Error ratio",
                "percentunit",
                [
                    (
                        _by(f'rate(modelport_requests_total{{{_SEL}, status!~"200|OK"}}{_RATE})')
                        + " / "
                        + _by(f"rate(modelport_requests_total{{{_SEL}}}{_RATE})"),
                        "{{model}} v{{version}}",
                    )
                ],
                "timeseries",
                "Share of requests not answered 200 (HTTP) or OK (gRPC).",
            ),
            (
                "Requests in flight",
                "short",
                [
                    (
                        'sum by (protocol) (modelport_requests_in_flight{namespace=~"$namespace"})',
                        "{{protocol}}",
                    )
                ],
                "timeseries",
                "Requests being handled, by protocol.",
            ),
        ),
    ),
    (
        "Latency and batching",
        (
            (
                "Latency p50 / p99",
                "s",
                [
                    (
                        _quantile(0.5, "modelport_request_duration_seconds"),
                        "p50 {{model}} v{{version}}",
                    ),
                    (
                        _quantile(0.99, "modelport_request_duration_seconds"),
                        "p99 {{model}} v{{version}}",
                    ),
                ],
                "timeseries",
                "Time from request received to response ready.",
            ),
            (
                "Queue wait p99",
                "s",
                [(_quantile(0.99, "modelport_queue_wait_seconds"), "{{model}} v{{version}}")],
                "timeseries",
                "Time a request waited in its model's batch queue.",
            ),
            (
                "Mean batch size",
                "short",
                [
                    (
                        _by(f"rate(modelport_batch_size_sum{{{_SEL}}}{_RATE})")
                        + " / "
                        + _by(f"rate(modelport_batch_size_count{{{_SEL}}}{_RATE})"),
                        "{{model}} v{{version}}",
                    )
                ],
                "timeseries",
                "Rows per framework call made by the dynamic batcher.",
            ),
            (
                "Queue depth",
                "short",
                [(_by(f"modelport_queue_depth{{{_SEL}}}"), "{{model}} v{{version}}")],
                "timeseries",
                "Requests waiting in a model's batch queue (the HPA's optional signal).",
            ),
        ),
    ),
    (
        "Versions",
        (
            (
                "Live version",
                "short",
                [(_by(f"modelport_live_version{{{_SEL}}}") + " > 0", "{{model}} v{{version}}")],
                "stat",
                "The version that answers requests naming none.",
            ),
            (
                "Canary share",
                "percent",
                [(_by(f"modelport_canary_percent{{{_SEL}}}"), "{{model}} v{{version}}")],
                "timeseries",
                "Share of requests sent to the canary version.",
            ),
            (
                "Shadow agreement",
                "percentunit",
                [(_by(f"modelport_shadow_agreement_ratio{{{_SEL}}}"), "{{model}} v{{version}}")],
                "timeseries",
                "Share of mirrored requests whose shadow answer matched the live one.",
            ),
            (
                "Shadow requests",
                "reqps",
                [
                    (
                        _by(
                            f"rate(modelport_shadow_requests_total{{{_SEL}}}{_RATE})",
                            "model, version, outcome",
                        ),
                        "{{model}} v{{version}} {{outcome}}",
                    )
                ],
                "timeseries",
                "Requests mirrored to the shadow version: agreed, disagreed, error, dropped.",
            ),
            (
                "Swaps and failed versions",
                "short",
                [
                    (
                        _by(f"increase(modelport_version_swaps_total{{{_SEL}}}{_RATE})", "model"),
                        "swaps {{model}}",
                    ),
                    (
                        _by(f"modelport_version_failed{{{_SEL}}}", "model, version"),
                        "failed {{model}} v{{version}}",
                    ),
                ],
                "timeseries",
                "Changes of live version, and versions whose last load or warm-up failed.",
            ),
        ),
    ),
    (
        "Prediction log",
        (
            (
                "Records per second",
                "short",
                [
                    (
                        _by(
                            'rate(modelport_prediction_log_records_total{namespace=~"$namespace"}'
                            f"{_RATE})",
                            "outcome",
                        ),
                        "{{outcome}}",
                    )
                ],
                "timeseries",
                "Predictions the log wrote, spooled, replayed, lost or sampled out.",
            ),
            (
                "Log database up",
                "short",
                [('min(modelport_prediction_log_db_up{namespace=~"$namespace"})', "up")],
                "stat",
                "0 while any server cannot reach the log database (rows are spooled).",
            ),
        ),
    ),
)


def _panel(panel_id: int, panel: _Panel, x: int, y: int, width: int) -> dict[str, Any]:
    title, unit, queries, kind, description = panel
    out: dict[str, Any] = {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }
    if kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    else:  # a stat: the last value; the live version is read from its series' name
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "name" if "version" in legend_labels(queries) else "value",
            "colorMode": "value",
        }
    return out


def legend_labels(queries: list[tuple[str, str]]) -> set[str]:
    """The labels the legends of ``queries`` name (``{{version}}``)."""
    return {label for _, legend in queries for label in re.findall(r"{{(\w+)}}", legend)}


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def grafana_dashboard(options: DeployOptions) -> dict[str, Any]:
    """A Grafana dashboard of the server's metrics (the names ``/metrics`` exports): traffic,
    errors, latency, batching, queues, versions (live, canary, shadow) and the prediction log,
    per model version; variables for the data source, namespace and model."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row in _PANELS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        y += 1
        width = 24 // len(row) if len(row) <= 4 else 6
        for k, panel in enumerate(row):
            x = (k * width) % 24
            panels.append(_panel(len(panels) + 1, panel, x, y + (k * width) // 24 * 8, width))
        y += ((len(row) * width + 23) // 24) * 8
    name = str(options.name)
    return {
        "uid": f"modelport-{name}"[:40],
        "title": f"modelport: {name}",
        "description": "Requests, errors, latency, batching, queues and versions of a "
        "modelport server (written by modelport build --target kubernetes).",
        "tags": ["modelport"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": DASHBOARD_SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _variable(
                    "namespace", "Namespace", "label_values(modelport_requests_total, namespace)"
                ),
                _variable(
                    "model",
                    "Model",
                    'label_values(modelport_requests_total{namespace=~"$namespace"}, model)',
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def monitoring(options: DeployOptions, version: str) -> dict[str, Any]:
    """``k8s/monitoring/`` file name → content: the ServiceMonitor, the dashboard (JSON), and
    a kustomization that applies the first and puts the second in a ConfigMap labelled for
    Grafana's dashboard sidecar (``grafana_dashboard: "1"``, as kube-prometheus-stack uses)."""
    config_map = {
        "name": f"{options.name}-grafana-dashboard",
        "files": ["grafana-dashboard.json"],
        "options": {
            "labels": {"grafana_dashboard": "1", **labels(options, version)},
            "disableNameSuffixHash": True,
        },
    }
    kustomize: Manifest = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["servicemonitor.yaml"],
        "configMapGenerator": [config_map],
    }
    if options.namespace:
        kustomize["namespace"] = options.namespace
    return {
        "servicemonitor.yaml": service_monitor(options, version),
        "grafana-dashboard.json": grafana_dashboard(options),
        "kustomization.yaml": kustomize,
    }
