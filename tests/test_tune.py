"""``modelport tune``: it sweeps the settings it is given with real servers (or runners
in-process), reports each point and the frontier, and writes a ``modelport.yaml`` that loads,
keeps the file's other keys and comments, and holds settings among those swept. Plus the
batching profile a model gets when nobody set its batching (issue 21, item 2).

Points last a fraction of a second: these check what is swept and written, never how fast.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelport.cli import main
from modelport.config import BatchingConfig, load_config
from modelport.loader import resolve
from modelport.perf.profile import (
    BatchTiming,
    choose_batching,
    explicit_batching,
    startup_batching,
)
from modelport.perf.session import Step
from modelport.perf.tune import Point, Setting, choose, frontier, update_yaml
from tests.builders import onnx_mlp
from tests.test_extras import CLI, assert_names_extra, run_without

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "iris"
QUICK = ["--seconds", "0.2", "--warmup", "0.05", "--concurrency", "4", "--json"]


def tune_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    try:
        main(["tune", *argv])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    folder = tmp_path / "iris"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("__*"))
    return folder


def test_tune_the_demo_in_process_writes_what_it_swept(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (demo / "modelport.yaml").read_text()
    result = tune_json(
        capsys, str(demo), "--mode", "local", "--threads", "1,2", "--batch-sizes", "1,8",
        "--delays", "0,1", *QUICK,
    )  # fmt: skip
    assert result["written"] and result["file"] == str(demo / "modelport.yaml")
    swept = {(p["setting"]["intra_op_threads"], p["setting"]["max_batch_size"],
              p["setting"]["max_queue_delay_ms"]) for p in result["points"]}  # fmt: skip
    # One knob at a time from the demo's own (64, 2 ms): threads, then batch, then delay.
    assert {(1, 64, 2.0), (2, 64, 2.0)} <= swept
    assert {b for _, b, _ in swept} == {64, 1, 8} and {d for *_, d in swept} >= {0.0, 1.0}
    assert any(p["round"] == 2 for p in result["points"])  # the leaders, measured again
    assert any(p["frontier"] for p in result["points"])
    for point in result["points"]:
        assert point["requests"] > 0 and point["server"]["requests"] == point["requests"]
    chosen = result["chosen"]["setting"]
    config = load_config(demo / "modelport.yaml")
    assert config.batching.max_batch_size == chosen["max_batch_size"] in (1, 8, 64)
    assert config.batching.max_queue_delay_ms == chosen["max_queue_delay_ms"] in (0, 1, 2)
    assert config.runtime["intra_op_threads"] == chosen["intra_op_threads"] in (1, 2)
    # The other keys stay as they were, and a note says where the settings came from.
    assert (config.name, config.version) == ("iris", "1")
    text = (demo / "modelport.yaml").read_text()
    assert before.splitlines()[:3] == text.splitlines()[:3]
    assert "# modelport tune" in text and "budget 50 ms" in text


def test_tune_with_real_servers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    onnx_mlp(folder / "model.onnx", [4, 8, 3])
    (folder / "modelport.yaml").write_text(
        "# my model\nname: tiny\nbatching: {max_batch_size: 4, max_queue_size: 99}\n"
    )
    result = tune_json(
        capsys, str(folder), "--threads", "1", "--batch-sizes", "4,16", "--delays", "1",
        "--workers", "1", "--confirm", "0", *QUICK,
    )  # fmt: skip
    assert result["mode"] == "serve" and result["written"]
    assert {p["setting"]["max_batch_size"] for p in result["points"]} == {4, 16}
    for point in result["points"]:  # each measured against its own server's /metrics
        assert point["server"]["requests"] == point["requests"] > 0
        assert point["server"]["statuses"] == {"rest/200": point["requests"]}
    config = load_config(folder / "modelport.yaml")
    assert config.batching.max_batch_size == result["chosen"]["setting"]["max_batch_size"]
    assert config.batching.max_queue_delay_ms == 1.0
    assert config.batching.max_queue_size == 99  # a key tune does not set is kept
    assert (folder / "modelport.yaml").read_text().startswith("# my model\nname: tiny\n")


def test_a_dry_run_and_no_point_within_the_budget(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (demo / "modelport.yaml").read_text()
    result = tune_json(
        capsys, str(demo), "--mode", "local", "--threads", "1", "--batch-sizes", "8",
        "--delays", "1", "--latency-budget-ms", "0.001", "--dry-run", *QUICK,
    )  # fmt: skip
    assert not result["written"] and (demo / "modelport.yaml").read_text() == before
    assert result["within_budget"] is False
    lowest = min(p["p99_ms"] for p in result["points"])
    assert result["chosen"]["p99_ms"] == lowest


def test_tune_serve_names_the_extra(tmp_path: Path) -> None:
    result = run_without(["uvicorn"], CLI, "tune", str(DEMO), "--dry-run", cwd=tmp_path)
    assert_names_extra(result, 'pip install "modelport[serve]"')


# -- the pieces -----------------------------------------------------------------------------


def step(throughput: float, p99: float, errors: int = 0) -> Step:
    return Step("json", 8, None, int(throughput), errors, {}, 1.0, throughput, throughput,
                p99 / 2, p99, p99, p99 / 2, p99)  # fmt: skip


def test_frontier_and_choice() -> None:
    a, b, c, d = (Setting(1, n, 1.0) for n in (1, 8, 32, 64))
    points = [Point(a, step(100, 1)), Point(b, step(300, 5)), Point(c, step(250, 9)),
              Point(d, step(500, 80)), Point(d, step(900, 2, errors=3))]  # fmt: skip
    frontier(points)
    assert [p.frontier for p in points] == [True, True, False, True, False]
    assert choose(points, 50.0) == (points[1], True)  # the erring point is never chosen
    assert choose(points, 100.0) == (points[3], True)
    assert choose(points, 0.5) == (points[0], False)


YAML = """\
# the iris demo
name: iris
batching:
  max_batch_size: 64    # old comment
  max_queue_size: 100
