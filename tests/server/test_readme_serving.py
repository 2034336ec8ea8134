"""The README's Quickstart and Serving commands and snippets, run against ``modelport serve``
on the demo model."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.server.test_serve import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_readme_serving_snippets_run(capsys: pytest.CaptureFixture[str]) -> None:
    serving_text = _section("Serving")
    quickstart = _section("Quickstart")
    assert "modelport serve demo/iris" in quickstart.split("```")[1]  # the first command
    port = free_port()
    here = f"127.0.0.1:{port}"
    with serving([str(ROOT / "demo" / "iris")], port=port):
        for block in re.findall(r"```py\n(.*?)```", serving_text, flags=re.S):
            exec(compile(block.replace("localhost:8080", here), "README.md", "exec"), {})
        printed = capsys.readouterr().out
        assert "[2] [[0.   0.04 0.96]]" in printed
        assert re.search(r"^virginica [0-9a-f]{32}$", printed, flags=re.M)
        need(shutil.which("curl") is not None, "curl", "the Python snippets ran, not the curl ones")
        blocks = re.findall(r"```bash\n(.*?)```", quickstart + serving_text, flags=re.S)
        commands = [c for b in blocks for c in b.splitlines() if c.startswith("curl ")]
        assert len(commands) == 5
        for command in commands:
            result = subprocess.run(
                ["bash", "-c", command.replace("localhost:8080", here) + " --fail-with-body"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert result.stdout.startswith(("{", "[")), result.stdout
