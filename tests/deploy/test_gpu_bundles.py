"""Bundles for NVIDIA GPUs (``--gpus N``, or a model whose ``modelport.yaml`` says
``device: cuda``): CUDA wheels in the image, ``nvidia.com/gpu`` limits, a toleration and a node
selector in the Kubernetes and KServe manifests, validated like the CPU bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelport.deploy import Bundle, DeployOptions, build
from modelport.deploy.gpu import CUDA_INDEX, GPU_NODE_LABEL, gpu_requirements
from modelport.errors import ConfigError

from .test_kserve import SCHEMA, _no_unknown_fields
from .test_kubernetes import VERSIONS, resources

GPU_POD = {
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "nodeSelector": {GPU_NODE_LABEL: "true"},
}


@pytest.fixture(scope="module")
def cuda_dir(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model, its modelport.yaml asking for a GPU."""
    directory = tmp_path_factory.mktemp("gpu") / "iris_mlp"
    shutil.copytree(iris_dir, directory)
    (directory / "modelport.yaml").write_text('name: iris_mlp\nversion: "3"\ndevice: cuda\n')
    return directory


def bundle(target: str, source: Path, out: Path, **options: Any) -> Bundle:
    opts = DeployOptions(image="registry.example.com/ml/iris:3", **options)
    return build(source, target, out / target, opts)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_asks_for_the_gpus(iris_dir: Path, tmp_path: Path, version: str) -> None:
    built = bundle("kubernetes", iris_dir, tmp_path, gpus=2)
    docs = resources(built)
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)
    pod = docs["deployment.yaml"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]  # limits imply them
    assert {"name": "MODELPORT_DEVICE", "value": "cuda"} in container["env"]
    assert {k: pod[k] for k in GPU_POD} == GPU_POD
    assert any("NVIDIA GPUs (2 per replica)" in note for note in built.notes)


def test_kserve_asks_for_the_gpu(iris_dir: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(
        (
            bundle("kserve", iris_dir, tmp_path, gpus=1).directory
            / "kserve"
            / "inferenceservice.yaml"
        ).read_text()
    )
    validator = jsonschema.Draft7Validator(
        _no_unknown_fields(json.loads(SCHEMA.read_text())["openAPIV3Schema"])
    )
    assert [e.message for e in validator.iter_errors(doc)] == []
    predictor = doc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "MODELPORT_DEVICE", "value": "cuda"} in container["env"]
    assert {k: predictor[k] for k in GPU_POD} == GPU_POD


def test_the_image_gets_the_cuda_builds(iris_dir: Path, tmp_path: Path) -> None:
    built = bundle("docker", iris_dir, tmp_path, gpus=1)
    requirements = (built.directory / "requirements.txt").read_text().splitlines()
    assert "onnxruntime-gpu>=1.20" in requirements
    assert not any(line.startswith("onnxruntime==") for line in requirements)
    assert any(line.startswith("nvidia-ml-py") for line in requirements)
    dockerfile = (built.directory / "Dockerfile").read_text()
    assert "NVIDIA_VISIBLE_DEVICES=all" in dockerfile
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in dockerfile
    assert "MODELPORT_DEVICE=cuda" in dockerfile
    cpu = bundle("docker", iris_dir, tmp_path / "cpu")
    assert "NVIDIA" not in (cpu.directory / "Dockerfile").read_text()
    assert "onnxruntime-gpu" not in (cpu.directory / "requirements.txt").read_text()


def test_torch_comes_from_the_cuda_index() -> None:
    lines = [
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "numpy==2.2.0",
        "onnxruntime==1.32.0",
        "torch==2.13.0+cpu",
    ]
    assert gpu_requirements(lines) == [
        f"--extra-index-url {CUDA_INDEX}",
        "numpy==2.2.0",
        "onnxruntime-gpu>=1.20",
        "torch==2.13.0",
        "nvidia-ml-py>=12",
    ]


def test_a_model_that_says_device_cuda_gets_a_gpu(cuda_dir: Path, tmp_path: Path) -> None:
    built = bundle("kubernetes", cuda_dir, tmp_path)
    assert built.options.gpus == 1
    container = resources(built)["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_no_gpus_on_lambda_and_a_bounded_count(iris_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Lambda has no GPUs"):
        bundle("lambda", iris_dir, tmp_path, gpus=1)
    with pytest.raises(ConfigError, match="--gpus 17"):
        DeployOptions(gpus=17).checked()
