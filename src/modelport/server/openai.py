"""The OpenAI-compatible embeddings API, beside V2 on the same port: ``POST /v1/embeddings``,
``GET /v1/models`` and ``GET /v1/models/{model}``.

Any model whose request signature takes one BYTES input (texts) and returns an ``embedding``
(FP32 ``[-1, D]``) answers; the texts of a request go to the data plane as the rows of one V2
request, so they are batched with every other request (V2 REST, gRPC, this API) by the same
batcher. Clients built for OpenAI (the ``openai`` package, LangChain, LlamaIndex) only need
the server's base URL, ``http://HOST:PORT/v1``, and the model's name.

Errors come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the
status the rest of the server gives them; internal errors (500) are left to the app, which
logs them and answers without their details.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelNotFoundError, ModelportError
from ..protocol.codec import loads
from ..protocol.types import InferenceRequest
from ..runtime.dataplane import new_id
from ..signature import Signature
from .errors import status_for
from .http import Request, Response, json_response

__all__ = ["MAX_INPUTS", "openai_embeddings", "openai_model", "openai_models"]

MAX_INPUTS = 2048
"""Most texts one request may carry, as OpenAI's API allows."""
METADATA_HEADER = b"x-modelport-metadata"
_STARTED = int(time.time())
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error"}


class _Problem(InvalidInputError):
    """A bad request, with the OpenAI fields that say which parameter and why."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


async def openai_embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: ``input`` (a text or a list of texts), ``model``,
    ``encoding_format`` (``float`` or ``base64``), ``dimensions`` (where the model allows)."""
    try:
        return await _embeddings(request)
    except ModelportError as exc:
        return _error(exc)


async def _embeddings(request: Request) -> Response:
    body = loads(await request.body())
    if not isinstance(body, dict):
        raise _Problem("the request body must be a JSON object", None)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise _Problem('"model" must name a served model', "model")
    dataplane = request.app.dataplane
    runner = dataplane.registry.get(name)
    request.params["name"] = name  # for the request metrics
    request.model_version = runner.version
    text_input, output = _embedding_io(runner.model.served_signature, name)
    texts = _texts(body.get("input"))
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise _Problem(
            f'"encoding_format" must be "float" or "base64", got {encoding!r}', "encoding_format"
        )
    dimensions = body.get("dimensions")
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") for t in texts]
    request.request_id = new_id()
    infer = InferenceRequest(inputs={text_input: array}, id=request.request_id)
    metadata = request.headers.get(METADATA_HEADER)
    if metadata is not None:  # recorded in the prediction log, as on the V2 routes
        from ..store.records import validate_metadata

        infer.parameters["metadata"] = validate_metadata(
            metadata, "the X-Modelport-Metadata header"
        )
    response = await dataplane.infer(name, None, infer)
    request.model_version = response.model_version
    vectors = np.asarray(response.outputs[output], dtype=np.float32)
    if dimensions is not None:
        vectors = _shorten(vectors, dimensions, runner.model, name)
    tokens = response.outputs.get("tokens")
    used = int(np.asarray(tokens).sum()) if tokens is not None else 0
    if encoding == "base64":  # little-endian float32, as OpenAI's clients decode it
        little = vectors.astype("<f4", copy=False)
        encoded: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in little]
    else:
        encoded = list(vectors)  # numpy rows: serialised natively
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    answer = {
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }
    return json_response(200, answer, [(b"x-request-id", request.request_id.encode())])


def _embedding_io(signature: Signature | None, name: str) -> tuple[str, str]:
    """The text input and the embedding output of an embedding model, else a clear 400."""
    texts = [s for s in signature.inputs if s.datatype == "BYTES"] if signature else []
    vectors = [s for s in signature.outputs if s.name == "embedding"] if signature else []
    if signature is None or len(signature.inputs) != 1 or not texts or not vectors:
        raise _Problem(
            f"model {name!r} is not an embedding model: /v1/embeddings serves models that take "
            "texts (one BYTES input) and return an 'embedding' (FP32 [-1, D])",
            "model",
            "model_not_supported",
        )
    return texts[0].name, vectors[0].name


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _Problem(
            f'"input" must be a text or a list of texts, got {type(value).__name__}', "input"
        )
    if not value:
        raise _Problem('"input" is an empty list; send at least one text', "input")
    if len(value) > MAX_INPUTS:
        raise _Problem(f'"input" has {len(value)} texts; at most {MAX_INPUTS} a request', "input")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = (
                " (token ids are not accepted: send the text itself; LangChain's "
                "OpenAIEmbeddings needs check_embedding_ctx_length=False)"
                if isinstance(item, (int, list))
                else ""
            )
            raise _Problem(f"input[{i}] is {type(item).__name__}, not text{hint}", "input")
    return value


def _shorten(vectors: np.ndarray, dimensions: Any, model: Any, name: str) -> np.ndarray:
    """Embeddings cut to ``dimensions`` (and renormalised if the model normalises), where
    the model declares that size (Matryoshka); its full size is always allowed."""
    full = vectors.shape[1]
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise _Problem(f'"dimensions" must be a positive integer, got {dimensions!r}', "dimensions")
    if dimensions == full:
        return vectors
    allowed = sorted(int(d) for d in getattr(model, "matryoshka_dims", ()) if int(d) < full)
    if dimensions not in allowed:
        sizes = f"{allowed} or {full}" if allowed else f"only {full}"
        raise _Problem(
            f"model {name!r} returns {full}-dimensional embeddings and allows {sizes} "
            "(a Matryoshka model lists its sizes with runtime: {matryoshka_dims: [...]})",
            "dimensions",
        )
    cut = vectors[:, :dimensions]
    if getattr(model, "normalized", False):
        cut = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(cut, dtype=np.float32)


def _entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "modelport"}


async def openai_models(request: Request) -> Response:
    """``GET /v1/models``: every model served, as OpenAI lists models."""
    names = sorted({r.name for r in request.app.dataplane.registry.runners()})
    return json_response(200, {"object": "list", "data": [_entry(n) for n in names]})


async def openai_model(request: Request) -> Response:
    """``GET /v1/models/{model}``: one model, or OpenAI's 404."""
    name = request.params["model"]
    try:
        request.app.dataplane.registry.get(name)
    except ModelNotFoundError as exc:
        return _error(exc)
    return json_response(200, _entry(name))


def _error(exc: ModelportError) -> Response:
    status = status_for(exc).http
    if status >= 500 and not isinstance(exc, _Problem) and status != 503 and status != 504:
        raise exc  # the app logs it and answers without its details
    code = getattr(exc, "code", None)
    if isinstance(exc, ModelNotFoundError):
        code = "model_not_found"
    error = {
        "message": str(exc),
        "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": getattr(exc, "param", "model" if code == "model_not_found" else None),
        "code": code,
    }
    retry = max(1, round(getattr(exc, "retry_after", 1.0)))
    headers = [(b"retry-after", str(retry).encode())] if status == 503 else None
    return json_response(status, {"error": error}, headers)
