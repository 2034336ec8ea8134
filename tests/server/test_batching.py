"""Dynamic batching: the batcher on its own, then through the real server under load."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import DeadlineExceededError, OverloadedError, PredictionError
from modelport.runtime.batcher import Batcher
from tests.server.conftest import LiveServer, assert_healthy, slow_model, start, tiny_reference


class Recorder:
    """A real batch function (2x + 1, optionally slow and failing on 13) that records calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.release.wait(30)
        if self.delay:
            threading.Event().wait(self.delay)
        x = inputs["x"]
        self.calls.append(len(x))
        if (x == 13).any():
            raise ValueError("unlucky")
        return {"y": x * 2 + 1}


def rows(values: list[float]) -> dict[str, np.ndarray]:
    return {"x": np.asarray(values, dtype=np.float32).reshape(-1, 1)}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_lone_request_runs_alone_and_at_once() -> None:
    fn = Recorder()
    sizes: list[int] = []

    async def main() -> dict[str, np.ndarray]:
        batcher = Batcher(
            fn, name="m", max_queue_delay_ms=10_000, on_batch=lambda n, w: sizes.append(n)
        )
        try:
            return await batcher.submit(rows([1, 2]), 2)
        finally:
            await batcher.close()

    # A 10 s queue delay would show as a hung test: a lone request must not wait for it.
    out = run(asyncio.wait_for(main(), 5))
    np.testing.assert_array_equal(out["y"].ravel(), [3, 5])
    assert fn.calls == [2] and sizes == [2]


def test_concurrent_requests_merge_and_each_gets_its_rows() -> None:
    fn = Recorder()
    fn.release.clear()  # hold the first call so the others queue behind it

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(fn, name="m", max_batch_size=64)
        tasks = [asyncio.create_task(batcher.submit(rows([0, 0.5]), 2))]
        while not batcher.busy or batcher.depth:  # the first one is running
            await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(batcher.submit(rows([-i, i + 0.5]), 2)) for i in range(1, 20)]
        while batcher.depth < 19:
            await asyncio.sleep(0.001)
        fn.release.set()
        try:
            return await asyncio.gather(*tasks)
        finally:
            await batcher.close()

    results = run(main())
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"].ravel(), [-2 * i + 1, 2 * i + 2])
    assert fn.calls == [2, 38]  # the first alone, the 19 that queued behind it as one batch


UNLUCKY = [float(-v) for v in range(1, 17)]
UNLUCKY[5] = 13.0  # the request the Recorder fails on


def run_unlucky_batch(fn: Recorder, first: list[float], **batcher_args: Any) -> list[Any]:
    """Request ``r0`` (``first``) runs alone, held, while 16 one-row requests ``r1``..``r16``
    (:data:`UNLUCKY`, ``r6`` failing) queue behind it; their results (or errors), in order."""
    fn.release.clear()

    async def main() -> list[Any]:
        batcher = Batcher(fn, name="m", max_batch_size=64, **batcher_args)
        tasks = [asyncio.create_task(batcher.submit(rows(first), len(first), context="r0"))]
        await asyncio.sleep(0.01)
        tasks += [
            asyncio.create_task(batcher.submit(rows([v]), 1, context=f"r{k + 1}"))
            for k, v in enumerate(UNLUCKY)
        ]
        while batcher.depth < 16:
            await asyncio.sleep(0.001)
        fn.release.set()
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await batcher.close()

    return run(main())  # type: ignore[no-any-return]


def test_failing_request_is_isolated_from_its_batch() -> None:
    fn = Recorder()
    results = run_unlucky_batch(fn, [0])
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], PredictionError)
    assert "ValueError: unlucky" in str(errors[0])
    assert isinstance(results[6], PredictionError)
    for r, v in zip(results, [0.0, *UNLUCKY]):
        if not isinstance(r, BaseException):
            assert r["y"].item() == 2 * v + 1
    assert 16 in fn.calls  # the whole batch was tried first


