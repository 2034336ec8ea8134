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
    IRIS,
    ROWS,
    TEXTS,
    assert_answer,
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
    # Adaptive batching starts from the hint, not from one example.
    assert handler.batch_elements_kwargs() == {"min_batch_size": 7, "max_batch_size": 7}
    assert ModelportModelHandler(tmp_path, max_batch_size=3).batch_elements_kwargs() == {
        "min_batch_size": 3,
        "max_batch_size": 3,
    }
    assert ModelportModelHandler(tmp_path, max_batch_size=64).batch_elements_kwargs() == {
        "min_batch_size": 7,
        "max_batch_size": 64,
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
    with pytest.raises(
        modelport.InvalidInputError,
        match=r"input 'x': dimension 1 must be 4.* \(example 0 of a batch of 1: \[0\.0, ",
    ):
        handler.run_inference([np.zeros(5, np.float32)], model)
    # The bad example of a batch is found and named, not the batch.
    with pytest.raises(
        modelport.InvalidInputError, match=r"dimension 1 must be 4.*\(example 1 of a batch of 2"
    ):
        handler.run_inference([np.zeros(4), np.zeros(3)], model)
    with pytest.raises(
        modelport.InvalidInputError, match=r"missing input\(s\) \['b'\].*\(example 1 of a batch"
    ):
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
    # BatchElements starts at the model's hint (here max_batch_size), not at one example.
    assert_batched(log, ROWS, 10)
    sizes = batch_sizes(log)
    assert sizes.count(10) >= len(sizes) - 2, f"batches grew from small ones: {sizes}"


def test_the_contract_answers_each_example_as_model_payload(
    text_dir: Path, image_dir: Path
) -> None:
    pictures = [{"image": p} for p in images()]
    flowers = iris_rows()
    # The text model has no per-payload hooks: an example is a text, its inference the row's
    # outputs. The iris and image models have their own: an inference is model(example).
    expected = {
        "text": (text_dir, TEXTS, expected_answers("text", text_dir, TEXTS)),
        "iris": (IRIS, flowers, [modelport.load(IRIS)(f) for f in flowers]),
        "image": (image_dir, pictures, [modelport.load(image_dir)(p) for p in pictures]),
    }

    def matches(kind: str, want: list[Any]) -> Callable[[list[Any]], None]:
        def check(results: list[Any]) -> None:
            by_key = dict(results)
            assert sorted(by_key) == list(range(len(want))), f"{kind}: keys {sorted(by_key)}"
            for key, answer in enumerate(want):
                assert_answer(by_key[key].inference, answer, f"{kind} example {key}")

        return check

    with _pipeline() as p:
        for kind, (directory, payloads, want) in expected.items():
            handler = ModelportModelHandler(directory, max_batch_size=5, keyed=True)
            results = (
                p
                | f"{kind} examples" >> beam.Create(list(enumerate(payloads)))
                | f"{kind} inference" >> base.RunInference(handler)
            )
            testing.assert_that(results, matches(kind, want), label=f"{kind} answers")


def test_bad_examples_go_to_the_dead_letter_one_by_one(
    recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    # Beam's own handlers send a failed batch whole to failed_inferences; here only the bad
    # examples go there, and the good ones of their batches are predicted once.
    directory, log = recording_model
    bad = {5, 40, 77}
    examples = [(i, row[:3] if i in bad else row) for i, row in enumerate(features)]
    handler = ModelportModelHandler(
        directory, output="y", max_batch_size=8, keyed=True, log=str(log)
    )
    sums = features.sum(axis=1)

    def check_good(results: list[Any]) -> None:
        by_key = dict(results)
        assert sorted(by_key) == [i for i in range(ROWS) if i not in bad]
        assert_rows_equal(
            np.array([by_key[k].inference for k in sorted(by_key)]), sums[sorted(by_key)]
        )

    def check_failed(failed: list[Any]) -> None:
        assert sorted(key for (key, _), _message in failed) == sorted(bad)
        for (_key, example), message in failed:
            assert example.shape == (3,)
            assert "input 'x': dimension 1 must be 4, got shape [1, 3]" in message

    with _pipeline() as p:
        good, other = (
            p | beam.Create(examples) | base.RunInference(handler).with_exception_handling()
        )
        testing.assert_that(good, check_good, label="good examples")
        unpacked = other.failed_inferences | beam.MapTuple(
            lambda batch, error: (batch[0], error[1])
        )
        testing.assert_that(unpacked, check_failed, label="bad examples")
    assert sum(batch_sizes(log)) == ROWS - len(bad), "each good example is predicted once"
    # Beam's KeyedModelHandler pairs keys with results in order: with it, a bad example fails
    # its batch (dead-lettered whole, as Beam does), and no result is mispaired.
    wrapped = ModelportModelHandler(directory, output="y", max_batch_size=8, log=str(log))

    def check_wrapped(results: list[Any]) -> None:
        assert all(isinstance(r, base.PredictionResult) for _, r in results)
        by_key = {k: r.inference for k, r in results}
        assert not bad & set(by_key)
        assert_rows_equal(np.array([by_key[k] for k in sorted(by_key)]), sums[sorted(by_key)])

    def check_batches(failed: list[Any]) -> None:
        keys = {key for batch, _ in failed for key, _example in batch}
        assert bad <= keys

    with _pipeline() as p:
        good, other = (
            p
            | beam.Create(examples)
            | base.RunInference(base.KeyedModelHandler(wrapped)).with_exception_handling()
        )
        testing.assert_that(good, check_wrapped, label="good examples")
        testing.assert_that(other.failed_inferences, check_batches, label="bad batches")


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.parquet", features)
    out = tmp_path / "out"
    out.mkdir()
    run_example("beam_parquet.py", tiny_onnx, rows, out / "predictions", "--columns", "f0,f1,f2,f3")
    assert_rows_equal(read_predictions(out), expected_y)
