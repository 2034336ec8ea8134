"""``modelport serve PATH``: serve a model, a model directory or a repository over HTTP/gRPC."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    model: Path | None = typer.Argument(
        None,
        help="Model artifact, model directory, or model repository (<model>/<version>/...).",
        show_default=False,
    ),
    host: str | None = typer.Option(None, help="Address to bind.  [default: 127.0.0.1]"),
    http_port: int | None = typer.Option(None, help="HTTP port.  [default: 8080]"),
    grpc_port: int | None = typer.Option(None, help="gRPC port; 0 turns gRPC off. [default: 8081]"),
    workers: int | None = typer.Option(
        None, help="Server processes sharing the ports, each loading every model. [default: 1]"
    ),
    threads: int | None = typer.Option(
        None, help="Intra-op threads per model call (ONNX Runtime and the like)."
    ),
    max_body_size: int | None = typer.Option(
        None, help="Largest request body in bytes.  [default: 67108864]"
    ),
    request_timeout: float | None = typer.Option(
        None, help="Seconds a request may take unless it sets its own 'timeout'."
    ),
    shutdown_timeout: float | None = typer.Option(
        None, help="Seconds to finish in-flight requests after SIGTERM.  [default: 30]"
    ),
    log_level: str | None = typer.Option(None, help="critical|error|warning|info|debug"),
    log_format: str | None = typer.Option(None, help="json|text  [default: json]"),
    access_log: bool | None = typer.Option(
        None, "--access-log/--no-access-log", help="Log every inference request."
    ),
    auth_token: str | None = typer.Option(
        None, help="Require 'Authorization: Bearer TOKEN' (health routes stay open)."
    ),
    trust: bool | None = typer.Option(
        None, "--trust", help="Allow artifacts that run code when loaded (pickle, joblib)."
    ),
    config: Path | None = typer.Option(
        None, help="YAML file of settings (keys as these options, with underscores)."
    ),
    log_db: str | None = typer.Option(
        None,
        help="Log predictions to this database: a file, sqlite:///PATH or "
        "postgresql://USER@HOST/DB.",
        show_default=False,
    ),
    log_predictions: bool = typer.Option(
        False,
        "--log-predictions",
        help="Log predictions to predictions.db in the data directory (what "
        "'modelport report' and 'modelport feedback' read by default).",
    ),
    log_sample_rate: float | None = typer.Option(
        None, help="Share of requests to log.  [default: 1.0]"
    ),
    log_writer: str | None = typer.Option(
        None,
        help="process|thread: where the prediction log encodes and writes rows; 'process' "
        "keeps that work off the serving process's CPU and GIL.  [default: process]",
    ),
    watch: bool | None = typer.Option(
        None,
        "--watch/--no-watch",
        help="Poll the model repository: new version directories go live.  [default: watch]",
    ),
    watch_interval: float | None = typer.Option(
        None, help="Seconds between scans of the model repository.  [default: 2]"
    ),
    swap_policy: str | None = typer.Option(
        None,
        help="double_buffer (no downtime, 2x memory during a swap) or swap_in_place "
        "(bounded memory, brief 503).  [default: double_buffer]",
    ),
    admin: bool | None = typer.Option(
        None,
        "--admin/--no-admin",
        help="Serve the admin API (versions, pin, canary, shadow, rollback); needs "
        "--auth-token.  [default: no-admin]",
    ),
) -> None:
    """Serve models over the Open Inference Protocol (HTTP and gRPC) until SIGTERM.

    Every option can also come from a MODELPORT_<OPTION> environment variable
    (e.g. MODELPORT_HTTP_PORT) or the --config file; flags win over both.
    """
    from ..server.logs import configure_logging
    from ..server.serve import serve as run
    from ..settings import Settings

    settings = Settings.load(
        {
            "model_path": model,
            "host": host,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "workers": workers,
            "threads": threads,
            "max_body_size": max_body_size,
            "request_timeout": request_timeout,
            "shutdown_timeout": shutdown_timeout,
            "log_level": log_level,
            "log_format": log_format,
            "access_log": access_log,
            "auth_token": auth_token,
            "trust": trust,
            "log_db": log_db or (_default_log_db() if log_predictions else None),
            "log_sample_rate": log_sample_rate,
            "log_writer": log_writer,
            "watch": watch,
            "watch_interval": watch_interval,
            "swap_policy": swap_policy,
            "admin": admin,
        },
        environ=os.environ,
        config_file=config,
    )
    configure_logging(settings.log_level, settings.log_format)
    run(settings)


def _default_log_db() -> str:
    from ._log_db import log_db_url

    return log_db_url(os.environ.get("MODELPORT_LOG_DB"))