def test_on_done_sees_each_model_call_that_answered_and_its_requests() -> None:
    """What a prediction log records from: each call that answered, with the contexts of its
    requests in row order; the failed request is in none, nor is a split batch's failed try."""
    calls: list[tuple[list[Any], list[int], np.ndarray, np.ndarray]] = []

    def on_done(contexts: list[Any], rows: list[int], inputs: Any, outputs: Any) -> None:
        calls.append((contexts, rows, inputs["x"].ravel(), outputs["y"].ravel()))

    results = run_unlucky_batch(Recorder(), [0, 0.5], on_done=on_done)
    assert isinstance(results[6], PredictionError)
    seen = [c for contexts, _, _, _ in calls for c in contexts]
    assert sorted(seen) == sorted(f"r{k}" for k in range(17) if k != 6)
    assert calls[0][:2] == (["r0"], [2])
    values = {"r0": [0.0, 0.5], **{f"r{k + 1}": [v] for k, v in enumerate(UNLUCKY)}}
    for contexts, counts, x, y in calls:
        assert counts == [len(values[c]) for c in contexts]
        np.testing.assert_array_equal(x, [v for c in contexts for v in values[c]])
        np.testing.assert_array_equal(y, x * 2 + 1)
    assert len(calls) > 2  # the batch of 16 was answered in pieces around the failure


def test_requests_whose_inputs_rows_differ_run_alone() -> None:
    """Rows of ``x`` and ``c`` would not line up in a stacked batch (nor in a log's split of
    it): such a request is its own model call, while ordinary ones still batch."""
    fn = Recorder()
    fn.release.clear()
    seen: list[list[Any]] = []

    async def main() -> list[Any]:
        batcher = Batcher(fn, name="m", max_batch_size=64, on_done=lambda c, *_: seen.append(c))
        first = asyncio.create_task(batcher.submit(rows([0]), 1, context="first"))
        await asyncio.sleep(0.01)
        odd = [{**rows([k]), "c": np.zeros(3, np.float32)} for k in (1, 2)]
        tasks = [asyncio.create_task(batcher.submit(o, 1, context=f"odd{k}")) for k, o in
                 enumerate(odd)]  # fmt: skip
        tasks += [asyncio.create_task(batcher.submit(rows([k]), 1, context=f"r{k}"))
                  for k in (3, 4)]  # fmt: skip
        while batcher.depth < 4:
            await asyncio.sleep(0.001)
        fn.release.set()
        try:
            return await asyncio.gather(first, *tasks)
        finally:
            await batcher.close()

    results = run(main())
    assert [r["y"].item() for r in results] == [1, 3, 5, 7, 9]
    assert seen == [["first"], ["odd0"], ["odd1"], ["r3", "r4"]]


def test_bounded_queue_refuses_at_once() -> None:
    fn = Recorder()
    fn.release.clear()

    async def main() -> list[Any]:
        batcher = Batcher(fn, name="m", max_batch_size=2, max_queue_size=3)
        tasks = [asyncio.create_task(batcher.submit(rows([0]), 1))]
        while not batcher.busy or batcher.depth:  # the first one is running
            await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(batcher.submit(rows([i]), 1)) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        refused = [t for t in tasks if t.done()]
        fn.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return [len(refused), *results]

    refused, *results = run(main())
    overloaded = [r for r in results if isinstance(r, OverloadedError)]
    assert refused == len(overloaded) == 6  # 1 running + 3 queued admitted
    assert "max_queue_size 3" in str(overloaded[0])
    answered = [r for r in results if isinstance(r, dict)]
    assert sorted(r["y"].item() for r in answered) == [1, 3, 5, 7]


def test_timeout_and_shapes_that_cannot_merge() -> None:
    fn = Recorder(delay=0.2)

    async def main() -> tuple[Any, Any, Any]:
        batcher = Batcher(fn, name="m")
        slow = asyncio.create_task(batcher.submit(rows([1]), 1))
        while not batcher.busy or batcher.depth:  # the first one is running
            await asyncio.sleep(0.001)
        late = asyncio.create_task(batcher.submit(rows([2]), 1, timeout=0.01))
        wide = asyncio.create_task(batcher.submit({"x": np.ones((1, 3), np.float32)}, 1))
        results = await asyncio.gather(slow, late, wide, return_exceptions=True)
        await batcher.close()
        return tuple(results)

    slow, late, wide = run(main())
    assert slow["y"].item() == 3
    assert isinstance(late, DeadlineExceededError) and "timeout of 0.01 s" in str(late)
    np.testing.assert_array_equal(wide["y"], [[3, 3, 3]])
    assert fn.calls == [1, 1]  # the timed-out request never ran; the (1, 3) one ran alone


def test_a_model_that_cannot_batch_gets_one_request_at_a_time() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def total(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(30)
        calls.append(len(inputs["x"]))
        return {"sum": np.array([inputs["x"].sum()])}  # one row, whatever the batch

    async def main() -> tuple[list[dict[str, np.ndarray]], int]:
        batcher = Batcher(total, name="m", max_batch_size=8)
        tasks = [asyncio.create_task(batcher.submit(rows([0]), 1))]
        while not batcher.busy or batcher.depth:
            await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(batcher.submit(rows([i]), 1)) for i in range(1, 6)]
        while batcher.depth < 5:
            await asyncio.sleep(0.001)
        gate.set()
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results, batcher.max_batch_size

    results, max_batch_size = run(main())
    assert [r["sum"].item() for r in results] == [0, 1, 2, 3, 4, 5]
    assert calls == [1, 5, 1, 1, 1, 1, 1] and max_batch_size == 1


