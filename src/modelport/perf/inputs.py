"""What ``modelport perf`` sends: request tensors generated from a model's signature or read
from a file, encoded once per wire format before the load starts.

A payload is a dict of named arrays (one request). The encoders turn it into the exact bytes a
door takes: a whole HTTP/1.1 request (head and body) for V2 JSON or binary tensors, a
serialized ``ModelInferRequest`` for gRPC. Nothing is encoded while the load runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datatypes import from_numpy
from ..errors import ConfigError, InvalidInputError
from ..signature import Signature

__all__ = [
    "Payload",
    "bf16_inputs",
    "conform",
    "from_file",
    "from_signature",
    "grpc_request",
    "http_request",
]

Payload = dict[str, np.ndarray]
"""One request's input tensors, by name."""


def from_signature(
    inputs: Sequence[Mapping[str, Any]], batch_size: int = 1, count: int = 8
) -> list[Payload]:
    """``count`` payloads of ``batch_size`` rows that fit V2 metadata ``inputs`` (each a
    ``{"name", "datatype", "shape"}``), as :meth:`Model.example_inputs` makes them; variable
    dimensions other than the batch are 1. Rows differ from payload to payload."""
    from ..model import Model

    signature = Signature.from_dict({"inputs": list(inputs), "outputs": []})
    if not signature.inputs:
        raise InvalidInputError(
            "the model declares no inputs to generate requests from; give --input FILE"
        )
    base = Model().example_inputs(batch_size * count, signature)
    return [
        {k: v[i * batch_size : (i + 1) * batch_size] for k, v in base.items()} for i in range(count)
    ]


def from_file(path: Path) -> list[Payload]:
    """Payloads from ``.npz`` (one request: its arrays by name) or ``.json``: a V2 infer body
    (``{"inputs": [...]}``), a list of them (sent in turn), or ``{name: nested list}``."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            payload = {name: np.asarray(archive[name]) for name in archive.files}
        if not payload:
            raise ConfigError(f"{path}: holds no arrays")
        return [payload]
    if path.suffix.lower() != ".json":
        raise ConfigError(f"{path}: expected a .json or .npz file of inputs")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from None
    bodies = document if isinstance(document, list) else [document]
    if not bodies:
        raise ConfigError(f"{path}: an empty list of requests")
    return [_payload(body, f"{path} request {i}") for i, body in enumerate(bodies)]


def _payload(body: Any, where: str) -> Payload:
    from ..protocol.tensors import array_from_json

    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    if isinstance(body.get("inputs"), list):
        out: Payload = {}
        for tensor in body["inputs"]:
            try:
                name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
                out[name] = array_from_json(name, datatype, shape, tensor["data"])
            except (KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{where}: a tensor lacks name, datatype, shape or data ({exc})"
                ) from None
        return out
    try:
        return {str(k): _array(v) for k, v in body.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "U":  # text: BYTES, as V2 carries it
        out = np.empty(array.shape, dtype=object)
        out.reshape(-1)[:] = [s.encode("utf-8") for s in array.reshape(-1).tolist()]
        return out
    return array


def conform(payloads: list[Payload], inputs: Sequence[Mapping[str, Any]]) -> list[Payload]:
    """``payloads`` with each numeric array cast to the datatype V2 metadata ``inputs``
    declares for it (JSON numbers read as float64 or int64)."""
    from ..datatypes import to_numpy

    wanted = {
        str(spec["name"]): to_numpy(str(spec["datatype"]))
        for spec in inputs
        if spec.get("datatype") not in (None, "BYTES", "BF16")
    }
    return [
        {
            name: array.astype(wanted[name])
            if name in wanted and array.dtype.kind in "biuf" and array.dtype != wanted[name]
            else array
            for name, array in payload.items()
        }
        for payload in payloads
    ]


def bf16_inputs(inputs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The inputs whose numpy dtype does not tell their datatype (BF16 travels as uint16)."""
    return {str(s["name"]): "BF16" for s in inputs if s.get("datatype") == "BF16"}


def _datatype(array: np.ndarray, datatypes: Mapping[str, str], name: str) -> str:
    return datatypes.get(name) or from_numpy(array.dtype)


def _json_body(payload: Payload, datatypes: Mapping[str, str]) -> bytes:
    from ..protocol.tensors import array_to_json

    tensors = []
    for name, array in payload.items():
        datatype = _datatype(array, datatypes, name)
        data = array_to_json(array, datatype)
        tensors.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "data": data.tolist() if isinstance(data, np.ndarray) else data,
            }
        )
    return json.dumps({"inputs": tensors}, separators=(",", ":")).encode()


def _binary_body(payload: Payload, datatypes: Mapping[str, str]) -> tuple[bytes, int]:
    from ..protocol.tensors import array_to_binary

    tensors, blobs = [], []
    for name, array in payload.items():
        datatype = _datatype(array, datatypes, name)
        blob = array_to_binary(array, datatype)
        blobs.append(blob)
        tensors.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    header = json.dumps(
        {"inputs": tensors, "parameters": {"binary_data_output": True}}, separators=(",", ":")
    ).encode()
    return header + b"".join(blobs), len(header)


def http_request(
    payload: Payload,
    *,
    host: str,
    path: str,
    binary: bool = False,
    token: str | None = None,
    datatypes: Mapping[str, str] | None = None,
) -> bytes:
    """The whole HTTP/1.1 ``POST`` (head and body) of one V2 infer request, keep-alive."""
    types = datatypes or {}
    head = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    if binary:
        body, header_length = _binary_body(payload, types)
        head += [
            "Content-Type: application/octet-stream",
            f"Inference-Header-Content-Length: {header_length}",
        ]
    else:
        body = _json_body(payload, types)
        head.append("Content-Type: application/json")
    if token:
        head.append(f"Authorization: Bearer {token}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def grpc_request(
    payload: Payload,
    model: str,
    version: str | None = None,
    datatypes: Mapping[str, str] | None = None,
) -> bytes:
    """A serialized ``ModelInferRequest`` carrying ``payload`` as raw tensor contents."""
    from .._deps import require

    require("grpc", extra="serve")
    from ..protocol.grpc_codec import encode_infer_request
    from ..protocol.types import InferenceRequest

    message = encode_infer_request(
        InferenceRequest(inputs=dict(payload)), model, version, raw=True, datatypes=datatypes
    )
    data: bytes = message.SerializeToString()
    return data
