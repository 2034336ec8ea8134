"""How many CPUs this process may really use, and so how many threads a model call should get.

A machine's core count is the wrong answer in the places models are served: a process pinned
with ``taskset``, a container started with ``--cpus 1``, a Kubernetes pod with ``cpu: 1``.
Runtimes that start a thread per core there (onnxruntime's and PyTorch's defaults) make the
threads fight over the CPU the process has. This module reads the affinity mask and the
cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, every
level up to the mount's root, since a parent's limit binds too) and takes the smallest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuBudget", "cpu_budget", "default_threads", "threads_option"]


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs a process may use and where that figure comes from."""

    affinity: int
    """CPUs in the process's affinity mask (``os.sched_getaffinity``)."""
    quota: float | None
    """CPUs granted by the cgroup quota, None when there is none."""

    @property
    def cpus(self) -> float:
        """The smaller of the two."""
        return min(float(self.affinity), self.quota) if self.quota is not None else self.affinity

    def threads(self, workers: int = 1) -> int:
        """Threads per model call for ``workers`` processes sharing the budget (at least 1)."""
        return max(1, math.floor(self.cpus / max(1, workers)))

    def describe(self) -> str:
        """For the start-up log: ``2 CPUs (affinity 4, cgroup quota 2)``."""
        quota = f"cgroup quota {self.quota:g}" if self.quota is not None else "no cgroup quota"
        return f"{self.cpus:g} CPUs (affinity {self.affinity}, {quota})"


def cpu_budget(proc: Path = Path("/proc/self")) -> CpuBudget:
    """The CPUs this process may use (``proc`` is where its ``cgroup`` and ``mountinfo`` are)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    return CpuBudget(affinity, _quota(proc))


def default_threads(workers: int = 1) -> int:
    """Threads per model call when nothing was configured: the CPU budget over ``workers``."""
    return cpu_budget().threads(workers)


def threads_option(options: Mapping[str, Any], key: str = "intra_op_threads") -> int:
    """A runtime's thread count: ``options[key]``, else the generic ``intra_op_threads``, else
    :func:`default_threads` shared among the model's ``instances`` (``0``, where a runtime
    takes it, still lets the runtime choose)."""
    for name in (key, "intra_op_threads"):
        if options.get(name) is not None:
            return int(options[name])
    return max(1, default_threads() // max(1, int(options.get("instances") or 1)))


def _quota(proc: Path) -> float | None:
    try:
        cgroups = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    limits = [q for d in _cgroup_dirs(cgroups, mounts) if (q := _dir_quota(d)) is not None]
    return min(limits) if limits else None


def _cgroup_dirs(cgroups: list[str], mounts: list[str]) -> list[Path]:
    """Each directory from this process's CPU cgroup up to its mount point (v2 and v1)."""
    paths: dict[str, str] = {}  # "v2" or "v1" -> the process's cgroup path
    for line in cgroups:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    found: list[Path] = []
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        root, mount_point, fstype = fields[3], fields[4], fields[sep + 1]
        options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        if fstype == "cgroup2":
            kind = "v2"
        elif fstype == "cgroup" and "cpu" in options:
            kind = "v1"
        else:
            continue
        if kind not in paths:
            continue
        relative = os.path.relpath(paths[kind], root)
        if relative.startswith(".."):  # the process's cgroup is outside this mount's view
            relative = "."
        top = Path(mount_point.replace("\\040", " "))
        here = (top / relative).resolve()
        while True:
            found.append(here)
            if here == top or here == here.parent:
                break
            here = here.parent
    return found


def _dir_quota(directory: Path) -> float | None:
    """CPUs granted by the quota set on ``directory`` alone, None for no quota there."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
