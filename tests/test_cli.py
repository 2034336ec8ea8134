"""The ``modelport`` command line itself: what it reads from the environment, its help, the
imports it makes before a command runs, and ``info`` on a model without a signature."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from modelport.cli import COMMANDS, main
from modelport.cli.serve import _environ
from modelport.settings import Settings, env_var
from tests.conftest import import_or_skip

DEMO = Path(__file__).resolve().parent.parent / "demo" / "iris"

HEAVY = [
    "numpy", "onnxruntime", "torch", "pandas", "sqlalchemy", "matplotlib", "grpc", "uvicorn",
    "rich", "yaml", "urllib.request", "modelport.server", "modelport.store", "modelport.loader",
]  # fmt: skip
"""Modules no ``--help`` needs."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def imported_by(*argv: str) -> tuple[str, set[str]]:
    """What ``modelport ARGV`` printed and the modules it imported, in a fresh interpreter."""
    code = (
        "import sys\nfrom modelport.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\nprint('MODULES', *sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    out, _, modules = done.stdout.partition("MODULES ")
    return out + done.stderr, set(modules.split())


@pytest.mark.parametrize(
    ("argv", "also_allowed"),
    [
        (["--help"], []),
        (["serve", "--help"], ["pydantic"]),
        (["info", "--help"], ["pydantic"]),
        (["feedback", "--help"], ["pydantic"]),
        (["versions", "list", "--help"], ["pydantic"]),
    ],
)
def test_help_imports_no_heavy_module(argv: list[str], also_allowed: list[str]) -> None:
    # typer coerces a subcommand's parameters with pydantic: only the top --help avoids it.
    heavy = [*HEAVY, "pydantic"]
    out, loaded = imported_by(*argv)
    assert "Usage: modelport" in out, out
    assert [m for m in heavy if m in loaded and m not in also_allowed] == []


def test_feedback_imports_the_store_and_nothing_of_the_server(tmp_path: Path) -> None:
    out, loaded = imported_by("feedback", "--log-db", f"sqlite:///{tmp_path / 'log.db'}", "r1", "2")
    assert "no logged prediction with request id 'r1'" in out, out
    assert "modelport.store.db" in loaded
    server = ["matplotlib", "modelport.server", "modelport.report", "uvicorn", "grpc", "rich"]
    assert [m for m in server if m in loaded] == []


def test_version_and_help_are_never_read_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_VERSION", "3")
    monkeypatch.setenv("MODELPORT_HELP", "1")
    code, out, err = run(capsys, "info", str(DEMO))
    assert code == 0, err
    assert "probabilities" in out and "Usage" not in out
    monkeypatch.setenv("MODELPORT_VERSION", "1")
    assert run(capsys, "info", str(DEMO))[0] == 0
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("modelport ")


def test_help_names_one_variable_per_option_and_the_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0
    text = " ".join(out.split())  # the help wraps at 80 columns
    assert "[env var: MODELPORT_HTTP_PORT; default: 8080]" in text
    assert "[env var: MODELPORT_GRPC_PORT; default: 8081]" in text
    for field in fields(Settings):
        assert env_var(field.name) in text
    assert "…" not in out
    # No option reads MODELPORT_<COMMAND>_<OPTION>, as click's automatic names would.
    automatic = re.compile(r"MODELPORT_(?:" + "|".join(c.upper() for c in COMMANDS) + ")_")
    for argv in (*([c] for c in COMMANDS), ["export", "onnx"], ["versions", "list"]):
        code, out, _ = run(capsys, *argv, "--help")
        assert code == 0 and not automatic.search(out), (argv, out)


def test_the_old_serve_variables_still_work_below_the_documented_ones() -> None:
    environ, old = _environ(
        {
            "MODELPORT_SERVE_HTTP_PORT": "9000",
            "MODELPORT_SERVE_GRPC_PORT": "9001",
            "MODELPORT_GRPC_PORT": "7001",
            "MODELPORT_SERVE_COLOUR": "blue",
        }
    )
    assert environ["MODELPORT_HTTP_PORT"] == "9000" and environ["MODELPORT_GRPC_PORT"] == "7001"
    assert "MODELPORT_COLOUR" not in environ
    assert old == ["MODELPORT_SERVE_GRPC_PORT", "MODELPORT_SERVE_HTTP_PORT"]
    settings = Settings.load(environ=environ)
    assert (settings.http_port, settings.grpc_port) == (9000, 7001)


def test_info_on_torchscript_without_signature_says_how_to_declare_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    torch = import_or_skip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
            return self.fc(x)

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), path)
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, "info", str(path))
    assert code == 0, err
    assert "runtime: TorchScriptModel" in out
    assert "no signature: TorchScript files carry none" in out
    assert "name them input_0, input_1, ... in forward()'s order" in out
    assert "outputs are output_0, output_1" in out
    assert f"declare a signature in {tmp_path / 'modelport.yaml'}" in out
    assert "┏" not in out  # no empty table

    (tmp_path / "modelport.yaml").write_text(
        "signature:\n"
        "  inputs: [{name: features, datatype: FP32, shape: [-1, 4]}]\n"
        "  outputs: [{name: scores, datatype: FP32, shape: [-1, 3]}]\n"
    )
    code, out, err = run(capsys, "info", str(path))
    assert code == 0, err
    assert "features" in out and "scores" in out and "no signature" not in out
