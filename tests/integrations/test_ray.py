"""Ray Data: map_batches with an actor pool on a real local Ray instance (2 CPUs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.integrations import cache_info
from tests.integrations.conftest import (
    IRIS,
    IRIS_FEATURES,
    ROWS,
    TEXTS,
    assert_answers,
    assert_batched,
    assert_rows_equal,
    batch_sizes,
    engine,
    expected_answers,
    images,
    iris_rows,
    read_predictions,
    run_example,
    write_rows,
)

pytestmark = pytest.mark.ray

ray = engine("ray", "ray")
engine("ray.data", "ray")

from modelport.integrations.ray import ModelPredictor, predict_dataset  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def _rows(features: np.ndarray) -> Any:
    items = [
        {"id": i, "f0": r[0], "f1": r[1], "f2": r[2], "f3": r[3]} for i, r in enumerate(features)
    ]
    return ray.data.from_items(items, override_num_blocks=6)


class _Recording(ModelPredictor):
    """Adds each actor's process id and its cache's load count to every row."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().__call__(batch)
        info = cache_info(self.spec.path)
        out["pid"] = np.full(len(out["y"]), info["pid"])
        out["loads"] = np.full(len(out["y"]), info["loads"])
        return out


def test_actor_pool_matches_in_process(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    ds = _rows(features)
    out = predict_dataset(ds, tiny_onnx, columns=["f0", "f1", "f2", "f3"], concurrency=2)
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert set(rows[0]) == {"id", "f0", "f1", "f2", "f3", "y"}
    assert_rows_equal(np.stack([r["y"] for r in rows]), expected_y)


def test_each_actor_loads_once(tiny_onnx: Path, features: np.ndarray) -> None:
    ds = _rows(features).map_batches(
        _Recording,
        fn_constructor_args=(tiny_onnx,),
        fn_constructor_kwargs={"columns": ["f0", "f1", "f2", "f3"]},
        batch_size=8,
        batch_format="numpy",
        concurrency=2,
        num_cpus=1,
    )
    rows = ds.take_all()
    assert len(rows) == len(features)
    per_actor: dict[int, set[int]] = {}
    for r in rows:
        per_actor.setdefault(int(r["pid"]), set()).add(int(r["loads"]))
    assert per_actor, "no rows came back"
    assert all(loads == {1} for loads in per_actor.values()), per_actor


def test_tensor_columns_multi_io(
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    ids = np.arange(len(multi_inputs["a"]))
    ds = ray.data.from_numpy(multi_inputs["a"]).rename_columns({"data": "a"})
    ds = ds.zip(ray.data.from_numpy(multi_inputs["b"]).rename_columns({"data": "b"}))
    ds = ds.zip(ray.data.from_numpy(ids).rename_columns({"data": "id"}))
    out = predict_dataset(ds, multi_io_onnx, prefix="pred_", batch_size=16)
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert_rows_equal(np.stack([r["pred_sum"] for r in rows]), expected_multi["sum"])
    assert_rows_equal(np.array([r["pred_argmax"] for r in rows]), expected_multi["argmax"])


def test_predictor_is_a_plain_callable(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    predictor = ModelPredictor(tiny_onnx, keep_columns=False, batch_size=10)
    out = predictor({"x": features})
    assert list(out) == ["y"]
    assert_rows_equal(out["y"], expected_y)
    with pytest.raises(modelport.InvalidInputError, match=r"no column\(s\) \['f9'\]"):
        ModelPredictor(tiny_onnx, columns=["f9"])({"x": features})


def test_bad_rows_fail_with_the_reason_and_ray_keeps_working(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    ds = _rows(features)
    # Ray Data wraps errors raised in actors; the original type and message are in its text.
    with pytest.raises(
        ray.exceptions.UserCodeException,
        match=r"InvalidInputError: column 'f0' \(input 'x'\): expected 2 dimensions",
    ):
        predict_dataset(ds, tiny_onnx, columns=["f0"]).take_all()
    out = predict_dataset(ds, tiny_onnx, columns=["f0", "f1", "f2", "f3"])
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert_rows_equal(np.stack([r["y"] for r in rows]), expected_y)


def test_batches_follow_batch_size(
    recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    columns = ["f0", "f1", "f2", "f3"]
    out = predict_dataset(_rows(features), directory, columns=columns, batch_size=10, log=str(log))
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert_rows_equal(np.array([r["y"] for r in rows]), features.sum(axis=1))
    assert_batched(log, ROWS, 10)


def _sorted(ds: Any) -> list[dict[str, Any]]:
    return sorted(ds.take_all(), key=lambda r: r["id"])


def test_the_contract_answers_each_row_as_model_payload(text_dir: Path, image_dir: Path) -> None:
    texts = ray.data.from_items([{"id": i, "body": t} for i, t in enumerate(TEXTS)])
    out = predict_dataset(texts, text_dir, columns="body", batch_size=5)
    assert_answers(_sorted(out), expected_answers("text", text_dir, TEXTS), "text")
    flowers = iris_rows()
    frame = ray.data.from_items([{"id": i, **f} for i, f in enumerate(flowers)])
    rows = _sorted(predict_dataset(frame, IRIS, batch_size=4))
    assert set(rows[0]) == {"id", *IRIS_FEATURES, "species", "probabilities"}
    assert_answers(rows, expected_answers("iris", IRIS, flowers), "iris")
    raw = _sorted(predict_dataset(frame, IRIS, columns=IRIS_FEATURES, contract="tensors"))
    assert set(raw[0]) == {"id", *IRIS_FEATURES, "label", "probabilities"}
    pictures = images()
    frame = ray.data.from_items([{"id": i, "image": p} for i, p in enumerate(pictures)])
    out = predict_dataset(frame, image_dir, columns=["image"])
    payloads = [{"image": p} for p in pictures]
    assert_answers(_sorted(out), expected_answers("image", image_dir, payloads), "image")


def test_bad_rows_are_isolated_and_good_rows_written_once(
    recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    bad = {5, 40, 77}
    items = [
        {"id": i, "feats": list(map(float, r[: 3 if i in bad else 4]))}
        for i, r in enumerate(features)
    ]
    ds = ray.data.from_items(items, override_num_blocks=4)
    out = predict_dataset(
        ds, directory, columns="feats", on_error="column", batch_size=10, log=str(log)
    )
    rows = _sorted(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    errors = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    assert sorted(errors) == sorted(bad)
    for message in errors.values():
        assert "column 'feats' (input 'x'): dimension 1 must be 4, got shape [1, 3]" in message
    assert all(rows[i]["y"] is None for i in bad)
    good = [i for i in range(ROWS) if i not in bad]
    assert_rows_equal(np.array([rows[i]["y"] for i in good]), features.sum(axis=1)[good])
    assert sum(batch_sizes(log)) == len(good), "each good row is predicted exactly once"
    with pytest.raises(
        ray.exceptions.UserCodeException, match=r"\(row \d+ of a batch of \d+: feats=\["
    ):
        predict_dataset(ds, directory, columns="feats", log=str(log)).take_all()


def test_the_documented_map_batches_call(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    # docs/pipelines.md: ModelPredictor in your own map_batches, columns= leaving the ids out.
    out = _rows(features).map_batches(
        ModelPredictor,
        fn_constructor_args=(tiny_onnx,),
        fn_constructor_kwargs={"columns": ["f0", "f1", "f2", "f3"]},
        batch_size=16,
        batch_format="numpy",
        concurrency=(1, 2),
        num_cpus=0.5,
    )
    assert_rows_equal(np.stack([r["y"] for r in _sorted(out)]), expected_y)
    # Without columns=, every column (the id too) is stacked; the error names them.
    every = _rows(features).map_batches(
        ModelPredictor, fn_constructor_args=(tiny_onnx,), batch_size=16, batch_format="numpy"
    )
    with pytest.raises(
        ray.exceptions.UserCodeException,
        match=r"columns \['id', 'f0', 'f1', 'f2', 'f3'\] \(input 'x'\): dimension 1 must be 4",
    ):
        every.take_all()


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.parquet", features)
    out = tmp_path / "out"
    run_example("ray_parquet.py", tiny_onnx, rows, out, "--columns", "f0,f1,f2,f3")
    assert_rows_equal(read_predictions(out), expected_y)