# -- through the server ----------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


async def _fire(url: str, model: str, xs: list[np.ndarray]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(xs))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"/v2/models/{model}/infer",
                    json={
                        "inputs": [
                            {"name": "x", "datatype": "FP32", "shape": list(x.shape),
                             "data": x.ravel().tolist()}
                        ]
                    },
                )
                for x in xs
            )
        )  # fmt: skip


def test_server_batches_under_load_and_answers_row_by_row(
    server: LiveServer, client: httpx.Client
) -> None:
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(48)]
    responses = asyncio.run(_fire(server.url, "slow", xs))
    for x, r in zip(xs, responses):
        assert r.status_code == 200, r.text
        y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(len(x), 3)
        np.testing.assert_allclose(y, tiny_reference(x, 0), rtol=1e-5, atol=1e-5)
    text = client.get("/metrics").text
    calls = _metric(text, "modelport_batch_size_count", model="slow", version="1")
    rows_total = _metric(text, "modelport_batch_size_sum", model="slow", version="1")
    assert rows_total == sum(len(x) for x in xs)
    assert calls < len(xs)  # some calls carried several requests
    assert _metric(text, "modelport_batch_size_bucket", model="slow", version="1", le="1.0") < calls


def test_one_failing_request_in_a_busy_batch(server: LiveServer, client: httpx.Client) -> None:
    xs = [np.array([[i / 2, 1.0]], np.float32) for i in range(24)]
    xs[7] = np.array([[13.0, 1.0]], np.float32)
    responses = asyncio.run(_fire(server.url, "flaky", xs))
    for i, (x, r) in enumerate(zip(xs, responses)):
        if i == 7:
            assert r.status_code == 500, r.text
            assert "model 'flaky' failed (request id " in r.json()["error"]
        else:
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == (x * 2 + 1).ravel().tolist()
    assert_healthy(client)


def test_overload_gives_fast_503s_and_correct_answers(tmp_path: Path) -> None:
    model = slow_model(
        tmp_path / "slow", 0.05, "{max_batch_size: 2, max_queue_delay_ms: 0, max_queue_size: 4}"
    )
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(60)]
    with start(model) as live:
        responses = asyncio.run(_fire(live.url, "slow", xs))
        refused = [r for r in responses if r.status_code == 503]
        admitted = [(x, r) for x, r in zip(xs, responses) if r.status_code == 200]
        assert len(refused) + len(admitted) == len(xs)
        assert refused and admitted
        for r in refused:
            assert r.headers["retry-after"] == "1"
            assert "overloaded" in r.json()["error"]
        for x, r in admitted:
            y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(1, 3)
            np.testing.assert_allclose(y, tiny_reference(x, 0), rtol=1e-5, atol=1e-5)
        with httpx.Client(base_url=live.url) as client:
            text = client.get("/metrics").text
            refused_count = _metric(
                text,
                "modelport_requests_total",
                model="slow",
                version="1",
                protocol="rest",
                status="503",
            )
            assert refused_count == len(refused)
            ok = client.post("/v2/models/slow/infer", json={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
            })  # fmt: skip
            assert ok.status_code == 200
            assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("timeout_us", [1])
def test_request_timeout_parameter(server: LiveServer, timeout_us: int) -> None:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "parameters": {"timeout": timeout_us},
    }
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v2/models/slow/infer", json=body)
        assert r.status_code == 504 and "timeout" in r.json()["error"]
        assert_healthy(client)


def test_successive_event_loops_each_get_a_dispatcher(tiny_onnx: Path) -> None:
    """``asyncio.run`` per call (as a Lambda handler does) must not hang on the second call."""
    from modelport.protocol.types import InferenceRequest
    from modelport.runtime.dataplane import DataPlane
    from modelport.runtime.repository import discover

    dataplane = DataPlane(discover(tiny_onnx))
    dataplane.load_sync()
    x = np.ones((1, 4), np.float32)
    for _ in range(3):
        response = asyncio.run(
            asyncio.wait_for(dataplane.infer("tiny", None, InferenceRequest({"x": x})), 30)
        )
        np.testing.assert_allclose(response.outputs["y"], tiny_reference(x), rtol=1e-5, atol=1e-5)
    asyncio.run(dataplane.close())
