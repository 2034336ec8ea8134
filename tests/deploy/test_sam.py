"""The Lambda bundle: a cfn-lint-clean SAM template and a Lambda-base Dockerfile."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.aws_lambda import LambdaHandler
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
    assert fn["Properties"]["Events"]["Api"]["Properties"]["ApiId"] == {"Ref": "ModelApi"}
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


def test_http_api_needs_iam_auth_by_default(lambda_bundle: Bundle) -> None:
    doc = load(lambda_bundle)
    api = doc["Resources"]["ModelApi"]
    assert api["Type"] == "AWS::Serverless::HttpApi"
    assert api["Properties"]["Auth"] == {
        "EnableIamAuthorizer": True,
        "DefaultAuthorizer": "AWS_IAM",
    }
    assert "Parameters" not in doc  # nothing to type in, nothing open
    assert "${ModelApi}" in doc["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]
    assert "AWS_IAM" in doc["Outputs"]["ApiUrl"]["Description"]
    assert lambda_bundle.options.lambda_auth == "iam"
    assert any("SigV4" in note and "--lambda-auth public" in note for note in lambda_bundle.notes)


def test_cfn_lint_checks_the_authorizer(lambda_bundle: Bundle, tmp_path: Path) -> None:
    doc = load(lambda_bundle)
    doc["Resources"]["ModelApi"]["Properties"]["Auth"]["EnableIamAuthoriser"] = True
    bad = tmp_path / "template.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = cfn_lint(bad)
    assert result.returncode != 0 and "EnableIamAuthoriser" in result.stdout


@pytest.fixture(scope="module")
def token_bundle(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    out = tmp_path_factory.mktemp("token") / "b"
    return build(iris_dir, "lambda", out, DeployOptions(lambda_auth="token"))


def test_token_auth_template_passes_cfn_lint_and_hides_the_token(token_bundle: Bundle) -> None:
    result = cfn_lint(token_bundle.directory / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = load(token_bundle)
    parameter = doc["Parameters"]["AuthToken"]
    assert (parameter["Type"], parameter["NoEcho"], parameter["MinLength"]) == ("String", True, 16)
    assert "Auth" not in doc["Resources"]["ModelApi"]["Properties"]
    env = doc["Resources"]["ModelFunction"]["Properties"]["Environment"]["Variables"]
    assert env == {"MODELPORT_AUTH_TOKEN": {"Ref": "AuthToken"}}
    assert any("Authorization: Bearer" in note for note in token_bundle.notes)


def test_the_handler_enforces_the_token_the_template_hands_it(
    token_bundle: Bundle, iris_dir: Path
) -> None:
    doc = load(token_bundle)
    (variable,) = doc["Resources"]["ModelFunction"]["Properties"]["Environment"]["Variables"]
    token = "s3cret-token-0123456789"
    handler = LambdaHandler.from_environment({"MODELPORT_MODEL": str(iris_dir), variable: token})
    try:

        def call(path: str, **headers: str) -> int:
            event = {
                "version": "2.0",
                "rawPath": path,
                "rawQueryString": "",
                "headers": headers,
                "requestContext": {"http": {"method": "GET", "path": path}},
                "isBase64Encoded": False,
            }
            return int(handler(event)["statusCode"])

        assert call("/v2/models/iris_mlp") == 401
        assert call("/v2/models/iris_mlp", authorization="Bearer wrong-token-0123456789") == 401
        assert call("/v2/models/iris_mlp", authorization=f"Bearer {token}") == 200
        assert call("/v2/health/ready") == 200  # probes stay open
    finally:
        handler.close()


def test_public_api_only_when_asked_and_then_loudly(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "lambda", tmp_path / "b", DeployOptions(lambda_auth="public"))
    result = cfn_lint(bundle.directory / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = load(bundle)
    assert "Auth" not in doc["Resources"]["ModelApi"]["Properties"]
    assert "Environment" not in doc["Resources"]["ModelFunction"]["Properties"]
    assert doc["Resources"]["ModelFunction"]["Properties"]["FunctionUrlConfig"] == {
        "AuthType": "AWS_IAM"
    }
    assert "PUBLIC" in doc["Outputs"]["ApiUrl"]["Description"]
    assert any(note.startswith("WARNING") and "anyone" in note for note in bundle.notes)


def test_unknown_lambda_auth_is_refused(iris_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--lambda-auth 'open': expected one of iam, token"):
        build(iris_dir, "lambda", tmp_path / "b", DeployOptions(lambda_auth="open"))  # type: ignore[arg-type]
    assert not (tmp_path / "b").exists()
