"""Shared fixtures: real models built at test time, with fixed seeds. And the skip policy.

A test that cannot run here skips with a reason made by :func:`requires` ("requires NAME" or
"requires NAME: detail"). Every run ends with a section naming what did not run and why. With
``MODELPORT_STRICT_SKIPS=1`` (``scripts/test`` sets it) a skip fails the run, unless its NAME
is in ``MODELPORT_TEST_MISSING``: the system packages ``scripts/test`` said it could not
install. Inside a nox session (``MODELPORT_TEST_ENGINE``), the packages it installs for its
tests must import: :func:`import_or_skip` fails there instead of skipping.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from _pytest.mark.expression import Expression

from tests.builders import onnx_mlp, onnx_multi_io

STRICT = os.environ.get("MODELPORT_STRICT_SKIPS") == "1"
MISSING = frozenset(os.environ.get("MODELPORT_TEST_MISSING", "").split())
SESSION = os.environ.get("MODELPORT_TEST_ENGINE")
"""The nox session running these tests (its name, which is also its tests' marker), if any."""
NOX_SESSIONS = ("tensorflow", "dask", "ray", "beam", "spark", "flink", "sam")
NOX_MODULES = {
    "test_tensorflow_runtime.py": "tensorflow",
    **{f"integrations/test_{name}.py": name for name in ("dask", "ray", "beam", "spark", "flink")},
}
"""Modules (under tests/) that import their session's packages at the top, so would skip on
collection outside it: when ``-m`` deselects their marker they are not imported at all."""

LISTED = 10
"""Tests named per skip reason in the summary (the rest are counted)."""
_REQUIRES = re.compile(r"requires (\S+)(?:: |$)")


def requires(name: str, detail: str = "") -> str:
    """The skip reason of a test that cannot run without ``name`` (what ``scripts/test``
    names in ``MODELPORT_TEST_MISSING``, or a Python module)."""
    return f"requires {name}: {detail}" if detail else f"requires {name}"


def skip_unless(present: bool, name: str, detail: str = "") -> pytest.MarkDecorator:
    """Mark: skip unless ``present``, for want of ``name``."""
    return pytest.mark.skipif(not present, reason=requires(name, detail))


def need(present: bool, name: str, detail: str = "") -> None:
    """Skip the running test unless ``present``, for want of ``name``."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    if not present:
        pytest.skip(requires(name, detail))


def import_or_skip(module: str, session: str | None = None) -> ModuleType:
    """``module``, imported. Missing, the test skips; in the nox session ``session``, which
    installs it, the import error fails the test instead."""
    __tracebackhide__ = True
    if session is not None and session == SESSION:
        return importlib.import_module(module)
    detail = f"run `nox -s {session}`" if session else ""
    return pytest.importorskip(module, reason=requires(module, detail))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_onnx(models_dir: Path) -> Path:
    """MLP 4 -> 16 -> 3 (ReLU), input ``x`` FP32 [-1, 4], output ``y`` FP32 [-1, 3]."""
    return onnx_mlp(models_dir / "tiny.onnx", [4, 16, 3])


@pytest.fixture(scope="session")
def multi_io_onnx(models_dir: Path) -> Path:
    """Inputs ``a`` FP32 [-1, 3] and ``b`` INT64 [-1, 3]; outputs ``sum`` FP32, ``argmax`` INT64."""
    return onnx_multi_io(models_dir / "multi.onnx")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# -- the skip policy ----------------------------------------------------------------------------

_skipped: defaultdict[str, list[str]] = defaultdict(list)
"""Skip reason -> the tests (or modules, skipped on collection) it skipped."""
_not_selected: defaultdict[str, list[str]] = defaultdict(list)
"""Why -> the tests (or modules) deselected or not collected."""


def _allowed(reason: str) -> bool:
    """A skip for want of something ``scripts/test`` announced it could not install."""
    match = _REQUIRES.match(reason)
    return match is not None and match.group(1) in MISSING


def _session_of(markers: set[str]) -> str:
    session = next((name for name in NOX_SESSIONS if name in markers), None)
    return f"runs in `nox -s {session}`" if session else "deselected"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    here = Path(__file__).parent
    if not collection_path.is_relative_to(here):
        return None
    key = collection_path.relative_to(here).as_posix()
    marker = NOX_MODULES.get(key)
    expression = config.getoption("markexpr")
    if marker is None or not expression:
        return None
    if Expression.compile(expression).evaluate(lambda name, /, **kw: name == marker and not kw):
        return None
    # pytest also asks about the files beside the ones it collects: name only those it would.
    asked = [(config.invocation_params.dir / a.split("::")[0]).resolve() for a in config.args]
    if any(collection_path.is_relative_to(path) for path in asked):
        _not_selected[_session_of({marker})].append(f"tests/{key}")
    return True


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        _not_selected[_session_of({m.name for m in item.iter_markers()})].append(item.nodeid)


def _record(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple):
        _skipped[str(report.longrepr[2]).removeprefix("Skipped: ")].append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)


def _failing() -> list[str]:
    return [reason for reason in _skipped if not _allowed(reason)] if STRICT else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _failing() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "what did not run, and why")
    if not _skipped and not _not_selected:
        write("nothing: every collected test ran")
    failing = _failing()
    for reason, nodeids in sorted(_skipped.items()):
        if reason in failing:
            verdict = "FAILS THE RUN (MODELPORT_STRICT_SKIPS=1)"
        elif _allowed(reason):
            verdict = "scripts/test could not install it (MODELPORT_TEST_MISSING)"
        else:
            verdict = "set MODELPORT_STRICT_SKIPS=1 to fail on it"
        write(f"{len(nodeids)} skipped, {reason} -- {verdict}", red=reason in failing)
        for nodeid in nodeids[:LISTED]:
            write(f"    {nodeid}")
        if len(nodeids) > LISTED:
            write(f"    ... and {len(nodeids) - LISTED} more")
    for why, nodeids in sorted(_not_selected.items()):
        modules = [f"{m} (not imported)" for m in nodeids if m.endswith(".py")]
        tests = len(nodeids) - len(modules)
        write(f"not selected, {why}: " + ", ".join([f"{tests} tests"] * bool(tests) + modules))
    if failing:
        write(f"{sum(len(_skipped[r]) for r in failing)} skipped test(s) fail this run", red=True)
