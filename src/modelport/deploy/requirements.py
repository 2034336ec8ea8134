"""Pinned requirements for an image, taken from the environment that builds it.

The image installs exactly the versions this environment has (the ones the model was checked
with): the dependency closure of ``modelport[<extras>]`` plus the model's own
``requirements.txt``, each pinned with ``==``. modelport itself comes as a wheel built from
the installed source when it is a local checkout, and pinned otherwise.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from .._deps import require
from ..errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

    from ..model import Model

__all__ = ["FRAMEWORK_EXTRAS", "framework_extras", "modelport_requirement", "pinned"]

FRAMEWORK_EXTRAS: dict[str, str] = {
    "modelport.frameworks.onnx": "onnx",
    "modelport.frameworks.torch": "torch",
    "modelport.frameworks.tensorflow": "tensorflow",
    "modelport.frameworks.sklearn": "sklearn",
    "modelport.frameworks.xgboost": "xgboost",
    "modelport.frameworks.lightgbm": "lightgbm",
    "modelport.frameworks.huggingface": "hf",
}
"""Runtime module → the extra that brings its framework (plain Python needs none)."""

# Local builds of these carry a "+cpu" label and live on PyTorch's own index.
_TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def framework_extras(model: Model) -> list[str]:
    """The extras the model's runtime needs, found from the runtime class it was loaded with."""
    for cls in type(model).__mro__:
        extra = FRAMEWORK_EXTRAS.get(cls.__module__)
        if extra is not None:
            return [extra]
    return []


def pinned(extras: Iterable[str], extra_requirements: Iterable[str] = ()) -> list[str]:
    """``name==version`` lines for the closure of ``modelport[extras]`` and
    ``extra_requirements``, at the versions installed here; modelport itself is left out.

    Raises :class:`MissingDependencyError` when a needed distribution is not installed,
    naming what needs it, and :class:`ConfigError` when one installed does not satisfy it.
    """
    packaging_requirements = require("packaging.requirements", "deploy")
    requirement = packaging_requirements.Requirement
    roots: list[tuple[Requirement, str]] = [
        (requirement(f"modelport[{','.join(sorted(set(extras)))}]"), "the image")
    ]
    for line in extra_requirements:
        try:
            roots.append((requirement(line), "the model's requirements.txt"))
        except packaging_requirements.InvalidRequirement as exc:
            raise ConfigError(f"requirements.txt: {line!r} is not a requirement: {exc}") from None
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while roots:
        req, needed_by = roots.pop()
        key = (_canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = _installed(req, needed_by)
        name = _canonical(dist.metadata["Name"])
        if name != "modelport":
            pins[name] = f"{dist.metadata['Name']}=={dist.version}"
        wanted = {""} | set(req.extras)
        for line in dist.requires or []:
            child = requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in wanted):
                roots.append((child, f"{name} {dist.version}"))
    lines = [pins[k] for k in sorted(pins)]
    if any("+cpu" in line for line in lines):
        lines.insert(0, f"--extra-index-url {_TORCH_CPU_INDEX}")
    return lines


def modelport_requirement(wheel_dir: Path) -> str:
    """The requirement line that installs this very modelport in the image.

    A local checkout (editable or not) is built into a wheel in ``wheel_dir`` and named by
    its path relative to the bundle; an installed release is pinned by version.
    """
    dist = metadata.distribution("modelport")
    origin = json.loads(dist.read_text("direct_url.json") or "{}")
    url = str(origin.get("url", ""))
    if "dir_info" in origin and url.startswith("file://"):
        wheel_dir.mkdir(parents=True, exist_ok=True)
        source = Path(url2pathname(urlparse(url).path))
        return f"./{wheel_dir.name}/{_build_wheel(source, wheel_dir).name}"
    if url:
        return f"modelport @ {url}"
    return f"modelport=={dist.version}"


_BUILT: dict[tuple[Path, int], Path] = {}
"""Wheels built by this process, by source and its newest modification time."""


def _build_wheel(source: Path, wheel_dir: Path) -> Path:
    key = (source, _newest_change(source))
    built_before = _BUILT.get(key)
    if built_before is not None and built_before.is_file():
        return Path(shutil.copy2(built_before, wheel_dir / built_before.name))
    _BUILT[key] = wheel = _pip_wheel(source, wheel_dir)
    return wheel


def _newest_change(source: Path) -> int:
    files = [source / "pyproject.toml", source / "README.md", *(source / "src").rglob("*")]
    sources = [f for f in files if f.suffix != ".pyc" and f.is_file()]  # imports write .pyc
    return max((f.stat().st_mtime_ns for f in sources), default=0)


def _pip_wheel(source: Path, wheel_dir: Path) -> Path:
    before = set(wheel_dir.glob("modelport-*.whl"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheel_dir)]
    proc = subprocess.run([*cmd, str(source)], capture_output=True, text=True, check=False)
    built = sorted(set(wheel_dir.glob("modelport-*.whl")) - before) or sorted(before)
    if proc.returncode != 0 or not built:
        raise ConfigError(
            f"could not build a modelport wheel from {source}: {proc.stderr.strip()[-2000:]}"
        )
    return built[-1]


def _installed(req: Requirement, needed_by: str) -> metadata.Distribution:
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"{req.name!r} (needed by {needed_by}) is not installed here; the image's pinned "
            f"requirements come from this environment: pip install {_install_hint(req.name)}"
        ) from None
    if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
        raise ConfigError(
            f"{req.name} {dist.version} is installed but {needed_by} needs {req}; "
            "fix this environment before building an image from it"
        )
    return dist


def _install_hint(name: str) -> str:
    """The modelport extra that brings ``name``, else ``name`` itself."""
    requirement = require("packaging.requirements", "deploy").Requirement
    own = metadata.distribution("modelport")
    extras = own.metadata.get_all("Provides-Extra") or []
    for line in own.requires or []:
        req = requirement(line)
        if _canonical(req.name) != _canonical(name) or req.marker is None:
            continue
        for extra in extras:
            if extra != "all" and req.marker.evaluate({"extra": extra}):
                return f'"modelport[{extra}]"'
    return f'"{name}"'


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
