"""V2 gRPC messages ↔ :mod:`modelport.protocol.types`.

Tensors travel either in the typed ``contents`` fields or, as Triton sends them, in
``raw_input_contents`` / ``raw_output_contents``: row-major little-endian bytes, BYTES elements
each prefixed by a 4-byte little-endian length (:mod:`.tensors` does the raw layout, shared with
the REST binary extension). FP16 and BF16 have no typed field and travel raw only. Arrays
decoded from raw contents are read-only views of the message's bytes. Every malformed tensor
raises :class:`~modelport.errors.InvalidInputError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .._deps import require
from ..datatypes import from_numpy, to_numpy
from ..errors import InvalidInputError, ModelportError, PredictionError
from ._packed import FIXED, read_fixed, write_fixed
from .tensors import array_from_binary, array_to_binary, element_count
from .types import InferenceRequest, InferenceResponse, RequestedOutput

require("google.protobuf", extra="serve")
from ._grpc import grpc_predict_v2_pb2 as pb  # noqa: E402

__all__ = [
    "decode_infer_request",
    "encode_infer_request",
    "encode_infer_response",
    "encode_model_metadata",
    "encode_server_metadata",
    "pb",
    "wants_raw_output",
]

# V2 datatype -> (InferTensorContents field, numpy dtype of that field's elements).
_CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}
_RAW_ONLY = frozenset({"FP16", "BF16"})
_INT64_MAX = 2**63 - 1


# -- parameters ---------------------------------------------------------------------------------


def _decode_params(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(param, which)
    return out


def _encode_params(target: Any, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        param = target[key]
        if isinstance(value, (bool, np.bool_)):
            param.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            if value > _INT64_MAX:
                param.uint64_param = int(value)
            else:
                param.int64_param = int(value)
        elif isinstance(value, (float, np.floating)):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        else:
            param.string_param = json.dumps(value, default=str)


# -- requests -----------------------------------------------------------------------------------


def _from_contents(
    name: str, datatype: str, shape: list[int], count: int, contents: pb.InferTensorContents
) -> np.ndarray:
    if datatype in _RAW_ONLY:
        raise InvalidInputError(
            f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents"
        )
    field, wire = _CONTENTS[datatype]
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: contents.{field} holds {len(values)} values; shape {shape} of "
            f"{datatype} needs {count}"
        )
    if datatype in FIXED:
        return read_fixed(contents, datatype).reshape(shape)
    if datatype == "BYTES":
        flat = np.empty(count, dtype=object)
        flat[:] = list(values)
        return flat.reshape(shape)
    flat = np.fromiter(values, dtype=wire, count=count)
    dtype = to_numpy(datatype)
    if dtype != wire:
        info = np.iinfo(dtype)
        if count and (flat.min() < info.min or flat.max() > info.max):
            raise InvalidInputError(
                f"input {name!r}: values outside the range of {datatype} [{info.min}, {info.max}]"
            )
        flat = flat.astype(dtype)
    return flat.reshape(shape)


def decode_infer_request(msg: pb.ModelInferRequest) -> InferenceRequest:
    """A ``ModelInferRequest`` as an :class:`InferenceRequest` (raw or typed contents)."""
    if not msg.inputs:
        raise InvalidInputError("the request has no inputs")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs"
        )
    inputs: dict[str, np.ndarray] = {}
    input_parameters: dict[str, dict[str, Any]] = {}
    for index, tensor in enumerate(msg.inputs):
        name = tensor.name
        if not name:
            raise InvalidInputError(f"inputs[{index}] has no name")
        if name in inputs:
            raise InvalidInputError(f"input {name!r} appears more than once")
        if not tensor.datatype:
            raise InvalidInputError(f"input {name!r} has no datatype")
        to_numpy(tensor.datatype)  # an unknown datatype is named, with the valid ones
        shape = list(tensor.shape)
        count = element_count(name, shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {name!r} has typed contents although raw_input_contents is set; "
                    "use one or the other"
                )
            inputs[name] = array_from_binary(name, tensor.datatype, shape, raw[index])
        else:
            inputs[name] = _from_contents(name, tensor.datatype, shape, count, tensor.contents)
        if tensor.parameters:
            input_parameters[name] = _decode_params(tensor.parameters)
    outputs = [RequestedOutput(o.name, _decode_params(o.parameters)) for o in msg.outputs]
    return InferenceRequest(
        inputs=inputs,
        id=msg.id or None,
        parameters=_decode_params(msg.parameters),
        outputs=outputs or None,
        input_parameters=input_parameters,
    )


def wants_raw_output(msg: pb.ModelInferRequest) -> bool:
    """Answer in raw contents unless the caller itself sent typed contents (Triton's clients
    read numeric outputs from raw contents only)."""
    return bool(msg.raw_input_contents) or not any(t.HasField("contents") for t in msg.inputs)


# -- encoding tensors ---------------------------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(type(value).__name__)


def _encode_tensors(
    tensors: Mapping[str, np.ndarray],
    datatypes: Mapping[str, str],
    parameters: Mapping[str, Mapping[str, Any]],
    target: Any,
    raw_target: Any,
    *,
    raw: bool,
    error: type[ModelportError],
) -> None:
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    types: dict[str, str] = {}
    for name, array in arrays.items():
        try:
            types[name] = datatypes.get(name) or from_numpy(array.dtype)
        except InvalidInputError:
            raise error(f"tensor {name!r}: numpy dtype {array.dtype} has no V2 datatype") from None
    raw = raw or not _RAW_ONLY.isdisjoint(types.values())
    for name, array in arrays.items():
        datatype = types[name]
        tensor = target.add(name=name, datatype=datatype, shape=list(array.shape))
        _encode_params(tensor.parameters, parameters.get(name, {}))
        if raw:
            raw_target.append(array_to_binary(array, datatype))
            continue
        field, wire = _CONTENTS[datatype]
        values = getattr(tensor.contents, field)
        if datatype in FIXED:
            write_fixed(tensor.contents, datatype, array)
        elif datatype == "BYTES":
            try:
                values.extend(map(_as_bytes, array.ravel().tolist()))
            except TypeError as exc:
                raise error(
                    f"tensor {name!r}: BYTES elements must be bytes or str, not {exc}"
                ) from None
        else:
            values.extend(array.astype(wire, copy=False).ravel().tolist())


def encode_infer_response(
    response: InferenceResponse, *, raw: bool = True
) -> pb.ModelInferResponse:
    """An :class:`InferenceResponse` as a ``ModelInferResponse``.

    ``raw`` puts tensors in ``raw_output_contents`` (what Triton does); otherwise the typed
    ``contents`` are used, unless an output is FP16/BF16, which forces raw for all outputs. An
    output that cannot be encoded raises :class:`~modelport.errors.PredictionError`.
    """
    msg = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id,
    )
    _encode_params(msg.parameters, response.parameters)
    _encode_tensors(
        response.outputs,
        response.datatypes,
        response.output_parameters,
        msg.outputs,
        msg.raw_output_contents,
        raw=raw,
        error=PredictionError,
    )
    return msg


def encode_infer_request(
    request: InferenceRequest,
    model_name: str,
    model_version: str | None = None,
    *,
    raw: bool = True,
    datatypes: Mapping[str, str] | None = None,
) -> pb.ModelInferRequest:
    """An :class:`InferenceRequest` as a ``ModelInferRequest`` (the client side).

    ``datatypes`` names the V2 datatype of inputs whose numpy dtype does not tell (BF16).
    """
    msg = pb.ModelInferRequest(
        model_name=model_name, model_version=model_version or "", id=request.id or ""
    )
    _encode_params(msg.parameters, request.parameters)
    _encode_tensors(
        request.inputs,
        datatypes or {},
        request.input_parameters,
        msg.inputs,
        msg.raw_input_contents,
        raw=raw,
        error=InvalidInputError,
    )
    for output in request.outputs or []:
        _encode_params(msg.outputs.add(name=output.name).parameters, output.parameters)
    return msg


# -- metadata -----------------------------------------------------------------------------------


def encode_server_metadata(metadata: Mapping[str, Any]) -> pb.ServerMetadataResponse:
    """The data plane's server metadata dict as a ``ServerMetadataResponse``."""
    return pb.ServerMetadataResponse(
        name=str(metadata.get("name", "")),
        version=str(metadata.get("version", "")),
        extensions=[str(e) for e in metadata.get("extensions", [])],
    )


def _tensor_metadata(specs: Iterable[Mapping[str, Any]]) -> list[Any]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=str(s["name"]), datatype=str(s["datatype"]), shape=[int(d) for d in s["shape"]]
        )
        for s in specs
    ]


def encode_model_metadata(metadata: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The data plane's V2 model metadata dict as a ``ModelMetadataResponse``."""
    return pb.ModelMetadataResponse(
        name=str(metadata.get("name", "")),
        versions=[str(v) for v in metadata.get("versions", [])],
        platform=str(metadata.get("platform", "")),
        inputs=_tensor_metadata(metadata.get("inputs", [])),
        outputs=_tensor_metadata(metadata.get("outputs", [])),
    )
