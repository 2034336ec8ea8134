"""The InferenceService: valid against KServe's CRD schema, with nothing Kubernetes would
prune, running the modelport image as a V2 custom predictor."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelport.deploy import Bundle, DeployOptions, build

SCHEMA = Path(__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.openapi.json"
"""KServe's InferenceService CRD schema (``schemas/README.md``: source and licence)."""


def _no_unknown_fields(schema: Any) -> Any:
    """The schema with every declared object closed: a field it does not name is an error
    (the API server would silently prune it)."""
    if isinstance(schema, dict):
        out = {k: _no_unknown_fields(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_no_unknown_fields(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = _no_unknown_fields(json.loads(SCHEMA.read_text())["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def load(bundle: Bundle) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (bundle.directory / "kserve" / "inferenceservice.yaml").read_text()
    )
    return doc


def test_inference_service_validates(
    kserve_bundle: Bundle, validator: jsonschema.Draft7Validator
) -> None:
    doc = load(kserve_bundle)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")


def test_validation_really_rejects_misplaced_fields(
    kserve_bundle: Bundle, validator: jsonschema.Draft7Validator
) -> None:
    # protocolVersion belongs to model specs; on a custom container it would be dropped.
    broken = copy.deepcopy(load(kserve_bundle))
    broken["spec"]["predictor"]["containers"][0]["protocolVersion"] = "v2"
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(load(kserve_bundle))
    broken["spec"]["predictor"]["minReplicas"] = "two"
    assert not validator.is_valid(broken)


def test_custom_predictor_speaks_v2(kserve_bundle: Bundle) -> None:
    predictor = load(kserve_bundle)["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    assert container["image"] == "registry.example.com/ml/iris:3"
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "command" not in container  # the image's entrypoint serves the baked-in model
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 10)
    assert (kserve_bundle.directory / "Dockerfile").is_file()


def test_mounted_model_comes_through_the_storage_initializer(
    iris_dir: Path, tmp_path: Path, validator: jsonschema.Draft7Validator
) -> None:
    bundle = build(iris_dir, "kserve", tmp_path / "b", DeployOptions(mount=True))
    doc = load(bundle)
    assert validator.is_valid(doc)
    container = doc["spec"]["predictor"]["containers"][0]
    assert {"name": "STORAGE_URI", "value": "pvc://iris-mlp-model/"} in container["env"]
    assert container["command"][:3] == ["modelport", "serve", "/mnt/models"]
