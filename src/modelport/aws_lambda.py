"""The AWS Lambda front door: ``modelport.aws_lambda.handler``.

The function answers the same routes as ``modelport serve`` (``POST /v2/models/<name>/infer``,
``.../predict``, health, metadata) because it drives the very same HTTP app: each event is
translated into one request for it, and its answer into the event kind's response format.
Accepted events: API Gateway REST (v1 proxy), HTTP API (payload 2.0), ALB, and Lambda
Function URLs; bodies may be base64-encoded. Any path prefix before ``/v2`` (a stage, a base
path mapping) is ignored.

The models load once per container, when Lambda imports this module (its init phase), from
``MODELPORT_MODEL`` (else ``$LAMBDA_TASK_ROOT/models``); other settings come from
``MODELPORT_*`` variables as for ``modelport serve``. One event loop lives as long as the
container, so the batcher and its workers survive between invocations.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

from .errors import InvalidInputError
from .settings import Settings

__all__ = ["LambdaHandler", "handler"]

log = logging.getLogger("modelport.aws_lambda")

Event = Mapping[str, Any]
Result = dict[str, Any]
_TEXT = ("application/json", "text/")


@dataclass
class _Request:
    kind: str
    """``rest`` (API Gateway v1), ``http`` (HTTP API / Function URL, payload 2.0) or ``alb``."""
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    multi_value: bool
    """The ALB target group sends (and so expects) multi-value headers."""


class LambdaHandler:
    """Models loaded once, served to Lambda events through the modelport HTTP app."""

    def __init__(self, settings: Settings) -> None:
        from .server.app import create_app
        from .server.serve import build_dataplane

        self.settings = settings
        self.dataplane = build_dataplane(settings)
        self.dataplane.load_sync()
        self.app = create_app(self.dataplane, settings, load_on_startup=False)
        self._loop = asyncio.new_event_loop()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> LambdaHandler:
        """A handler for the model at ``MODELPORT_MODEL`` (else ``$LAMBDA_TASK_ROOT/models``)."""
        env = os.environ if environ is None else environ
        path = env.get("MODELPORT_MODEL") or str(Path(env.get("LAMBDA_TASK_ROOT", ".")) / "models")
        return cls(Settings.load({"model_path": path}, environ=env))

    def __call__(self, event: Event, context: Any = None) -> Result:
        """Answer one event in its own response format; never raises."""
        kind = _kind(event)
        try:
            request = _parse(event, kind)
        except InvalidInputError as exc:
            return _result(kind, 400, _error_headers(), _error_body(str(exc)), False)
        except Exception as exc:  # an event of a known kind, but malformed
            message = f"malformed {kind} event: {type(exc).__name__}: {exc}"
            return _result(kind, 400, _error_headers(), _error_body(message), False)
        try:
            status, headers, body = self._loop.run_until_complete(self._call_app(request))
        except Exception as exc:  # the app answers errors itself; this is a last resort
            log.exception("lambda invocation failed")
            message = f"internal error: {type(exc).__name__}: {exc}"
            return _result(kind, 500, _error_headers(), _error_body(message), False)
        return _result(kind, status, headers, body, request.multi_value)

    def close(self) -> None:
        """Finish queued work and stop the model workers (the container is going away)."""
        self._loop.run_until_complete(self.dataplane.close())
        self._loop.close()

    async def _call_app(self, request: _Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "https",
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            "client": None,
            "server": None,
        }
        messages = [{"type": "http.request", "body": request.body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, send)
        return int(start["status"]), list(start.get("headers", [])), b"".join(chunks)


def _kind(event: Any) -> str:
    if not isinstance(event, Mapping):
        return "rest"
    if event.get("version") == "2.0":
        return "http"
    context = event.get("requestContext")
    if isinstance(context, Mapping) and "elb" in context:
        return "alb"
    return "rest"


def _parse(event: Any, kind: str) -> _Request:
    if not isinstance(event, Mapping) or not (
        "httpMethod" in event or isinstance(event.get("requestContext"), Mapping)
    ):
        raise InvalidInputError(
            "unrecognised event: expected an API Gateway (REST or HTTP API), ALB or "
            "Lambda Function URL request"
        )
    if kind == "http":
        method = str(event["requestContext"].get("http", {}).get("method", ""))
        path = unquote(str(event.get("rawPath") or "/"))
        query = str(event.get("rawQueryString") or "").encode()
        headers = {k: str(v) for k, v in (event.get("headers") or {}).items()}
        multi = False
    else:
        method = str(event.get("httpMethod", ""))
        path = str(event.get("path") or "/")
        if kind == "alb":
            path = unquote(path)
        query = _query(event)
        multi = kind == "alb" and "multiValueHeaders" in event
        if event.get("multiValueHeaders"):
            headers = {k: ",".join(v or []) for k, v in event["multiValueHeaders"].items()}
        else:
            headers = {k: str(v) for k, v in (event.get("headers") or {}).items()}
    body = _body(event)
    lowered = {k.lower(): v for k, v in headers.items()}
    lowered["content-length"] = str(len(body))
    return _Request(
        kind=kind,
        method=method.upper(),
        path=_route_path(path),
        query=query,
        headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in lowered.items()],
        body=body,
        multi_value=multi,
    )


def _route_path(path: str) -> str:
    """The path from ``/v2`` on: a stage or base-path prefix in front of it is not ours."""
    at = path.find("/v2/")
    if at < 0 and path.endswith("/v2"):
        at = len(path) - 3
    return path[at:] if at > 0 else path


def _query(event: Event) -> bytes:
    multi = event.get("multiValueQueryStringParameters")
    if multi:
        return urlencode([(k, v) for k, vs in multi.items() for v in vs or []]).encode()
    return urlencode(event.get("queryStringParameters") or {}).encode()


def _body(event: Event) -> bytes:
    raw = event.get("body")
    if raw is None or raw == "":
        return b""
    if not isinstance(raw, str):
        raise InvalidInputError(f"event body must be a string, got {type(raw).__name__}")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError("event body is marked base64-encoded but is not") from None
    return raw.encode("utf-8")


def _error_headers() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json")]


def _error_body(message: str) -> bytes:
    from .protocol.codec import encode_error

    return encode_error(message)


def _result(
    kind: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes, multi: bool
) -> Result:
    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    names.pop("content-length", None)  # the service sets it for the body it sends
    textual = names.get("content-type", "").startswith(_TEXT)
    result: Result = {"statusCode": status}
    if kind == "alb":
        result["statusDescription"] = f"{status} {_phrase(status)}".strip()
    if multi:
        result["multiValueHeaders"] = {k: [v] for k, v in names.items()}
    else:
        result["headers"] = names
    result["body"] = body.decode("utf-8") if textual else base64.b64encode(body).decode("ascii")
    result["isBase64Encoded"] = not textual
    return result


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _configured() -> bool:
    return "MODELPORT_MODEL" in os.environ or "AWS_LAMBDA_FUNCTION_NAME" in os.environ


# Lambda's init phase: load once per container, so warm invocations pay nothing.
_handler: LambdaHandler | None = LambdaHandler.from_environment() if _configured() else None


def handler(event: Event, context: Any = None) -> Result:
    """The Lambda entry point (``modelport.aws_lambda.handler``)."""
    global _handler
    if _handler is None:
        _handler = LambdaHandler.from_environment()
    return _handler(event, context)
