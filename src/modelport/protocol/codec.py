"""The V2 REST body codec, with Triton's binary tensor data extension, as pure functions.

``decode_request(body, header_length)`` turns the bytes of a ``POST .../infer`` body into an
:class:`InferenceRequest`; ``encode_response(response, request)`` turns the answer back into
``(body, header_length)``. ``header_length`` is the ``Inference-Header-Content-Length``: the
JSON part's size when binary tensors follow it, None for a plain JSON body. Any transport (the
HTTP server, Lambda) can use these; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._deps import require
from ..datatypes import DATATYPES, from_numpy
from ..errors import InvalidInputError
from .fastjson import parse_infer
from .tensors import array_from_binary, array_from_json, array_to_binary, array_to_json
from .types import InferenceRequest, InferenceResponse, RequestedOutput

__all__ = ["decode_request", "dumps", "encode_error", "encode_response", "loads"]

orjson = require("orjson", extra="serve")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """JSON bytes for ``value``; numpy arrays and scalars are serialised natively."""
    return bytes(orjson.dumps(value, default=_default, option=_NUMPY))


def loads(body: bytes | memoryview | str, what: str = "request body") -> Any:
    """Parse JSON, raising :class:`InvalidInputError` that says what is wrong."""
    if not body:
        raise InvalidInputError(f"{what} is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


def encode_error(message: str) -> bytes:
    """The protocol's error body: ``{"error": message}``."""
    return dumps({"error": message})


def decode_request(body: bytes, header_length: int | None = None) -> InferenceRequest:
    """Decode a V2 infer body; binary tensors follow the JSON part when ``header_length``."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length is {header_length}, "
                f"but the body has {len(body)} bytes"
            )
        view = memoryview(body)
        header = view[:header_length]
        doc = parse_infer(header) or loads(header, "the JSON part of the request")
        binary: memoryview | None = view[header_length:]
    else:
        doc = parse_infer(body) or loads(body)
        binary = None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"request body must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError('request must have "inputs": a non-empty list of tensors')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError(f'"id" must be a string, got {request_id!r}')
    parameters = _mapping(doc.get("parameters"), '"parameters"')
    inputs: dict[str, np.ndarray] = {}
    input_parameters: dict[str, dict[str, Any]] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        name, datatype, shape, params = _tensor_header(item, index)
        if name in inputs:
            raise InvalidInputError(f"input {name!r} appears more than once")
        size = params.get("binary_data_size")
        if size is not None:
            if binary is None:
                raise InvalidInputError(
                    f"input {name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if type(size) is not int or size < 0:
                raise InvalidInputError(f"input {name!r}: binary_data_size must be an int >= 0")
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size {size} runs past the end of the "
                    f"binary data ({len(binary) - offset} bytes left)"
                )
            inputs[name] = array_from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = array_from_json(name, datatype, shape, item["data"])
        else:
            raise InvalidInputError(f'input {name!r} has neither "data" nor binary_data_size')
        if params:
            input_parameters[name] = params
    if binary is not None and offset != len(binary):
        raise InvalidInputError(
            f"the binary_data_size of the inputs add up to {offset} bytes, "
            f"but {len(binary)} bytes of binary data follow the JSON header"
        )
    return InferenceRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=_requested_outputs(doc.get("outputs")),
        input_parameters=input_parameters,
    )


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, got {value!r}")
    return value


def _tensor_header(item: Any, index: int) -> tuple[str, str, list[int], dict[str, Any]]:
    if not isinstance(item, dict):
        raise InvalidInputError(f"inputs[{index}] must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f'inputs[{index}] needs a "name" string')
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(sorted(DATATYPES))}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list):
        raise InvalidInputError(f'input {name!r} needs a "shape" list')
    return name, datatype, shape, _mapping(item.get("parameters"), f"input {name!r} parameters")


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInputError('"outputs" must be a list of {"name": ...} objects')
    outputs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f'outputs[{index}] needs a "name" string')
        params = _mapping(item.get("parameters"), f"output {item['name']!r} parameters")
        outputs.append(RequestedOutput(item["name"], params))
    return outputs


def _wants_binary(request: InferenceRequest | None) -> tuple[bool, dict[str, bool]]:
    if request is None:
        return False, {}
    default = bool(request.parameters.get("binary_data_output", False))
    per_output = {
        o.name: bool(o.parameters["binary_data"])
        for o in request.outputs or ()
        if "binary_data" in o.parameters
    }
    return default, per_output


def encode_response(
    response: InferenceResponse, request: InferenceRequest | None = None
) -> tuple[bytes, int | None]:
    """``(body, header_length)``; ``header_length`` is None unless binary tensors follow."""
    default, per_output = _wants_binary(request)
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        datatype = response.datatypes.get(name) or from_numpy(array.dtype)
        params: Mapping[str, Any] = response.output_parameters.get(name, {})
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if per_output.get(name, default):
            chunk = array_to_binary(array, datatype)
            chunks.append(chunk)
            entry["parameters"] = {**params, "binary_data_size": len(chunk)}
        else:
            if params:
                entry["parameters"] = dict(params)
            entry["data"] = array_to_json(array, datatype)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
    }
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = dumps(doc)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
