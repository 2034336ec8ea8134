"""The console a person opens at ``/``, its JSON routes, and the static files it and ``/docs``
load, every one from inside the package (``server/static/``): no request leaves the machine.

The page itself and the static files hold no data: they are public, like the wheel they come
from. Everything the console shows comes from routes behind the bearer token when the server
has one (the console asks for it once and sends it as ``Authorization: Bearer``): the V2
routes, the admin API, and three of its own::

    GET  /console/api/models          models, versions (state, role, canary share), signatures
    GET  /console/api/metrics         live figures per version (:mod:`.live`), ?window=SECONDS
    POST /console/api/report/{name}   the HTML report for ?since=&until=&window=, the body an
                                      optional reference data set (?reference=NAME.csv|npz|npy,
                                      &reference_input=INPUT)

``--no-console`` leaves all of them out but the static files of ``/docs``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import tempfile
import threading
import time
import weakref
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .._version import __version__
from ..errors import ConfigError, InvalidInputError, ModelNotFoundError
from .http import AppContext, Request, Response, Route, json_response
from .live import LiveMetrics, Snapshot, read_samples

if TYPE_CHECKING:
    from ..store.log import PredictionLog

__all__ = ["CONSOLE_ROUTES", "CSP", "PUBLIC_HANDLERS", "STATIC_ROUTES", "install", "static_file"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
"""What a console or ``/docs`` page may load: only from this server (and inline styles, data
images: Swagger UI's and the report's)."""

DOCS_FILES = frozenset({
    "docs.js",
    "vendor/swagger-ui/swagger-ui-bundle.js",
    "vendor/swagger-ui/swagger-ui.css",
    "vendor/swagger-ui/LICENSE",
    "vendor/swagger-ui/NOTICE",
    "vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
})  # fmt: skip
"""Static files ``/docs`` needs: served with the console off too."""
CONSOLE_FILES = frozenset({
    "console.js",
    "console.css",
    "vendor/README.md",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/uplot/LICENSE",
})  # fmt: skip
_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".md": b"text/markdown; charset=utf-8",
}
_TEXT = b"text/plain; charset=utf-8"
MAX_WINDOW_S = 300.0
"""Longest window of the live figures (readings are kept for ``live.HISTORY_S``)."""


# -- static files ---------------------------------------------------------------------------


@cache
def static_file(path: str) -> tuple[bytes, bytes]:
    """``(content, etag)`` of the packaged static file at ``path`` (under ``server/static``)."""
    data = resources.files(__package__).joinpath("static", *path.split("/")).read_bytes()
    return data, _etag(data)


def _etag(data: bytes) -> bytes:
    return f'"{hashlib.sha256(data).hexdigest()[:32]}"'.encode()


@cache
def _console_html(auth: bool) -> tuple[bytes, bytes]:
    """The console page, saying whether the server wants a token (so that the page asks for
    it before its first call rather than after a 401)."""
    data, _ = static_file("console.html")
    data = data.replace(b"{{auth}}", b"required" if auth else b"none")
    return data, _etag(data)


def _file_response(
    request: Request, path: str, file: tuple[bytes, bytes], extra: list[tuple[bytes, bytes]]
) -> Response:
    data, etag = file
    kind = _TYPES.get(os.path.splitext(path)[1], _TEXT)
    headers = [
        (b"etag", etag),
        (b"cache-control", b"no-cache"),  # revalidated: a new modelport is seen at once
        (b"x-content-type-options", b"nosniff"),
        *extra,
    ]
    if request.headers.get(b"if-none-match") == etag:
        return Response(304, headers, b"")
    headers += [(b"content-type", kind), (b"content-length", str(len(data)).encode())]
    return Response(200, headers, data)


_PAGE_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"SAMEORIGIN"),
]


def html_page(request: Request, path: str) -> Response:
    """A packaged HTML page, allowed to load only from this server (:data:`CSP`)."""
    return _file_response(request, path, static_file(path), _PAGE_HEADERS)


async def static(request: Request) -> Response:
    """A static file of the console or of ``/docs``; only the files listed are served."""
    path = request.scope["path"].removeprefix("/static/")
    allowed = DOCS_FILES | (CONSOLE_FILES if request.app.settings.console else frozenset())
    if path not in allowed:
        return json_response(404, {"error": f"no static file {path!r}"})
    return _file_response(request, path, static_file(path), [])


# -- the console's routes -------------------------------------------------------------------


async def console_page(request: Request) -> Response:
    auth = request.app.settings.auth_token is not None
    return _file_response(request, "console.html", _console_html(auth), _PAGE_HEADERS)


async def console_models(request: Request) -> Response:
    """Every model: its versions as the admin API describes them, and the live version's
    signature, labels and description (what the try-it form is built from)."""
    app = request.app
    dataplane = app.dataplane
    models = []
    for name in dataplane.versions.models():
        try:
            entry = dataplane.versions.describe(name)
        except ModelNotFoundError:
            continue  # removed while listing
        try:
            runner = dataplane.registry.get(name)
        except ModelNotFoundError:
            runner = None
        if runner is not None:
            model = runner.model
            meta = model.metadata()
            entry.update(
                platform=meta["platform"],
                inputs=meta["inputs"],
                outputs=meta["outputs"],
                description=model.description,
                labels=[str(label) for label in model.labels] if model.labels else None,
                max_batch_size=model.batching.max_batch_size,
            )
        models.append(entry)
    server = {
        "version": __version__,
        "admin": app.settings.admin,
        "auth": app.settings.auth_token is not None,
        "prediction_log": dataplane.prediction_log is not None,
        "workers": app.settings.workers,
    }
    return json_response(200, {"server": server, "models": models})


_LIVE: weakref.WeakKeyDictionary[Any, LiveMetrics] = weakref.WeakKeyDictionary()


def _live(app: AppContext) -> LiveMetrics:
    live = _LIVE.get(app)
    if live is None:
        live = _LIVE[app] = LiveMetrics()
    return live


async def console_metrics(request: Request) -> Response:
    """Live figures per model version, over ``?window=`` seconds (default 10)."""
    query = _query(request)
    window = _number(query, "window", 10.0)
    if not 1.0 <= window <= MAX_WINDOW_S:
        raise InvalidInputError(f"window must be between 1 and {MAX_WINDOW_S:g} seconds")
    snapshot = await _snapshot(request.app)
    summary = _live(request.app).summary(snapshot, window)
    roles = _roles(request.app)
    for entry in summary["versions"]:
        role, state, percent = roles.get((entry["model"], entry["version"]), (None, None, None))
        entry.update(role=role, state=state, percent=percent)
    return json_response(200, summary)


def _roles(app: AppContext) -> dict[tuple[str, str], tuple[str | None, str, float | None]]:
    """(model, version) → (role, state, canary percent) as the version manager has them."""
    versions = app.dataplane.versions
    out: dict[tuple[str, str], tuple[str | None, str, float | None]] = {}
    for name in versions.models():
        try:
            described = versions.describe(name)
        except ModelNotFoundError:
            continue
        policy = described["policy"] or {}
        for row in described["versions"]:
            percent = policy.get("percent") if row["role"] == "canary" else None
            out[(name, row["version"])] = (row["role"], row["state"], percent)
    return out


async def _snapshot(app: AppContext) -> Snapshot:
    """The server's metrics now: this process's registry, or every worker's merged."""
    now = time.time()
    if app.worker_metrics is None:
        samples = (
            (s.name, s.labels, s.value) for family in app.metrics.registry.collect()
            for s in family.samples
        )  # fmt: skip
        return read_samples(samples, now)
    from prometheus_client.parser import text_string_to_metric_families

    text = (await app.worker_metrics.gather(app.metrics.render())).decode()
    families = text_string_to_metric_families(text)
    return read_samples(((s.name, s.labels, s.value) for f in families for s in f.samples), now)


