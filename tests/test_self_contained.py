"""A fresh clone runs its own tests: no test, script or doc reaches outside the repository.

Refused, in the files a clone has under :data:`SCANNED`: a relative ``../`` path (commands run
from the repository's root, so any climbs out; in Markdown a link is resolved from its file's
folder instead), a repository-root constant's ``.parent``, ``Path(__file__)`` climbing above
the root, a script's ``$(dirname "$0")/..`` doing so, ``parent / "shared"``, and an absolute
path into the folder that holds the repository.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [
    "tests", "scripts", "noxfile.py", ".ci", "bench", "docs", "examples", "demo", "README.md",
]  # fmt: skip
BIGGEST = 2_000_000
"""Bytes: a bigger file is data, not text that names paths."""

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CLIMB = re.compile(r"(?<![\w./])\.\./")
_ROOT_PARENT = re.compile(r"\b(?:ROOT|REPO|REPO_ROOT|PROJECT_ROOT)\.parents?\b")
_FILE_PATH = re.compile(
    r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?"
    r"((?:\.parent\b)*)(?:\.parents\[(\d+)\])?((?:\.parent\b)*)"
)
_DOTDOT_JOIN = re.compile(r"/\s*[\"']\.\.[\"']")
_SHARED = re.compile(r"\.parents?(?:\[\d+\])?\s*/\s*[\"']shared[\"']")
_SCRIPT_DIR = re.compile(r"dirname [^)]*\)((?:/\.\.)+)")


def climbs_out(rel: PurePosixPath, line: str) -> bool:
    """Whether ``line`` of the file at ``rel`` (relative to the root) names a path outside."""
    for target in _LINK.findall(line) if rel.suffix == ".md" else []:
        if posixpath.normpath(rel.parent / target).startswith(".."):
            return True
    # Outside Markdown, a link is a template for a generated page: its base is unknown.
    rest = _LINK.sub("]()", line)
    if _CLIMB.search(rest) or _SHARED.search(line) or _DOTDOT_JOIN.search(line):
        return True
    if ROOT.parent != Path("/") and f"{ROOT.parent}/" in line.replace(f"{ROOT}/", ""):
        return True
    depth = len(rel.parts)  # Path(__file__) climbs this many levels to reach the root
    if rel.suffix == ".py":
        if _ROOT_PARENT.search(line):
            return True
        for before, index, after in _FILE_PATH.findall(line):
            levels = before.count(".parent") + after.count(".parent")
            if levels + (int(index) + 1 if index else 0) > depth:
                return True
        if "__file__" in line and line.count("dirname(") > depth:
            return True
    return any(len(up) // 3 > depth - 1 for up in _SCRIPT_DIR.findall(line))


def escapes(rel: PurePosixPath, text: str) -> list[str]:
    """``rel:line: text`` for each line of the file that reaches outside the repository."""
    return [
        f"{rel}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if climbs_out(rel, line)
    ]


def clone_files() -> list[Path]:
    """The files under SCANNED a clone has (plus new ones not ignored), or all without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *SCANNED],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        files = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        found = (ROOT / name for name in SCANNED)
        files = [f for p in found for f in ([p] if p.is_file() else p.rglob("*"))]
    return [f for f in files if f.is_file() and "__pycache__" not in f.parts]


def test_nothing_reaches_outside_the_repository() -> None:
    files = [f for f in clone_files() if f.resolve() != Path(__file__).resolve()]
    assert len(files) > 100, "the scan found too few files to be looking in the right place"
    found = []
    for path in files:
        if path.stat().st_size > BIGGEST:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: models, data
        found += escapes(PurePosixPath(path.relative_to(ROOT).as_posix()), text)
    assert found == [], "paths outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("rel", "line"),
    [
        ("tests/deploy/conftest.py", 'SHARED = ROOT.parent / "shared"'),
        ("tests/deploy/conftest.py", 'S = Path(__file__).resolve().parents[3] / "schemas"'),
        ("tests/x.py", 'S = Path(__file__).resolve().parent.parent.parent / "x"'),
        ("tests/x.py", 'HERE.parents[1] / "shared" / "schemas"'),
        ("tests/x.py", 'open(ROOT / ".." / "x")'),
        ("tests/x.py", 'json.loads(Path("../shared/x.json").read_text())'),
        ("docs/x.md", "against KServe's schema (`../shared/schemas/kserve.json`)"),
        ("docs/x.md", "see [the fixtures](../../shared/fixtures/README.md)"),
        ("scripts/test", 'cd "$(dirname "$0")/../.."'),
        ("README.md", f"the schema in {ROOT.parent}/shared/x.json"),
    ],
)
def test_a_planted_escape_is_caught(rel: str, line: str) -> None:
    assert escapes(PurePosixPath(rel), f"ok = 1\n{line}\n") == [f"{rel}:2: {line}"]


@pytest.mark.parametrize(
    ("rel", "line"),
    [
        ("tests/deploy/conftest.py", "ROOT = Path(__file__).resolve().parents[2]"),
        ("tests/x.py", 'DEMO = Path(__file__).resolve().parent.parent / "demo"'),
        ("docs/x.md", "Runnable: [`dask.py`](../examples/pipelines/dask.py)."),
        ("bench/report.py", 'f"Method: [docs](../../docs/benchmarks.md)."'),
        ("scripts/test", 'cd "$(dirname "$0")/.."'),
        ("README.md", "| `.../ready` | readiness |"),
        ("README.md", f"written under {ROOT}/bench/_work"),
    ],
)
def test_a_path_inside_is_left_alone(rel: str, line: str) -> None:
    assert escapes(PurePosixPath(rel), line) == []
