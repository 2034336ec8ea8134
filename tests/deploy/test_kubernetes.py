"""Kubernetes manifests: valid against the real API schemas, and production-shaped."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelport.aws_lambda import LambdaHandler
from modelport.deploy import Bundle, DeployOptions, build

VERSIONS = ("1.28.0", "1.37.0")
"""The oldest Kubernetes still widely run, and the newest schemas kubernetes-validate has."""


def load(bundle: Bundle, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((bundle.directory / "k8s" / name).read_text())
    return doc


def resources(bundle: Bundle) -> dict[str, dict[str, Any]]:
    kustomization = load(bundle, "kustomization.yaml")
    return {name: load(bundle, name) for name in kustomization["resources"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(k8s_bundle: Bundle, version: str) -> None:
    docs = resources(k8s_bundle)
    assert sorted(d["kind"] for d in docs.values()) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_really_rejects_a_broken_manifest(k8s_bundle: Bundle) -> None:
    broken = copy.deepcopy(load(k8s_bundle, "deployment.yaml"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_sets_the_image(k8s_bundle: Bundle) -> None:
    k = load(k8s_bundle, "kustomization.yaml")
    on_disk = {p.name for p in (k8s_bundle.directory / "k8s").glob("*.yaml")}
    assert set(k["resources"]) == on_disk - {"kustomization.yaml"}
    assert k["namespace"] == "models"
    assert k["images"] == [{"name": "registry.example.com/ml/iris", "newTag": "3"}]


def test_deployment_probes_drain_and_security(k8s_bundle: Bundle) -> None:
    dep = load(k8s_bundle, "deployment.yaml")
    assert dep["metadata"]["namespace"] == "models"
    assert "replicas" not in dep["spec"]  # the HPA owns the count
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com/ml/iris:3"
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "grpc": 8081}
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = k8s_bundle.options.drain_seconds
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain  # then SIGKILL
    assert c["env"] == [{"name": "MODELPORT_THREADS", "value": "1"}]  # fits the 1-CPU limit
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "search"


def test_service_hpa_and_pdb_select_the_deployments_pods(k8s_bundle: Bundle) -> None:
    dep, svc = load(k8s_bundle, "deployment.yaml"), load(k8s_bundle, "service.yaml")
    hpa, pdb = load(k8s_bundle, "hpa.yaml"), load(k8s_bundle, "pdb.yaml")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {
        "http": "http",
        "grpc": "grpc",
    }
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_mounted_model_comes_from_a_read_only_claim(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "kubernetes", tmp_path / "b", DeployOptions(mount=True))
    dep = load(bundle, "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    mount = pod["containers"][0]["volumeMounts"][-1]
    assert mount == {"name": "model", "mountPath": "/models/iris_mlp", "readOnly": True}
    claim = next(v for v in pod["volumes"] if v["name"] == "model")["persistentVolumeClaim"]
    assert claim == {"claimName": "iris-mlp-model", "readOnly": True}
    for doc in resources(bundle).values():
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_image_digest_reference(iris_dir: Path, tmp_path: Path) -> None:
    image = "registry.example.com:5000/ml/iris@sha256:" + "a" * 64
    bundle = build(iris_dir, "kubernetes", tmp_path / "b", DeployOptions(image=image))
    assert load(bundle, "kustomization.yaml")["images"] == [
        {"name": "registry.example.com:5000/ml/iris", "digest": "sha256:" + "a" * 64}
    ]
    assert (
        load(bundle, "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
        == image
    )


def test_queue_depth_autoscaling(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "kubernetes", tmp_path / "b", DeployOptions(queue_target=2.5))
    hpa = load(bundle, "hpa.yaml")
    cpu, queue = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert queue == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "modelport_queue_depth"},  # the server's /metrics gauge
            "target": {"type": "AverageValue", "averageValue": "2500m"},
        },
    }
    for version in VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)


def test_the_queue_metric_is_one_the_server_exports(handler: LambdaHandler) -> None:
    # Through the same HTTP app `modelport serve` runs; /metrics is Prometheus text.
    event = {"version": "2.0", "rawPath": "/metrics", "requestContext": {"http": {"method": "GET"}}}
    result = handler(event)
    assert result["statusCode"] == 200
    assert 'modelport_queue_depth{model="iris_mlp",version="3"}' in result["body"]
