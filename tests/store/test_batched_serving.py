"""Through a real server under concurrent load: batched requests are logged one row each, with
exactly the inputs the caller sent and the outputs it got back."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from modelport.store.hook import attach
from tests.server.conftest import LiveServer, infer_body, slow_model


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_batched_requests_are_logged_with_their_own_rows(tmp_path: Path, writer: str) -> None:
    # 30 ms per model call: concurrent requests pile up and run as batches.
    slow_model(tmp_path / "repo" / "slow", 0.03, "{max_batch_size: 64, max_queue_delay_ms: 2}")
    settings = Settings(model_path=tmp_path / "repo", grpc_port=None)
    dataplane = build_dataplane(settings)
    log = attach(dataplane, f"sqlite:///{tmp_path / 'log.db'}", writer=writer)
    rng = np.random.default_rng(7)
    sent = {f"b-{i}": rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(120)}
    answered: dict[str, list[float]] = {}
    failures: list[str] = []

    def work(ids: list[str], url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for rid in ids:
                r = client.post("/v2/models/slow/infer", json=infer_body(sent[rid], id=rid))
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                answered[rid] = r.json()["outputs"][0]["data"]

    try:
        with LiveServer(dataplane, settings) as server:
            ids = list(sent)
            pool = [threading.Thread(target=work, args=(ids[k::12], server.url)) for k in range(12)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            metrics = httpx.get(f"{server.url}/metrics").text
        assert log.flush(timeout=60)
        rows = {r["request_id"]: r for r in log.predictions("slow")}
    finally:
        log.close()
    assert not failures and len(answered) == len(sent)
    # Batches did form (rows per model call above any one request's 3) ...
    batch_sum = _metric(metrics, 'modelport_batch_size_sum{model="slow"')
    batch_count = _metric(metrics, 'modelport_batch_size_count{model="slow"')
    assert batch_sum / batch_count > 3
    # ... and each request's row holds its own inputs and the outputs it was answered.
    assert set(rows) == set(sent)
    for rid, x in sent.items():
        inputs = json.loads(rows[rid]["inputs"])["x"]
        assert inputs["shape"] == list(x.shape)
        np.testing.assert_array_equal(np.asarray(inputs["data"], np.float32), x.ravel())
        outputs = next(iter(json.loads(rows[rid]["outputs"]).values()))
        np.testing.assert_allclose(outputs["data"], answered[rid], rtol=1e-6)
        assert rows[rid]["status"] == "ok" and rows[rid]["latency_ms"] > 0


def _metric(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise AssertionError(f"{prefix} not in /metrics")
