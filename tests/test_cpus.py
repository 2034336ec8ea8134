"""The CPU budget: affinity and cgroup quotas, read from real files and real processes, and the
thread counts every runtime takes from it when nothing was configured."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelport.cpus import CpuBudget, cpu_budget
from tests.conftest import need


def _proc(tmp: Path, cgroup: str, mounts: list[str]) -> Path:
    proc = tmp / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text("\n".join(mounts) + "\n")
    return proc


def test_cgroup_v2_quota_binds_at_every_level(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    leaf = root / "kubepods" / "pod1" / "ctr"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")  # the pod's limit
    (root / "kubepods" / "cpu.max").write_text("400000 100000\n")
    proc = _proc(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        [f"35 24 0:30 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"],
    )
    budget = cpu_budget(proc)
    assert budget.quota == 1.5
    assert budget.cpus == min(1.5, budget.affinity)


def test_cgroup_v1_quota_with_a_namespaced_view(tmp_path: Path) -> None:
    # Inside a container the mount's root is the container's own cgroup, and the process's
    # path names that same cgroup: its files are at the mount point itself.
    mount = tmp_path / "cpu,cpuacct"
    mount.mkdir()
    (mount / "cpu.cfs_quota_us").write_text("50000\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
        [f"40 31 0:35 /docker/abc {mount} ro,nosuid - cgroup cgroup rw,cpu,cpuacct"],
    )
    assert cpu_budget(proc).quota == 0.5


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_no_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    mount = tmp_path / "cg"
    mount.mkdir()
    for name, text in files.items():
        (mount / name).write_text(text)
    proc = _proc(tmp_path, "0::/\n", [f"35 24 0:30 / {mount} rw - cgroup2 cgroup2 rw"])
    assert cpu_budget(proc).quota is quota


def test_threads_share_the_budget_among_workers() -> None:
    assert CpuBudget(affinity=8, quota=None).threads() == 8
    assert CpuBudget(affinity=8, quota=2.5).threads() == 2
    assert CpuBudget(affinity=8, quota=4.0).threads(workers=2) == 2
    assert CpuBudget(affinity=2, quota=0.5).threads() == 1  # never below one
    assert CpuBudget(affinity=2, quota=None).threads(workers=4) == 1
    assert CpuBudget(affinity=4, quota=2.0).describe() == "2 CPUs (affinity 4, cgroup quota 2)"


PROBE = """
import json, sys
import modelport
from modelport.cpus import cpu_budget

onnx = modelport.load(sys.argv[1]).ensure_loaded()
import torch

torch.set_num_threads(8)  # what torch starts with on a big machine
from torch import nn

torch.manual_seed(0)
path = sys.argv[2] + "/tiny.pt"
torch.jit.save(torch.jit.script(nn.Linear(4, 2)), path)
modelport.load(path).ensure_loaded()
print(json.dumps({
    "budget": cpu_budget().describe(),
    "threads": cpu_budget().threads(),
    "onnx": onnx.session.get_session_options().intra_op_num_threads,
    "torch": torch.get_num_threads(),
}))
"""


def _probe(
    tiny_onnx: Path, tmp: Path, cpus: set[int] | None = None, cgroup: Path | None = None
) -> dict[str, Any]:
    """The probe's figures, run in a process pinned to ``cpus`` and/or in ``cgroup``."""

    def limit() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE), str(tiny_onnx), str(tmp)],
        preexec_fn=limit, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def cpu_cgroup(cpus: float) -> Iterator[Path]:
    """A real cgroup whose CPU quota is ``cpus`` (cgroup v1's cpu controller, else v2's)."""
    need(os.geteuid() == 0, "root", "to make a cgroup with a CPU quota")
    period = 100_000
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        mount = Path(fields[4])
        if fstype == "cgroup" and "cpu" in options:
            files = {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": str(int(cpus * period))}
        elif fstype == "cgroup2" and "cpu" in (mount / "cgroup.subtree_control").read_text():
            files = {"cpu.max": f"{int(cpus * period)} {period}"}
        else:
            continue
        group = mount / f"modelport-test-{os.getpid()}"
        group.mkdir()
        try:
            for name, value in files.items():
                (group / name).write_text(value)
            yield group
        finally:
            group.rmdir()  # every process in it has exited
        return
    need(False, "cgroup", "no writable cgroup CPU controller is mounted")


def test_runtimes_take_the_affinity_mask(tiny_onnx: Path, tmp_path: Path) -> None:
    free = _probe(tiny_onnx, tmp_path)
    assert free["threads"] == free["onnx"] == free["torch"] == cpu_budget().threads()
    pinned = _probe(tiny_onnx, tmp_path, cpus={min(os.sched_getaffinity(0))})
    assert pinned["budget"].startswith("1 CPUs (affinity 1")
    assert pinned["threads"] == pinned["onnx"] == pinned["torch"] == 1


def test_runtimes_take_the_cgroup_quota(tiny_onnx: Path, tmp_path: Path) -> None:
    with cpu_cgroup(0.5) as group:
        limited = _probe(tiny_onnx, tmp_path, cgroup=group)
    assert limited["budget"].endswith("cgroup quota 0.5)")
    assert limited["threads"] == limited["onnx"] == limited["torch"] == 1


def test_explicit_threads_win(tiny_onnx: Path) -> None:
    import modelport

    model = modelport.load(tiny_onnx, intra_op_threads=3).ensure_loaded()
    assert model.session.get_session_options().intra_op_num_threads == 3
