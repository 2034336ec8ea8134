"""The benchmark workloads, generated deterministically as ONNX model directories.

- **W1 "tiny"**: MLP 4 -> 16 -> 3 (ReLU); one row of 4 floats a request: pure serving overhead.
- **W2 "heavy"**: MLP 1024 -> 4096 -> 4096 -> 16 (ReLU); one row of 1024 floats a request:
  compute- and memory-bound, where batching decides the throughput.

Each workload becomes a model directory ``<key>/model/`` holding ``model.onnx`` and a
``modelport.yaml`` that fixes the name, the batching limits and the onnxruntime thread counts,
so the server, the compute ceiling (C1) and the Flask baseline (B) all run the model with the
same settings. The request bodies every load generator sends are written in ``<key>/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tests.builders import mlp_reference, mlp_weights, onnx_mlp

__all__ = ["W1", "W2", "WORKLOADS", "Bodies", "Workload", "build", "model_options"]

INPUT, OUTPUT = "x", "y"


@dataclass(frozen=True)
class Workload:
    """One benchmark model: an MLP of the given layer sizes built with a fixed seed."""

    key: str
    title: str
    sizes: tuple[int, ...]
    seed: int
    max_batch_size: int
    max_queue_delay_ms: float = 1.0

    @property
    def features(self) -> int:
        return self.sizes[0]

    @property
    def description(self) -> str:
        return f"{self.key.upper()} {self.title}: MLP {' -> '.join(map(str, self.sizes))}"

    def row(self) -> np.ndarray:
        """The one request row every target receives, shape ``(1, features)``, float32."""
        rng = np.random.default_rng(self.seed + 1000)
        return rng.standard_normal((1, self.features)).astype(np.float32)

    def expected(self) -> np.ndarray:
        """The model's output for :meth:`row`, computed with numpy (the ground truth)."""
        out: np.ndarray = mlp_reference(self.row(), mlp_weights(self.sizes, self.seed))
        return out


W1 = Workload("w1", "tiny", (4, 16, 3), seed=1, max_batch_size=32)
W2 = Workload("w2", "heavy", (1024, 4096, 4096, 16), seed=2, max_batch_size=64)
WORKLOADS: dict[str, Workload] = {w.key: w for w in (W1, W2)}


@dataclass(frozen=True)
class Bodies:
    """The files a built workload provides to the targets and load generators."""

    directory: Path
    """The model directory: ``model.onnx`` and ``modelport.yaml``, nothing else."""
    model: Path
    json_request: Path
    binary_request: Path
    binary_header_length: int
    grpc_request: Path
    json_response: Path
    """A precomputed V2 response, what the bare ASGI ceiling (C2) answers."""
    grpc_response: Path
    """A precomputed serialized ``ModelInferResponse``, what the bare gRPC ceiling answers."""
    arrays: Path
    """``.npz`` with the request ``row`` and its ``expected`` output."""


def model_options(threads: int) -> dict[str, int]:
    """The onnxruntime thread settings shared by every target of one run."""
    return {"intra_op_threads": threads, "inter_op_threads": 1}


def build(workload: Workload, root: Path, threads: int | None = None) -> Bodies:
    """Write ``root/<key>/`` (``model/`` and the request bodies); reuse an identical model.

    ``threads`` None: the model directory holds no batching or runtime settings, so every
    target runs modelport's defaults (``modelport serve MODEL``, no flags); a number: the
    hand-tuned configuration (the workload's batching limits, that many intra-op threads)."""
    data = root / workload.key
    directory = data / "model"
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "model.onnx"
    stamp = data / "stamp.json"
    identity = {"sizes": list(workload.sizes), "seed": workload.seed}
    if not (model.exists() and stamp.exists() and json.loads(stamp.read_text()) == identity):
        onnx_mlp(model, workload.sizes, seed=workload.seed)
        stamp.write_text(json.dumps(identity))
    _write_config(workload, directory, threads)
    row = workload.row()
    header = {
        "inputs": [
            {
                "name": INPUT,
                "shape": list(row.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": row.nbytes},
            }
        ],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    bodies = Bodies(
        directory=directory,
        model=model,
        json_request=data / "request.json",
        binary_request=data / "request.bin",
        binary_header_length=len(header_bytes),
        grpc_request=data / "request.pb",
        json_response=data / "response.json",
        grpc_response=data / "response.pb",
        arrays=data / "arrays.npz",
    )
    np.savez(bodies.arrays, row=row, expected=workload.expected())
    bodies.json_request.write_bytes(_dumps({"inputs": [_tensor(INPUT, row)]}))
    bodies.binary_request.write_bytes(header_bytes + row.tobytes())
    bodies.grpc_request.write_bytes(grpc_request_bytes(workload.key, row))
    response: dict[str, Any] = {"model_name": workload.key, "model_version": "1", "id": "0"}
    response["outputs"] = [_tensor(OUTPUT, workload.expected())]
    bodies.json_response.write_bytes(_dumps(response))
    bodies.grpc_response.write_bytes(grpc_response_bytes(workload.key, workload.expected()))
    return bodies


def grpc_request_bytes(model_name: str, row: np.ndarray) -> bytes:
    """A serialized V2 ``ModelInferRequest`` carrying ``row`` as raw little-endian FP32."""
    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model_name)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = INPUT, "FP32"
    tensor.shape.extend(row.shape)
    request.raw_input_contents.append(row.astype("<f4").tobytes())
    data: bytes = request.SerializeToString()
    return data


def grpc_response_bytes(model_name: str, output: np.ndarray) -> bytes:
    """A serialized V2 ``ModelInferResponse`` carrying ``output`` as raw FP32."""
    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse(model_name=model_name, model_version="1", id="0")
    tensor = response.outputs.add()
    tensor.name, tensor.datatype = OUTPUT, "FP32"
    tensor.shape.extend(output.shape)
    response.raw_output_contents.append(output.astype("<f4").tobytes())
    data: bytes = response.SerializeToString()
    return data


def output_of_v2_json(document: Mapping[str, Any]) -> np.ndarray:
    """The output tensor of a V2 JSON response, as float32 of its declared shape."""
    tensor = next(t for t in document["outputs"] if t["name"] == OUTPUT)
    array: np.ndarray = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    return array


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": "FP32",
        "data": [float(v) for v in array.ravel()],
    }


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _write_config(workload: Workload, directory: Path, threads: int | None) -> None:
    import yaml

    config: dict[str, Any] = {
        "name": workload.key,
        "version": "1",
        "description": workload.description,
    }
    if threads is not None:  # tuned by hand; the defaults leave both to modelport
        config["batching"] = {
            "max_batch_size": workload.max_batch_size,
            "max_queue_delay_ms": workload.max_queue_delay_ms,
        }
        config["runtime"] = model_options(threads)
    (directory / "modelport.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