# about the runtime
runtime: {intra_op_threads: 4, inter_op_threads: 1}
warmup: {batch_sizes: [1]}
"""


def test_update_yaml_keeps_the_rest() -> None:
    new = update_yaml(
        YAML, {"batching": {"max_batch_size": 8, "max_queue_delay_ms": 0.5},
               "runtime": {"intra_op_threads": 1}}, "# modelport tune: x",
    )  # fmt: skip
    assert new == (
        "# the iris demo\nname: iris\n# modelport tune: x\n"
        "batching: {max_batch_size: 8, max_queue_size: 100, max_queue_delay_ms: 0.5}\n"
        "# about the runtime\nruntime: {intra_op_threads: 1, inter_op_threads: 1}\n"
        "warmup: {batch_sizes: [1]}\n"
    )
    again = update_yaml(new, {"batching": {"max_batch_size": 16}}, "# modelport tune: y")
    assert again.count("# modelport tune") == 1 and "# modelport tune: y" in again
    assert update_yaml("name: m\n", {"runtime": {"intra_op_threads": 2}}, "# n") == (
        "name: m\n# n\nruntime: {intra_op_threads: 2}\n"
    )


def test_batching_chosen_from_timings() -> None:
    # rows/s: 1000, 1900, 3600, 6000, 6600, 7000, 7200 (within 5 % of the best from 32 on)
    timings = [BatchTiming(n, n / r) for n, r in
               ((1, 1000), (2, 1900), (4, 3600), (8, 6000), (16, 6600), (32, 7000),
                (64, 7200))]  # fmt: skip
    assert choose_batching(timings, 50.0) == {"max_batch_size": 32, "max_queue_delay_ms": 1.0}
    # One reading slowed by a neighbour (8 rows) neither hides the sizes after it nor wins.
    noisy = [t if t.size != 8 else BatchTiming(8, 8 / 2000) for t in timings]
    assert choose_batching(noisy, 50.0)["max_batch_size"] == 32
    # Within 2.4 ms a call may take 1.2 ms: batch 4 (1.11 ms) fits, batch 8 (1.33 ms) not.
    assert choose_batching(timings, 2.4)["max_batch_size"] == 4
    assert choose_batching(timings, 0.1)["max_batch_size"] == 1
    assert math.isclose(choose_batching(timings, 5.0)["max_queue_delay_ms"], 0.5)


def test_startup_batching_only_where_nobody_set_it(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    onnx_mlp(folder / "model.onnx", [4, 8, 3])
    model = resolve(folder)
    assert not explicit_batching(model)
    chosen = startup_batching(model, budget_ms=50.0)
    assert chosen is not None and chosen.max_batch_size in (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert chosen.max_queue_size == BatchingConfig().max_queue_size
    (folder / "modelport.yaml").write_text("batching: {max_batch_size: 32}\n")  # the default, set
    assert explicit_batching(resolve(folder))
    assert startup_batching(resolve(folder)) is None


def test_a_served_model_gets_its_batching_from_its_timings(tmp_path: Path) -> None:
    """The runner chooses at load, unless the file sets batching or the option turns it off."""
    from modelport.runtime.runner import ModelRunner

    folder = tmp_path / "auto"
    folder.mkdir()
    onnx_mlp(folder / "model.onnx", [4, 8, 3])
    runner = ModelRunner(resolve(folder))
    runner.load()
    chosen = runner.model.batching
    assert chosen.max_batch_size in (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert 0.1 <= chosen.max_queue_delay_ms <= 2.0
    assert runner.batcher.max_batch_size == chosen.max_batch_size

    off = ModelRunner(resolve(folder, auto_batching=False))
    off.load()
    assert off.model.batching == BatchingConfig()
    (folder / "modelport.yaml").write_text("batching: {max_queue_delay_ms: 5}\n")
    explicit = ModelRunner(resolve(folder))
    explicit.load()
    assert explicit.model.batching == BatchingConfig(max_queue_delay_ms=5)


LENGTHS_MODEL = '''
import numpy as np
from modelport import Model, Signature, TensorSpec
from modelport.model import as_texts


class Lengths(Model):
    """Words per text; remembers every text its batches held."""

    request_signature = Signature(
        inputs=(TensorSpec("text", "BYTES", (-1,)),), outputs=(TensorSpec("words", "INT64", (-1,)),)
    )
    signature = request_signature
    seen = set()

    def predict(self, inputs):
        texts = as_texts(inputs["text"])
        type(self).seen.update(texts)
        return {"words": np.array([len(t.split()) for t in texts], dtype=np.int64)}
'''


def test_start_up_timing_uses_the_models_own_examples(tmp_path: Path) -> None:
    """With ``warmup.inputs``, the batch sizes are timed on those real rows, not on generated
    one-word text."""
    folder = tmp_path / "lengths"
    folder.mkdir()
    (folder / "model.py").write_text(LENGTHS_MODEL)
    examples = ["a real sentence of seven words here", "and another, shorter one"]
    (folder / "modelport.yaml").write_text(json.dumps({"warmup": {"inputs": {"text": examples}}}))
    model = resolve(folder)
    chosen = startup_batching(model, budget_ms=50.0)
    assert chosen is not None and chosen.max_batch_size >= 1
    assert type(model).seen == set(examples)  # type: ignore[attr-defined]

    (folder / "modelport.yaml").unlink()
    model = resolve(folder)
    type(model).seen.clear()  # type: ignore[attr-defined]
    assert startup_batching(model, budget_ms=50.0) is not None
    assert type(model).seen and not type(model).seen & set(examples)  # type: ignore[attr-defined]


def test_warmup_inputs_the_model_refuses_leave_the_defaults_and_the_model_serving(
    tmp_path: Path,
) -> None:
    """Examples that do not fit the signature cannot be timed: no batching is chosen from them,
    and the model still loads and answers."""
    from modelport.runtime.runner import ModelRunner

    folder = tmp_path / "bad-examples"
    folder.mkdir()
    onnx_mlp(folder / "model.onnx", [4, 8, 3])
    (folder / "modelport.yaml").write_text(json.dumps({"warmup": {"inputs": [[1, 2]]}}))
    model = resolve(folder)
    assert startup_batching(model, budget_ms=50.0) is None
    runner = ModelRunner(resolve(folder))
    runner.load()
    assert runner.ready and runner.batcher.max_batch_size == BatchingConfig().max_batch_size
    import numpy as np

    out = runner.model.predict_batch({"x": np.ones((2, 4), np.float32)})
    assert next(iter(out.values())).shape[0] == 2