# -- the report -----------------------------------------------------------------------------

_REPORT_LOCK = threading.Lock()
"""matplotlib's pyplot is not thread-safe: one report is drawn at a time."""
_REFERENCE_SUFFIXES = (".csv", ".npz", ".npy")
_REPORT_CSP = b"default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The report page loads nothing: its plots are embedded."""
FLUSH_S = 5.0
"""How long a report waits for the prediction log to write what it has queued."""


async def console_report(request: Request) -> Response:
    """The HTML report of a model (:func:`modelport.report.render_html`) from this server's
    prediction log, for a time range; the body, if any, is a reference data set for drift."""
    name = request.params["name"]
    dataplane = request.app.dataplane
    model = dataplane.registry.get(name).model  # an unknown model is a 404
    log = dataplane.prediction_log
    if log is None:
        why = (
            "this server logs no predictions, so it has nothing to report: start it with "
            "--log-predictions or --log-db"
        )
        return json_response(404, {"error": why})
    query = _query(request)
    since, until = _moment(query, "since"), _moment(query, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidInputError("since must be before until")
    window = _number(query, "window", None)
    if window is not None and window < 1:
        raise InvalidInputError("window must be at least 1 second")
    body = await request.body()
    reference_input = _text(query, "reference_input")
    names: dict[str, str] = {}
    features = getattr(model, "feature_names", None)
    inputs = model.served_signature.inputs if model.served_signature else ()
    if features and len(inputs) == 1:
        names = {f"{inputs[0].name}[{j}]": str(n) for j, n in enumerate(features)}
    reference = None
    if body:
        reference, from_file = _reference(body, _text(query, "reference"), reference_input)
        names.update(from_file)
    page = await asyncio.to_thread(_render, log, name, since, until, window, reference, names)
    data = page.encode()
    return Response(
        200,
        [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(data)).encode()),
            (b"content-security-policy", _REPORT_CSP),
        ],
        data,
    )


