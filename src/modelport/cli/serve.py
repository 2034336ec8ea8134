"""``modelport serve PATH``: serve a model, a model directory or a repository over HTTP/gRPC."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from ..settings import ENV_PREFIX, Settings, env_var

_DEFAULTS = {f.name: f.default for f in fields(Settings)}
_LEGACY_PREFIX = ENV_PREFIX + "SERVE_"
"""click used to read ``MODELPORT_SERVE_<OPTION>`` too, and ``--help`` showed those names: they
still work, a step below ``MODELPORT_<OPTION>``, and log a deprecation warning."""


def register(app: typer.Typer) -> None:
    app.command()(serve)


def _setting(name: str, help: str, *flags: str, default: str | None = None) -> Any:
    """The option of setting ``name``: None unless given, so that :meth:`Settings.load` applies
    ``MODELPORT_<NAME>``, the --config file and the default; its help names both."""
    default = default or _shown(_DEFAULTS[name])
    extra = f"env var: {env_var(name)}" + (f"; default: {default}" if default else "")
    return typer.Option(None, *flags, help=f"{help}  [{extra}]", show_default=False)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def serve(
    model: Path | None = typer.Argument(
        None,
        help="Model artifact, model directory, or model repository (<model>/<version>/...).  "
        f"[env var: {env_var('model_path')}]",
        show_default=False,
    ),
    host: str | None = _setting("host", "Address to bind."),
    http_port: int | None = _setting("http_port", "HTTP port."),
    grpc_port: int | None = _setting("grpc_port", "gRPC port; 0 turns gRPC off."),
    workers: int | None = _setting(
        "workers", "Server processes sharing the ports, each loading every model."
    ),
    threads: int | None = _setting(
        "threads", "Intra-op threads per model call (ONNX Runtime and the like)."
    ),
    auto_batching: bool | None = _setting(
        "auto_batching",
        "Choose each model's batch size and queue delay from its timings at start, unless "
        "its modelport.yaml sets them.",
        "--auto-batching/--no-auto-batching",
    ),
    device: str | None = _setting(
        "device", "Where models run: cpu, cuda, cuda:N or auto (a model's device: wins)."
    ),
    max_body_size: int | None = _setting(
        "max_body_size", "Largest request body in bytes.", default="67108864 (64 MiB)"
    ),
    request_timeout: float | None = _setting(
        "request_timeout", "Seconds a request may take unless it sets its own 'timeout'."
    ),
    shutdown_timeout: float | None = _setting(
        "shutdown_timeout", "Seconds after SIGTERM by which in-flight requests are finished."
    ),
    drain_period: float | None = _setting(
        "drain_period",
        "Seconds after SIGTERM that requests on open HTTP connections are still answered.",
    ),
    max_concurrency: int | None = _setting(
        "max_concurrency",
        "Inference requests in flight at once; past it 503 before the body is read (0: no cap).",
    ),
    max_connections: int | None = _setting(
        "max_connections", "Open HTTP connections; past it a new one gets a 503 (0: no cap)."
    ),
    header_timeout: float | None = _setting(
        "header_timeout", "Seconds a request's headers may take (slow clients get a 408)."
    ),
    body_timeout: float | None = _setting(
        "body_timeout", "Seconds a request's body may take after its headers."
    ),
    expose_errors: bool | None = _setting(
        "expose_errors",
        "Send a failing model's exception to the caller (development); off, only the log has it.",
        "--expose-errors/--no-expose-errors",
    ),
    log_level: str | None = _setting("log_level", "critical|error|warning|info|debug"),
    log_format: str | None = _setting("log_format", "json|text"),
    access_log: bool | None = _setting(
        "access_log", "Log every inference request.", "--access-log/--no-access-log"
    ),
    auth_token: str | None = _setting(
        "auth_token", "Require 'Authorization: Bearer TOKEN' (health routes stay open)."
    ),
    trust: bool | None = _setting(
        "trust", "Allow artifacts that run code when loaded (pickle, joblib).", "--trust"
    ),
    config: Path | None = typer.Option(
        None,
        help="YAML file of settings (keys as these options, with underscores).  "
        f"[env var: {env_var('config')}]",
    ),
    log_db: str | None = _setting(
        "log_db",
        "Log predictions to this database: a file, sqlite:///PATH or postgresql://USER@HOST/DB.",
    ),
    log_predictions: bool = typer.Option(
        False,
        "--log-predictions",
        help="Log predictions to predictions.db in the data directory (what "
        "'modelport report' and 'modelport feedback' read by default).  "
        f"[env var: {env_var('log_predictions')}]",
    ),
    log_sample_rate: float | None = _setting("log_sample_rate", "Share of requests to log."),
    log_writer: str | None = _setting(
        "log_writer",
        "process|thread: where the prediction log encodes and writes rows; 'process' "
        "keeps that work off the serving process's CPU and GIL.",
    ),
    watch: bool | None = _setting(
        "watch",
        "Poll the model repository: new version directories go live.",
        "--watch/--no-watch",
    ),
    watch_interval: float | None = _setting(
        "watch_interval", "Seconds between scans of the model repository."
    ),
    swap_policy: str | None = _setting(
        "swap_policy",
        "double_buffer (no downtime, 2x memory during a swap) or swap_in_place "
        "(bounded memory, brief 503).",
    ),
    admin: bool | None = _setting(
        "admin",
        "Serve the admin API (versions, pin, canary, shadow, rollback); needs --auth-token.",
        "--admin/--no-admin",
    ),
    console: bool | None = _setting(
        "console",
        "Serve the console at / (models, live metrics, try-it, report); behind --auth-token.",
        "--console/--no-console",
    ),
) -> None:
    """Serve models over the Open Inference Protocol (HTTP and gRPC) until SIGTERM.

    Every option can also come from its MODELPORT_<OPTION> environment variable
    (e.g. MODELPORT_HTTP_PORT) or the --config file; flags win over both.
    """
    import logging

    from ..errors import ConfigError
    from ..logs import configure_logging
    from ..server.serve import serve as run
    from ..settings import parse_bool

    environ, legacy = _environ(os.environ)
    if not log_predictions and env_var("log_predictions") in environ:
        try:
            log_predictions = parse_bool(environ[env_var("log_predictions")])
        except ValueError as exc:
            raise ConfigError(f"{env_var('log_predictions')}: {exc}") from None
    settings = Settings.load(
        {
            "model_path": model,
            "host": host,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "workers": workers,
            "threads": threads,
            "device": device,
            "auto_batching": auto_batching,
            "max_body_size": max_body_size,
            "request_timeout": request_timeout,
            "shutdown_timeout": shutdown_timeout,
            "drain_period": drain_period,
            "max_concurrency": max_concurrency,
            "max_connections": max_connections,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "expose_errors": expose_errors,
            "log_level": log_level,
            "log_format": log_format,
            "access_log": access_log,
            "auth_token": auth_token,
            "trust": trust,
            "log_db": log_db or (_default_log_db(environ) if log_predictions else None),
            "log_sample_rate": log_sample_rate,
            "log_writer": log_writer,
            "watch": watch,
            "watch_interval": watch_interval,
            "swap_policy": swap_policy,
            "admin": admin,
            "console": console,
        },
        environ=environ,
        config_file=config,
    )
    configure_logging(settings.log_level, settings.log_format)
    for old in legacy:
        logging.getLogger("modelport.server").warning(
            f"{old} is deprecated: name it {ENV_PREFIX + old.removeprefix(_LEGACY_PREFIX)}"
        )
    run(settings)


def _environ(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``environ`` with each ``MODELPORT_SERVE_<OPTION>`` as ``MODELPORT_<OPTION>`` where that
    is unset, and the old names that were used."""
    known = {env_var(n) for n in (*_DEFAULTS, "config", "log_predictions")}
    merged, legacy = dict(environ), []
    for key, value in environ.items():
        new = ENV_PREFIX + key.removeprefix(_LEGACY_PREFIX)
        if key.startswith(_LEGACY_PREFIX) and new in known:
            legacy.append(key)
            merged.setdefault(new, value)
    return merged, sorted(legacy)


def _default_log_db(environ: Mapping[str, str]) -> str:
    from ._log_db import log_db_url

    return log_db_url(environ.get(env_var("log_db")))
