from __future__ import annotations

import subprocess
import sys

import modelport

HEAVY = [
    "numpy", "onnxruntime", "torch", "tensorflow", "sklearn", "xgboost", "lightgbm", "pandas",
    # nor what the server, the store and the command line need (tests/test_cli.py: the CLI)
    "pydantic", "yaml", "sqlalchemy", "matplotlib", "grpc", "uvicorn", "rich", "typer",
]  # fmt: skip


def test_import_loads_no_framework() -> None:
    code = f"import sys, modelport; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_surface_is_exactly_all() -> None:
    public = {name for name in dir(modelport) if not name.startswith("_")}
    assert public == {name for name in modelport.__all__ if not name.startswith("_")}
    for name in modelport.__all__:
        assert getattr(modelport, name) is not None


def test_errors_inherit_the_builtin_a_caller_expects() -> None:
    assert issubclass(modelport.InvalidInputError, ValueError)
    assert issubclass(modelport.ArtifactNotFoundError, FileNotFoundError)
    assert issubclass(modelport.MissingDependencyError, ImportError)
    assert issubclass(modelport.ModelNotFoundError, LookupError)
    for name in modelport.__all__:
        obj = getattr(modelport, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, modelport.ModelportError)
