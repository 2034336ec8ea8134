"""A non-Python application: Java 17's standard HttpClient calls the V2 REST API."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.conftest import skip_unless
from tests.server.conftest import LiveServer, tiny_reference

CLIENT = Path(__file__).parents[1] / "java" / "Client.java"


@skip_unless(shutil.which("java") is not None, "java", "a Java 17+ runtime (apt)")
def test_java_client_calls_v2_rest(server: LiveServer) -> None:
    x = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    result = subprocess.run(
        ["java", str(CLIENT), server.url, "tiny", *map(str, x.ravel().tolist())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    lines = {}
    for line in result.stdout.splitlines():
        what, status, body = line.split(" ", 2)
        lines[what] = (int(status), json.loads(body))
    assert lines["ready"] == (200, {"ready": True})
    assert lines["metadata"][1]["name"] == "tiny"
    status, answer = lines["infer"]
    assert status == 200 and answer["id"] == "java-1"
    y = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(1, 3)
    np.testing.assert_allclose(y, tiny_reference(x, 1), rtol=1e-5, atol=1e-5)
    status, error = lines["bad"]
    assert status == 400 and "inputs" in error["error"]
