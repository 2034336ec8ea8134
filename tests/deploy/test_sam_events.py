"""The Lambda handler on events the AWS SAM CLI itself generates (``nox -s sam``).

The SAM CLI pins click 8.1, which modelport's typer does not take, so it lives in its own
virtual environment; ``MODELPORT_SAM_CLI`` names its ``sam`` executable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from modelport.aws_lambda import LambdaHandler
from tests.conftest import need

from .test_aws_lambda import MODEL, SOURCES, answer, check_format, infer_body

pytestmark = pytest.mark.sam

GENERATORS = {
    "rest": ["apigateway", "aws-proxy"],
    "http": ["apigateway", "http-api-proxy"],
    "alb": ["alb", "request"],
}


@pytest.fixture(scope="module")
def sam_cli() -> str:
    path = os.environ.get("MODELPORT_SAM_CLI") or shutil.which("sam")
    need(path is not None, "sam", "the AWS SAM CLI: run `nox -s sam`")
    assert path is not None
    return path


def generate(sam_cli: str, kind: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sam_cli, "local", "generate-event", *GENERATORS[kind], *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )
    event: dict[str, Any] = json.loads(proc.stdout)
    return event


@pytest.mark.parametrize("kind", GENERATORS)
def test_vendored_events_are_the_clis_output(sam_cli: str, kind: str) -> None:
    assert generate(sam_cli, kind) == json.loads(SOURCES[kind].read_text())


ROUTES = [
    pytest.param("POST", f"v2/models/{MODEL}/infer", infer_body(), 200, id="infer"),
    pytest.param("POST", f"v2/models/{MODEL}/predict", "[[0, 0.25, 0.5, 0.75]]", 200, id="predict"),
    pytest.param("GET", f"v2/models/{MODEL}", "{}", 200, id="metadata"),
    pytest.param("GET", "v2/health/ready", "{}", 200, id="ready"),
    pytest.param("POST", f"v2/models/{MODEL}/infer", "{broken", 400, id="bad-json"),
    pytest.param("POST", "v2/models/other/infer", infer_body(), 404, id="unknown-model"),
]


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize(("method", "path", "body", "status"), ROUTES)
def test_handler_answers_generated_events(
    sam_cli: str,
    handler: LambdaHandler,
    expected: np.ndarray,
    kind: str,
    method: str,
    path: str,
    body: str,
    status: int,
) -> None:
    event = generate(sam_cli, kind, "--method", method, "--path", path, "--body", body)
    assert event["isBase64Encoded"] is True  # the CLI always base64-encodes the body
    result = handler(event)
    check_format(kind, result, status)
    doc = answer(result)
    if status != 200:
        assert list(doc) == ["error"]
    elif path.endswith("/infer"):
        (out,) = doc["outputs"]
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), expected, rtol=1e-6)
    elif path.endswith("/predict"):
        np.testing.assert_allclose(doc["y"], expected[:1], rtol=1e-6)
    elif path.endswith("ready"):
        assert doc == {"ready": True}
    else:
        assert doc["name"] == MODEL
