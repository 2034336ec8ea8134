"""Apache Beam: RunInference on the DirectRunner, batch and streaming (TestStream)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from tests.integrations.conftest import (
    ROWS,
    assert_batched,
    assert_rows_equal,
    engine,
    read_predictions,
    run_example,
    write_rows,
)

pytestmark = pytest.mark.beam

beam = engine("apache_beam", "beam")
base = engine("apache_beam.ml.inference.base", "beam")
testing = engine("apache_beam.testing.util", "beam")
test_stream = engine("apache_beam.testing.test_stream", "beam")
pipeline_options = engine("apache_beam.options.pipeline_options", "beam")

from modelport.integrations.beam import ModelportModelHandler  # noqa: E402


def _pipeline(streaming: bool = False) -> Any:
    options = pipeline_options.PipelineOptions(runner="DirectRunner", streaming=streaming)
    return beam.Pipeline(options=options)


def _keyed_matcher(expected: np.ndarray) -> Callable[[list[Any]], None]:
    def check(results: list[Any]) -> None:
        by_key = dict(results)
        assert sorted(by_key) == list(range(len(expected)))
        assert_rows_equal(np.stack([by_key[k].inference for k in sorted(by_key)]), expected)

    return check


def test_batch_pipeline_matches_in_process(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    handler = ModelportModelHandler(tiny_onnx, output="y", max_batch_size=16)
    with _pipeline() as p:
        results = (
            p
            | beam.Create(list(enumerate(features)))
            | base.RunInference(base.KeyedModelHandler(handler))
        )
        testing.assert_that(results, _keyed_matcher(expected_y))


def test_unkeyed_results_carry_their_example(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    lookup = {tuple(row.tolist()): i for i, row in enumerate(features)}

    def check(results: list[Any]) -> None:
        assert len(results) == len(features)
        order = sorted(results, key=lambda r: lookup[tuple(r.example.tolist())])
        assert all(r.model_id == str(tiny_onnx.resolve()) for r in order)
        assert all(list(r.inference) == ["y"] for r in order)
        assert_rows_equal(np.stack([r.inference["y"] for r in order]), expected_y)

    with _pipeline() as p:
        results = (
            p | beam.Create(list(features)) | base.RunInference(ModelportModelHandler(tiny_onnx))
        )
        testing.assert_that(results, check)


def test_multi_io_dict_examples(
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    examples = [
        (i, {"a": a, "b": b}) for i, (a, b) in enumerate(zip(multi_inputs["a"], multi_inputs["b"]))
    ]

    def check(results: list[Any]) -> None:
        by_key = dict(results)
        keys = sorted(by_key)
        assert keys == list(range(len(examples)))
        assert_rows_equal(
            np.stack([by_key[k].inference["sum"] for k in keys]), expected_multi["sum"]
        )
        assert_rows_equal(
            np.array([by_key[k].inference["argmax"] for k in keys]), expected_multi["argmax"]
        )

    with _pipeline() as p:
        results = (
            p
            | beam.Create(examples)
            | base.RunInference(base.KeyedModelHandler(ModelportModelHandler(multi_io_onnx)))
        )
        testing.assert_that(results, check)


def _stream(features: np.ndarray) -> Any:
    keyed = list(enumerate(features))
    stream = test_stream.TestStream()
    for start in range(0, len(keyed), 25):
        stream = stream.advance_watermark_to(start).add_elements(
            [beam.window.TimestampedValue(kv, start) for kv in keyed[start : start + 25]]
        )
    return stream.advance_watermark_to_infinity()


def test_streaming_with_test_stream(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    handler = ModelportModelHandler(tiny_onnx, output="y")
    with _pipeline(streaming=True) as p:
        results = p | _stream(features) | base.RunInference(base.KeyedModelHandler(handler))
        testing.assert_that(results, _keyed_matcher(expected_y))


_SINK: list[Any] = []


def _collect(result: Any) -> None:
    _SINK.append(result)


def test_streaming_with_batch_duration(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    # Stateful batching emits from timers; assert_that's global window would call those
    # late, so the DirectRunner (one process) collects into a list instead.
    _SINK.clear()
    handler = ModelportModelHandler(tiny_onnx, output="y", max_batch_duration_secs=1)
    with _pipeline(streaming=True) as p:
        _ = (
            p
            | _stream(features)
            | base.RunInference(base.KeyedModelHandler(handler))
            | beam.Map(_collect)
        )
    _keyed_matcher(expected_y)(list(_SINK))


def test_batching_hints_and_pickling(tiny_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "modelport.yaml").write_text("batching: {max_batch_size: 7}\n")
    handler = ModelportModelHandler(tmp_path)
    assert handler.batch_elements_kwargs() == {"max_batch_size": 7}
    assert ModelportModelHandler(tiny_onnx, max_batch_size=3).batch_elements_kwargs() == {
        "max_batch_size": 3
    }
    assert not handler.share_model_across_processes()
    shared = ModelportModelHandler(tiny_onnx, model_copies=2)
    assert shared.share_model_across_processes()
    assert shared.model_copies() == 2
    assert ModelportModelHandler(tiny_onnx, large_model=True).share_model_across_processes()
    clone = pickle.loads(pickle.dumps(handler))
    assert clone.spec == handler.spec
    model = clone.load_model()
    results = list(clone.run_inference([np.zeros(4, np.float32)], model))
    assert results[0].inference["y"].shape == (3,)


def test_bad_inputs_are_named(tiny_onnx: Path, multi_io_onnx: Path) -> None:
    handler = ModelportModelHandler(tiny_onnx)
    model = handler.load_model()
    with pytest.raises(modelport.InvalidInputError, match=r"input 'x': dimension 1 must be 4"):
        handler.run_inference([np.zeros(5, np.float32)], model)
    with pytest.raises(modelport.InvalidInputError, match=r"rows differ in shape"):
        handler.run_inference([np.zeros(4), np.zeros(3)], model)
    with pytest.raises(modelport.InvalidInputError, match=r"row 1 has inputs \['a'\]"):
        multi = ModelportModelHandler(multi_io_onnx)
        multi.run_inference(
            [{"a": np.zeros(3), "b": np.zeros(3)}, {"a": np.zeros(3)}], multi.load_model()
        )
    with pytest.raises(modelport.ConfigError, match=r"no output 'nope'; it has \['y'\]"):
        ModelportModelHandler(tiny_onnx, output="nope").load_model()
    with pytest.raises(modelport.ConfigError, match=r"take no inference_args"):
        handler.run_inference([np.zeros(4, np.float32)], model, {"temperature": 1})
    with pytest.raises(modelport.ArtifactNotFoundError, match=r"missing\.onnx"):
        ModelportModelHandler(tiny_onnx.parent / "missing.onnx")
    # The handler keeps working after each refusal.
    assert len(list(handler.run_inference([np.zeros(4, np.float32)], model))) == 1


def test_a_failing_pipeline_reports_the_input_error(tiny_onnx: Path) -> None:
    with pytest.raises(Exception, match=r"input 'x': dimension 1 must be 4"), _pipeline() as p:
        _ = (
            p
            | beam.Create([np.zeros(5, np.float32)])
            | base.RunInference(ModelportModelHandler(tiny_onnx))
        )


def test_run_inference_batches_up_to_max_batch_size(
    recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    handler = ModelportModelHandler(directory, output="y", max_batch_size=10, log=str(log))
    with _pipeline() as p:
        results = (
            p
            | beam.Create(list(enumerate(features)))
            | base.RunInference(base.KeyedModelHandler(handler))
        )
        testing.assert_that(results, _keyed_matcher(features.sum(axis=1)))
    # BatchElements grows its batches adaptively, so not every run reaches the limit.
    assert_batched(log, ROWS, 10, full=False)


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.parquet", features)
    out = tmp_path / "out"
    out.mkdir()
    run_example("beam_parquet.py", tiny_onnx, rows, out / "predictions", "--columns", "f0,f1,f2,f3")
    assert_rows_equal(read_predictions(out), expected_y)
