"""Every user path that needs an optional dependency says which extra to install, in one line.

Each case runs the command line (or a script) in a subprocess where the dependency cannot be
imported (``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed),
so the rest of this environment, which has every extra, does not hide a missing one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.errors import MissingDependencyError
from tests.builders import onnx_mlp

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "iris"

_BLOCK = """
import sys
for _name in sys.argv[1].split(","):
    sys.modules[_name] = None  # import fails as if it were not installed
"""
_RUN_CLI = """
from modelport.cli import main
main(sys.argv[2:])
"""
_RUN_SCRIPT = """
import runpy
script = sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, script.rpartition("/")[0])
runpy.run_path(script, run_name="__main__")
"""
CLI = _BLOCK + _RUN_CLI
SCRIPT = _BLOCK + _RUN_SCRIPT


def run_without(
    modules: list[str], driver: str, *args: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", driver, ",".join(modules), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**_env(), "MODELPORT_DATA_DIR": str(cwd / "data")},
        check=False,
    )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def assert_names_extra(result: subprocess.CompletedProcess[str], install: str) -> None:
    """Exit status 1 and exactly one error line, which says what to install; no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip() == errors[0], result.stderr  # nothing else: no empty bar
    assert install in errors[0], errors[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extras")
    np.save(root / "rows.npy", np.ones((2, 4), dtype=np.float32))
    onnx_mlp(root / "tiny.onnx", [4, 8, 3])
    return root


def _sklearn_model(root: Path) -> Path:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    path = root / "clf.skops"
    sio.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), path)
    return path


SERVE_PORTS = ["--http-port", "{port}", "--grpc-port", "{port}"]
CLI_CASES = [
    # (blocked modules, arguments, the extra named); "{root}" is the test's folder, "{port}"
    # a free port.
    (["pyarrow"], ["predict", str(DEMO), str(ROOT / "demo" / "iris.csv"), "-o", "o.csv"], "io"),
    (["pyarrow"], ["predict", str(DEMO), "{root}/rows.npy", "-o", "{root}/o.parquet"], "io"),
    (["onnxruntime"], ["info", "{root}/tiny.onnx"], "onnx"),
    (["onnxruntime"], ["predict", "{root}/tiny.onnx", "{root}/rows.npy", "-o", "o.jsonl"], "onnx"),
    (["uvicorn"], ["serve", str(DEMO), *SERVE_PORTS], "serve"),
    (["httptools"], ["serve", str(DEMO), *SERVE_PORTS], "serve"),
    (["orjson"], ["serve", str(DEMO), *SERVE_PORTS], "serve"),
    (["prometheus_client"], ["serve", str(DEMO), *SERVE_PORTS], "serve"),
    (["grpc"], ["serve", str(DEMO), *SERVE_PORTS], "serve"),
    (["sqlalchemy"], ["serve", str(DEMO), *SERVE_PORTS, "--log-predictions"], "store"),
    (
        ["psycopg"],
        ["serve", str(DEMO), *SERVE_PORTS, "--log-db", "postgresql://u@127.0.0.1:1/db"],
        "store",
    ),
    (["sqlalchemy"], ["report", "iris"], "store"),
    (["sqlalchemy"], ["feedback", "4f1c", "2"], "store"),
    (
        ["matplotlib"],
        ["report", "iris", "--log-db", "sqlite:///{root}/empty.db", "--html", "{root}/r.html"],
        "store",
    ),
    (["packaging"], ["build", str(DEMO), "--target", "docker", "-o", "{root}/bundle"], "deploy"),
    (["skl2onnx"], ["export", "onnx", "{root}/clf.skops", "-o", "{root}/clf.onnx"], "export"),
]


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    CLI_CASES,
    ids=[f"{c[1][0]}-without-{c[0][0]}" for c in CLI_CASES],
)
def test_cli_names_the_extra(
    blocked: list[str], args: list[str], extra: str, workdir: Path, tmp_path: Path
) -> None:
    if "{root}/clf.skops" in args:
        _sklearn_model(workdir)
    args = [a.replace("{root}", str(workdir)).replace("{port}", free_port()) for a in args]
    result = run_without(blocked, CLI, *args, cwd=tmp_path)
    assert_names_extra(result, f'pip install "modelport[{extra}]"')


def test_quickstart_serve_does_not_need_io_onnx_or_store(tmp_path: Path) -> None:
    """``modelport info`` loads the demo as ``serve`` would, with the lean install's modules."""
    result = run_without(
        ["pandas", "pyarrow", "onnx", "sqlalchemy", "matplotlib", "skops", "sklearn"],
        CLI,
        "info",
        str(DEMO),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "probabilities" in result.stdout


def test_python_load_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _sklearn_model(tmp_path)
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "modelport\[sklearn\]"'):
        modelport.load(path)


@pytest.mark.parametrize(
    ("script", "blocked", "install"),
    [
        ("examples/custom_text_model/build.py", ["skops"], 'pip install -e ".[sklearn]"'),
        ("examples/custom_text_model/build.py", ["sklearn"], 'pip install -e ".[sklearn]"'),
        ("demo/build_demo.py", ["skl2onnx"], 'pip install -e ".[sklearn,export]"'),
    ],
)
def test_build_scripts_name_the_extra(
    script: str, blocked: list[str], install: str, tmp_path: Path
) -> None:
    args = ["--out", str(tmp_path / "out")]
    if script.startswith("demo/"):
        args += ["--sample", str(tmp_path / "sample.csv")]
    result = run_without(blocked, SCRIPT, str(ROOT / script), *args, cwd=tmp_path)
    assert_names_extra(result, install)
    assert not (tmp_path / "out").exists()
