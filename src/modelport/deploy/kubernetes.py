"""Kubernetes manifests for the modelport image: Deployment, Service, HPA, PDB, kustomization.

Each function returns one manifest as a plain dict, ready for ``yaml.safe_dump``.
"""

from __future__ import annotations

from typing import Any

from .docker import UID, model_path
from .options import DeployOptions

__all__ = [
    "container",
    "deployment",
    "horizontal_pod_autoscaler",
    "kustomization",
    "labels",
    "manifests",
    "pod_disruption_budget",
    "service",
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
        # Keep serving while the endpoint is removed from the Service, then drain on SIGTERM.
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