def _render(
    log: PredictionLog,
    name: str,
    since: float | None,
    until: float | None,
    window: float | None,
    reference: dict[str, Any] | None,
    names: dict[str, str],
) -> str:
    from ..report import build_report, render_html

    log.flush(FLUSH_S)  # what was answered before the click is in the report
    rows = log.predictions(name, since, until)
    with _REPORT_LOCK:
        report = build_report(name, rows, reference=reference, window_s=window, feature_names=names)
        return render_html(report)


def _reference(
    body: bytes, filename: str | None, input_name: str | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The reference data set sent as the body (its file name tells the format)."""
    from ..report import load_reference, reference_names

    suffix = os.path.splitext(filename or "")[1].lower()
    if suffix not in _REFERENCE_SUFFIXES:
        raise InvalidInputError(
            f"reference={filename!r}: name the reference file, ending in .csv, .npz or .npy"
        )
    with tempfile.TemporaryDirectory(prefix="modelport-reference-") as folder:
        path = os.path.join(folder, "reference" + suffix)
        with open(path, "wb") as f:
            f.write(body)
        try:
            return load_reference(path, input_name), reference_names(path, input_name)
        except (ConfigError, ValueError, UnicodeDecodeError) as exc:
            message = str(exc).replace(path, filename or "").replace("reference" + suffix, "")
            raise InvalidInputError(f"reference {filename}: {message}") from None


# -- query strings --------------------------------------------------------------------------


def _query(request: Request) -> dict[str, list[str]]:
    raw = request.scope.get("query_string", b"").decode("latin-1")
    return parse_qs(raw, keep_blank_values=False)


def _text(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _number(query: dict[str, list[str]], key: str, default: Any) -> Any:
    text = _text(query, key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{key} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{key} must be a finite number of seconds, got {text!r}")
    return value


def _moment(query: dict[str, list[str]], key: str) -> float | None:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    text = _text(query, key)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{key} must be seconds since the epoch or an ISO 8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# -- the route table ------------------------------------------------------------------------

STATIC_ROUTES: tuple[Route, ...] = (
    Route("GET", "/static/{file}", static, "A static file of the console or /docs"),
    Route("GET", "/static/vendor/{file}", static, "What the vendored files are, and whence"),
    Route("GET", "/static/vendor/{package}/{file}", static, "A vendored file (Swagger UI, uPlot)"),
)
"""Served with the console off too: ``/docs`` loads Swagger UI from them."""
CONSOLE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/", console_page, "The console: models, live metrics, try-it, report, API"),
    Route("GET", "/console/api/models", console_models, "Console: models, versions, signatures"),
    Route("GET", "/console/api/metrics", console_metrics, "Console: live figures per version"),
    Route("POST", "/console/api/report/{name}", console_report, "Console: a model's HTML report"),
)


def install(app: AppContext) -> tuple[Route, ...]:
    """The routes to serve: the static files, and the console unless ``--no-console``."""
    if app.settings.console:
        return STATIC_ROUTES + CONSOLE_ROUTES
    return STATIC_ROUTES


PUBLIC_HANDLERS: frozenset[Any] = frozenset({static, console_page})
"""Handlers open without the bearer token: the console page and the static files hold no
data, only the code every copy of the package has."""
