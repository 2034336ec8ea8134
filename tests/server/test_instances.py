"""``instances``: several batches of one model in flight at once (Triton's instance count),
so that one batch's preprocessing overlaps another's compute; and the defaults a model on a
GPU gets (two instances, larger batches), decided by the runner from where the model runs."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelport
from modelport.config import ModelConfig, load_config
from modelport.cpus import default_threads
from modelport.errors import ConfigError
from modelport.model import Model
from modelport.runtime.batcher import Batcher
from modelport.runtime.runner import ModelRunner
from modelport.signature import Signature, TensorSpec
from tests.server.conftest import infer_body, start, tiny_reference, write


class Overlapping:
    """A batch function that records how many calls run at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.threads: set[str] = set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
        return {"y": inputs["x"] * 2}


def _run_many(batcher: Batcher, n: int) -> list[Any]:
    async def main() -> list[Any]:
        xs = [np.array([[float(i)]], np.float32) for i in range(n)]
        answers = await asyncio.gather(*(batcher.submit({"x": x}, 1) for x in xs))
        await batcher.close()
        return [a["y"].item() for a in answers]

    return asyncio.run(main())


@pytest.mark.parametrize("instances", [1, 2, 3])
def test_batches_in_flight_are_bounded_by_instances(instances: int) -> None:
    fn = Overlapping(0.05)
    batcher = Batcher(fn, name="m", max_batch_size=2, instances=instances)
    answers = _run_many(batcher, 16)
    assert answers == [2.0 * i for i in range(16)]  # every caller got its own row back
    assert fn.peak == instances
    assert len(fn.threads) == instances


def test_instances_must_be_positive() -> None:
    with pytest.raises(ValueError, match="instances must be at least 1, got 0"):
        Batcher(lambda x: x, name="m", instances=0)
    from modelport.config import parse_config

    for bad in (0, 65, "two"):
        with pytest.raises(ConfigError, match="instances"):
            parse_config({"instances": bad})


class TwoStage(Model):
    """The first batch's ``predict`` waits until the next batch's ``preprocess_batch`` has
    begun: it sees that only when preprocessing overlaps compute."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def __init__(self, wait: float) -> None:
        super().__init__(config=ModelConfig(name="two-stage"))
        self.wait = wait
        self.changed = threading.Condition()
        self.preprocessed = 0
        self.predicted = 0
        self.overlapped = False

    def preprocess_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.changed:
            self.preprocessed += 1
            self.changed.notify_all()
        return inputs

    def predict(self, inputs: Any) -> Any:
        with self.changed:
            first = self.predicted == 0
            self.predicted += 1
            if first:
                self.overlapped = self.changed.wait_for(
                    lambda: self.preprocessed >= 2, timeout=self.wait
                )
        return {"y": inputs["x"] + 1}


def test_two_instances_overlap_one_batch_preprocessing_with_another_compute() -> None:
    model = TwoStage(wait=10.0)
    batcher = Batcher(model.predict_batch, name="m", max_batch_size=1, instances=2)
    assert _run_many(batcher, 2) == [1.0, 2.0]
    assert model.overlapped

    model = TwoStage(wait=0.3)  # one instance: the second batch starts after the first ends
    batcher = Batcher(model.predict_batch, name="m", max_batch_size=1, instances=1)
    assert _run_many(batcher, 2) == [1.0, 2.0]
    assert not model.overlapped


class ClaimsGpu(Model):
    """A model that says it computes on a GPU: what the runner decides from that."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes: set[int] = set()

    @property
    def on_gpu(self) -> bool:
        return True

    def predict(self, inputs: Any) -> Any:
        self.sizes.add(len(inputs["x"]))
        return {"y": np.asarray(inputs["x"]) * 3}


def test_a_model_on_a_gpu_gets_two_instances_and_larger_batches() -> None:
    runner = ModelRunner(ClaimsGpu(config=ModelConfig(name="g"), auto_batching=False))
    runner.load()
    assert runner.batcher.instances == 2
    assert runner.batcher.max_batch_size == 128  # not the CPU's 32
    timed = ClaimsGpu(config=ModelConfig(name="g"))
    ModelRunner(timed).load()
    assert 512 in timed.sizes  # timed at start on sizes up to 512 (the CPU's stop at 256)
    explicit = load_config_text("instances: 3\nbatching: {max_batch_size: 16}\n")
    runner = ModelRunner(ClaimsGpu(config=explicit))
    runner.load()
    assert (runner.batcher.instances, runner.batcher.max_batch_size) == (3, 16)
    cpu = ModelRunner(modelport.model.Model(config=ModelConfig(name="c")))
    cpu.choose_instances()
    assert cpu.batcher.instances == 1


def load_config_text(text: str) -> ModelConfig:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return load_config(write(Path(tmp) / "modelport.yaml", text))


def test_instances_share_the_default_threads(tiny_onnx: Path) -> None:
    one = modelport.load(tiny_onnx).ensure_loaded()
    two = modelport.load(tiny_onnx, instances=2).ensure_loaded()
    assert one.session.get_session_options().intra_op_num_threads == default_threads()
    assert two.session.get_session_options().intra_op_num_threads == max(1, default_threads() // 2)


def test_served_with_two_instances(tmp_path: Path, tiny_onnx: Path) -> None:
    directory = tmp_path / "tiny"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    write(directory / "modelport.yaml", "instances: 2\nbatching: {max_batch_size: 4}\n")
    xs = np.random.default_rng(0).normal(size=(48, 1, 4)).astype(np.float32)
    with start(directory) as live:
        (runner,) = live.dataplane.registry.runners()
        assert runner.batcher.instances == 2

        def call(x: np.ndarray) -> np.ndarray:
            with httpx.Client(base_url=live.url, timeout=30) as client:
                response = client.post("/v2/models/tiny/infer", json=infer_body(x))
                assert response.status_code == 200, response.text
                out = response.json()["outputs"][0]
                return np.asarray(out["data"], np.float32).reshape(out["shape"])

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, xs))
    for x, answer in zip(xs, answers):
        np.testing.assert_allclose(answer, tiny_reference(x), rtol=1e-5, atol=1e-5)
