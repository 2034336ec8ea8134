"""Real model repositories that change while a real server serves them, and real load."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.server.conftest import TINY, LiveServer, infer_body, tiny_reference, write

TOKEN = "s3cret-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}

# A version of the tiny MLP (seed = version number) that takes a few ms per call, so requests
# are in flight whenever a swap happens, and optionally a while to load.
SLOW_TINY = """
import time
from modelport import Model


class SlowTiny(Model):
    def load(self):
        time.sleep({load_delay})
        super().load()

    def predict(self, inputs):
        time.sleep({delay})
        return super().predict(inputs)
"""

BROKEN_PREDICT = """
from modelport import Model


class Broken(Model):
    '''Loads fine (the ONNX beside it), raises on every prediction.'''

    def predict(self, inputs):
        raise RuntimeError("this version is broken")
"""

# The plain-JSON path with a preprocess that takes a while off the event loop: a swap must
# wait for requests inside it before closing the old version.
PREPROCESS_TINY = """
import time

import numpy as np
from modelport import Model


class JsonTiny(Model):
    def preprocess(self, payload):
        time.sleep(0.05)
        return {{"x": np.asarray(payload["x"], dtype=np.float32)}}

    def predict(self, inputs):
        time.sleep({delay})
        return super().predict(inputs)
"""

# The shadow: the same weights as version 1, slow, and raising on any row holding 13.
SHADOW_TINY = """
import time

import numpy as np
from modelport import Model


class Shadow(Model):
    def predict(self, inputs):
        time.sleep(0.02)
        if (np.asarray(inputs["x"]) == 13).any():
            raise ValueError("the shadow fails on 13")
        return super().predict(inputs)
"""


def make_version(
    model_dir: Path,
    version: int,
    *,
    seed: int | None = None,
    delay: float = 0.003,
    load_delay: float = 0.0,
    model_py: str | None = None,
    hidden_first: bool = True,
    config: str = "",
) -> Path:
    """Write ``model_dir/<version>/`` (tiny MLP with ``seed``, default the version number).

    With ``hidden_first`` it is written under a hidden name and renamed into place, as users
    are told to ship versions.
    """
    final = model_dir / str(version)
    staging = model_dir / f".{version}" if hidden_first else final
    staging.mkdir(parents=True)
    onnx_mlp(staging / "model.onnx", TINY, seed=version if seed is None else seed)
    text = model_py if model_py is not None else SLOW_TINY
    write(staging / "model.py", text.format(delay=delay, load_delay=load_delay))
    batching = "batching: {max_batch_size: 16, max_queue_delay_ms: 1}\n"
    write(staging / "modelport.yaml", batching + config)
    if hidden_first:
        os.rename(staging, final)
    return final


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A repository with ``tiny`` version 1."""
    root = tmp_path / "repo"
    make_version(root / "tiny", 1)
    return root


def serve(root: Path, **settings: Any) -> LiveServer:
    settings.setdefault("watch_interval", 0.1)
    cfg = Settings(model_path=root, grpc_port=None, **settings)
    return LiveServer(build_dataplane(cfg), cfg)


def version_status(client: httpx.Client, name: str = "tiny") -> dict[str, Any]:
    r = client.get(f"/v2/models/{name}", headers=AUTH)
    assert r.status_code == 200, r.text
    status: dict[str, Any] = r.json()["version_status"]
    return status


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` (a correctness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def x_for(i: int) -> np.ndarray:
    return (np.arange(8, dtype=np.float32).reshape(2, 4) + i % 97) / 50


@dataclass
class Load:
    """Concurrent V2 inference requests against a live server until stopped.

    Every answer is checked against the numpy reference of the version it says answered.
    """

    url: str
    concurrency: int = 8
    headers: dict[str, str] = field(default_factory=dict)
    keepalive: bool = True
    """False: a new connection per request (so several worker processes all take some)."""
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    retry_after: list[str | None] = field(default_factory=list)
    timeline: list[tuple[float, float, str]] = field(default_factory=list)
    """(sent, answered, version) of each successful request, monotonic seconds."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        wait_for(lambda: sum(self.statuses.values()) >= 20, "load to start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def sent_after_answered(self, old: str, new: str) -> list[tuple[float, float, str]]:
        """Requests answered by ``old`` though sent after ``new`` had answered one: none, if
        the switch from ``old`` to ``new`` is one step."""
        first_new = min(answered for _, answered, v in self.timeline if v == new)
        return [t for t in self.timeline if t[2] == old and t[0] > first_new]

    def wait_more(self, n: int) -> None:
        target = self.total + n
        wait_for(lambda: self.total >= target, f"{n} more requests")

    async def _main(self) -> None:
        limits = httpx.Limits(
            max_connections=100, max_keepalive_connections=20 if self.keepalive else 0
        )
        async with httpx.AsyncClient(
            base_url=self.url, timeout=60, headers=self.headers, limits=limits
        ) as c:
            await asyncio.gather(*(self._worker(c, k) for k in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, k: int) -> None:
        i = k
        while not self._stop.is_set():
            x = x_for(i)
            i += self.concurrency
            sent = time.monotonic()
            try:
                r = await client.post("/v2/models/tiny/infer", json=infer_body(x))
            except httpx.HTTPError as exc:
                self.failures.append(f"transport: {exc!r}")
                continue
            self.statuses[r.status_code] += 1
            if r.status_code != 200:
                self.retry_after.append(r.headers.get("retry-after"))
                if r.status_code != 503:
                    self.failures.append(f"{r.status_code}: {r.text}")
                continue
            body = r.json()
            version = body["model_version"]
            self.versions[version] += 1
            self.timeline.append((sent, time.monotonic(), version))
            y = np.asarray(body["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
            if not np.allclose(y, tiny_reference(x, seed=int(version)), rtol=1e-5, atol=1e-5):
                self.wrong.append(f"answer labelled version {version} is not version {version}'s")


def fire(
    url: str, n: int, *, concurrency: int = 16, headers: dict[str, str] | None = None
) -> list[tuple[np.ndarray, httpx.Response]]:
    """``n`` V2 inference requests (inputs ``x_for(i)``), ``concurrency`` at a time."""

    async def main() -> list[tuple[np.ndarray, httpx.Response]]:
        results: list[tuple[np.ndarray, httpx.Response]] = []
        todo = iter(range(n))
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:

            async def worker() -> None:
                for i in todo:
                    x = x_for(i)
                    r = await client.post("/v2/models/tiny/infer", json=infer_body(x))
                    results.append((x, r))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results

    return asyncio.run(main())
