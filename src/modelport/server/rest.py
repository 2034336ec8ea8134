"""The REST routes, as one table, and their handlers: HTTP ↔ protocol messages ↔ DataPlane.

Handlers only translate: they read the body, decode it with :mod:`modelport.protocol.codec`,
call the data plane and encode its answer. Errors propagate as :mod:`modelport.errors`
exceptions; the app maps them to a status (``server/errors.py``).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from ..protocol.codec import decode_request, encode_response, loads
from ..runtime.dataplane import new_id
from . import openai
from .http import Request, Response, Route, json_response

__all__ = ["ROUTES"]


_LIVE = json_response(200, {"live": True})


async def live(request: Request) -> Response:
    return _LIVE


async def ready(request: Request) -> Response:
    if request.app.dataplane.ready():
        return json_response(200, {"ready": True})
    return json_response(503, {"ready": False}, _RETRY)


_RETRY = [(b"retry-after", b"1")]


async def server_metadata(request: Request) -> Response:
    return json_response(200, request.app.dataplane.server_metadata())


async def model_metadata(request: Request) -> Response:
    p = request.params
    return json_response(200, request.app.dataplane.model_metadata(p["name"], p.get("version")))


async def model_ready(request: Request) -> Response:
    p = request.params
    ok = request.app.dataplane.model_ready(p["name"], p.get("version"))
    answer = {"name": p["name"], "ready": ok}
    return json_response(200 if ok else 503, answer, None if ok else _RETRY)


async def models(request: Request) -> Response:
    dp = request.app.dataplane
    listing = [
        {"name": r.name, "version": r.version, "platform": r.model.framework, "state": r.state}
        for r in dp.registry.runners()
    ]
    return json_response(200, {"models": listing})


async def infer(request: Request) -> Response:
    p = request.params
    dataplane = request.app.dataplane
    # An unknown model is a 404 before the body is read; the version labels the metrics.
    # (Which version answers, e.g. a canary, is decided in dataplane.infer.)
    request.model_version = dataplane.registry.get(p["name"], p.get("version")).version
    body = await request.body()
    header_length = _header_length(request.headers.get(b"inference-header-content-length"))
    infer_request = decode_request(body, header_length)
    infer_request.id = infer_request.id or new_id()  # known here too if the model fails
    request.request_id = infer_request.id
    metadata = _metadata_header(request)
    if metadata is not None:
        if "metadata" in infer_request.parameters:
            raise InvalidInputError(
                f'metadata given twice: in the {METADATA_HEADER} header and the "metadata" '
                "parameter; give one"
            )
        infer_request.parameters["metadata"] = metadata
    response = await dataplane.infer(p["name"], p.get("version"), infer_request)
    request.request_id = response.id
    request.model_version = response.model_version  # a canary may have answered
    out, out_header_length = encode_response(response, infer_request)
    headers = [(b"content-length", str(len(out)).encode())]
    if out_header_length is None:
        headers.append((b"content-type", b"application/json"))
    else:
        headers.append((b"content-type", b"application/octet-stream"))
        headers.append((b"inference-header-content-length", str(out_header_length).encode()))
    headers.append((b"x-request-id", response.id.encode()))
    return Response(200, headers, out)


def _header_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(
            f"Inference-Header-Content-Length must be an integer, got {value!r}"
        ) from None


METADATA_HEADER = "X-Modelport-Metadata"
"""A JSON object recorded with the prediction in the log (like the "metadata" parameter)."""


def _metadata_header(request: Request) -> dict[str, Any] | None:
    raw = request.headers.get(METADATA_HEADER.lower().encode())
    if raw is None:
        return None
    from ..store.records import validate_metadata

    return validate_metadata(raw, f"the {METADATA_HEADER} header")


async def predict(request: Request) -> Response:
    p = request.params
    dataplane = request.app.dataplane
    # The version that answers is chosen here (a canary's share included), so that the
    # metrics count the request under it; an unknown model is a 404 before the body is read.
    version = dataplane.runner(p["name"], p.get("version")).version
    request.model_version = version
    payload = loads(await request.body())
    given = request.headers.get(b"x-request-id")
    request_id = given.decode("latin-1") if given else new_id()
    request.request_id = request_id
    result = await dataplane.predict(
        p["name"], version, payload, request_id=request_id, metadata=_metadata_header(request),
    )  # fmt: skip
    return json_response(200, result, [(b"x-request-id", request_id.encode())])


_FEEDBACK_SHAPE = '{"request_id": ID, "value": GROUND_TRUTH}'
MAX_BULK_FEEDBACK = 100_000
"""Most feedback items one bulk request may carry."""


def _feedback_pair(item: Any, where: str = "feedback") -> tuple[Any, Any]:
    if not isinstance(item, dict) or not {"request_id", "value"} <= item.keys():
        raise InvalidInputError(f"{where} must be a JSON object {_FEEDBACK_SHAPE}")
    extra = sorted(item.keys() - {"request_id", "value"})
    if extra:
        raise InvalidInputError(f"unknown {where} field(s) {extra}; expected request_id, value")
    return item["request_id"], item["value"]


async def feedback(request: Request) -> Response:
    body = loads(await request.body())
    name = request.params["name"]
    if not isinstance(body, list):
        request_id, value = _feedback_pair(body)
        await request.app.dataplane.feedback(name, request_id, value)
        return json_response(200, {"model": name, "request_id": request_id})
    # Bulk: the good rows are stored, each bad one is reported by its index.
    if not body:
        raise InvalidInputError(f"bulk feedback is an empty list; send objects {_FEEDBACK_SHAPE}")
    if len(body) > MAX_BULK_FEEDBACK:
        raise InvalidInputError(
            f"bulk feedback has {len(body)} items; at most {MAX_BULK_FEEDBACK} a request"
        )
    from ..store.records import refusal

    items: list[tuple[int, Any, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(body):
        try:
            items.append((i, *_feedback_pair(item, f"feedback[{i}]")))
        except InvalidInputError as exc:
            rid = item.get("request_id") if isinstance(item, dict) else None
            errors.append(refusal(i, rid, exc))
    stored, refused = await request.app.dataplane.feedback_many(name, items)
    errors = sorted(errors + refused, key=lambda e: int(e["index"]))
    return json_response(200, {"model": name, "stored": stored, "errors": errors})


async def metrics(request: Request) -> Response:
    from .metrics import CONTENT_TYPE

    app = request.app
    body = app.metrics.render()
    if app.worker_metrics is not None:  # several worker processes: the whole server's figures
        body = await app.worker_metrics.gather(body)
    return Response(
        200,
        [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())],
        body,
    )


async def openapi(request: Request) -> Response:
    from .openapi import document

    return json_response(200, document(request.app.routes))


async def docs(request: Request) -> Response:
    from .console import html_page

    return html_page(request, "docs.html")


_MODEL = "/v2/models/{name}"
_VERSION = "/v2/models/{name}/versions/{version}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", live, "Server liveness"),
    Route("GET", "/v2/health/ready", ready, "Server readiness (all models loaded)"),
    Route("GET", "/v2", server_metadata, "Server metadata and supported extensions"),
    Route("GET", "/v2/models", models, "The models served, with versions and state"),
    Route("GET", _MODEL, model_metadata, "Model metadata (latest version)"),
    Route("GET", _VERSION, model_metadata, "Model metadata"),
    Route("GET", f"{_MODEL}/ready", model_ready, "Model readiness (latest version)"),
    Route("GET", f"{_VERSION}/ready", model_ready, "Model readiness"),
    Route("POST", f"{_MODEL}/infer", infer, "V2 inference (latest version)", True),
    Route("POST", f"{_VERSION}/infer", infer, "V2 inference", True),
    Route("POST", f"{_MODEL}/predict", predict, "Plain JSON prediction (latest version)", True),
    Route("POST", f"{_VERSION}/predict", predict, "Plain JSON prediction", True),
    Route("POST", f"{_MODEL}/feedback", feedback, "Ground truth for a logged prediction"),
    Route("GET", "/metrics", metrics, "Prometheus metrics"),
    Route("GET", "/openapi.json", openapi, "This OpenAPI document"),
    Route("GET", "/docs", docs, "Interactive API documentation"),
    Route("POST", "/v1/embeddings", openai.openai_embeddings, "OpenAI-compatible embeddings", True),
    Route("GET", "/v1/models", openai.openai_models, "OpenAI-compatible list of the models"),
    Route("GET", "/v1/models/{model}", openai.openai_model, "OpenAI-compatible model"),
)
"""Every HTTP route the server answers."""
