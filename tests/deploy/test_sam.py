"""The Lambda bundle: a cfn-lint-clean SAM template and a Lambda-base Dockerfile."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.deploy import Bundle, DeployOptions, build
from modelport.deploy.docker import python_version

from .conftest import tool
from .test_docker import hadolint, instructions


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cfn-lint"), "--format", "parseable", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )


def load(bundle: Bundle) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((bundle.directory / "template.yaml").read_text())
    return doc


def test_template_passes_cfn_lint(lambda_bundle: Bundle) -> None:
    result = cfn_lint(lambda_bundle.directory / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_really_lints(lambda_bundle: Bundle, tmp_path: Path) -> None:
    doc = load(lambda_bundle)
    doc["Resources"]["ModelFunction"]["Properties"]["MemorySize"] = 64  # below Lambda's minimum
    bad = tmp_path / "template.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = cfn_lint(bad)
    assert result.returncode != 0
    assert "less than the minimum of 128" in result.stdout


def test_template_is_an_image_function_behind_http(lambda_bundle: Bundle) -> None:
    fn = load(lambda_bundle)["Resources"]["ModelFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    assert fn["Properties"]["PackageType"] == "Image"
    assert fn["Properties"]["Events"]["Api"]["Type"] == "HttpApi"
    assert fn["Properties"]["FunctionUrlConfig"] == {"AuthType": "AWS_IAM"}
    assert fn["Metadata"] == {"Dockerfile": "Dockerfile", "DockerContext": ".", "DockerTag": "3"}


def test_lambda_dockerfile_bakes_the_model_and_names_the_handler(lambda_bundle: Bundle) -> None:
    steps = instructions(lambda_bundle.directory / "Dockerfile")
    assert steps[0] == ("FROM", f"public.ecr.aws/lambda/python:{python_version()}")
    assert ("ENV", "MODELPORT_MODEL=${LAMBDA_TASK_ROOT}/models/iris_mlp") in steps
    assert steps[-1] == ("CMD", '["modelport.aws_lambda.handler"]')
    assert (lambda_bundle.directory / "models/iris_mlp/model.onnx").is_file()
    # Lambda needs no HTTP server: the serve extra's server packages stay out.
    pins = (lambda_bundle.directory / "requirements.txt").read_text().lower()
    assert "uvicorn" not in pins and "grpcio" not in pins
    assert "orjson==" in pins and "onnxruntime==" in pins


def test_lambda_refuses_a_mounted_model(iris_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--mount is not available for lambda"):
        build(iris_dir, "lambda", tmp_path / "b", DeployOptions(mount=True))


def test_trusted_model_is_trusted_in_the_function(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "lambda", tmp_path / "b", DeployOptions(trust=True))
    steps = instructions(bundle.directory / "Dockerfile")
    assert ("ENV", "MODELPORT_TRUST=true") in steps
    assert hadolint(bundle.directory / "Dockerfile").returncode == 0
