"""Every knob of ``modelport serve`` in one object, read once at the edge.

Precedence, highest first: explicit values (CLI flags), ``MODELPORT_<FIELD>`` environment
variables (e.g. ``MODELPORT_HTTP_PORT=9000``; :func:`env_var` names them), a YAML config
file (``--config`` or ``MODELPORT_CONFIG``) whose keys are the field names, then the defaults
below. Nothing under the server reads ``os.environ``; it is handed a :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "env_var", "parse_bool"]

ENV_PREFIX = "MODELPORT_"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def env_var(name: str) -> str:
    """The environment variable of setting ``name``: ``http_port`` → ``MODELPORT_HTTP_PORT``."""
    return ENV_PREFIX + name.upper()


def parse_bool(value: Any) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off/""`` (any case), as variables and YAML spell them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return convert(value)

    return parse


@dataclass(frozen=True)
class Settings:
    """Server settings; see the module docstring for where values come from."""

    model_path: Path | None = None
    """An artifact, a model directory or a model repository."""
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int | None = 8081
    """None (or 0 on the command line) serves no gRPC."""
    workers: int = 1
    """Server processes sharing the ports (each loads every model)."""
    threads: int | None = None
    """Intra-op threads per model call, for runtimes that take them; None: the CPUs this
    process may use (affinity mask, cgroup quota) shared among the workers."""
    auto_batching: bool = True
    """Time each model at start to choose ``max_batch_size`` and ``max_queue_delay_ms`` when
    its ``modelport.yaml`` sets neither; off, the fixed defaults (32 rows, 1 ms)."""
    device: str | None = None
    """Where models run (``cpu``, ``cuda``, ``cuda:N``, ``auto``) unless a model's own
    ``device:`` says; None: the CPU."""
    max_body_size: int = 64 * 1024 * 1024
    request_timeout: float | None = None
    """Seconds a request may take when it carries no ``timeout`` parameter."""
    shutdown_timeout: float = 30.0
    """Seconds after SIGTERM by which the server has finished and exits: requests in flight
    that are not answered by then are cancelled."""
    drain_period: float = 5.0
    """Seconds after SIGTERM during which requests arriving on open HTTP connections are still
    answered (each with ``Connection: close``); it ends sooner once no connection is left, and
    never after ``shutdown_timeout``."""
    max_concurrency: int | None = 512
    """Inference requests (HTTP and gRPC together) a server process works on at once; past it
    a request is refused at once (503, RESOURCE_EXHAUSTED) before its body is read. None: no
    cap (each model's ``max_queue_size`` still bounds its queue); 0 in a file, flag or
    variable means None."""
    max_connections: int | None = 4096
    """Open HTTP connections per server process; past it a new one gets a 503 and is closed.
    None: no cap."""
    header_timeout: float = 10.0
    """Seconds a request's headers may take to arrive; past them a 408 and the connection
    closed (0: no limit)."""
    body_timeout: float = 60.0
    """Seconds a request's body may take after its headers (0: no limit)."""
    expose_errors: bool = False
    """Send a failing model's exception to the caller; off, it goes to the log only."""
    log_level: str = "info"
    log_format: str = "json"
    access_log: bool = False
    auth_token: str | None = None
    trust: bool = False
    log_db: str | None = None
    """Prediction log database (file path, sqlite:///…, postgresql://…); None logs nothing."""
    log_sample_rate: float = 1.0
    """Share of requests the prediction log records."""
    log_writer: str = "process"
    """``process``: the prediction log encodes and writes rows in a child process, off the
    serving process's CPU and GIL; ``thread``: in a thread of the serving process."""
    watch: bool = True
    """Poll the model repository: new version directories go live, removed ones unload."""
    watch_interval: float = 2.0
    """Seconds between two scans of the model repository."""
    swap_policy: str = "double_buffer"
    """``double_buffer`` (no downtime, two versions in memory during a swap) or
    ``swap_in_place`` (bounded memory, 503 + Retry-After during a swap)."""
    admin: bool = False
    """Serve the admin API (versions, pin, canary, shadow, rollback); needs ``auth_token``."""
    console: bool = True
    """Serve the console at ``/`` (models, live metrics, try-it, report), behind
    ``auth_token`` like the data plane."""

    def __post_init__(self) -> None:
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.log_format not in ("json", "text"):
            raise ConfigError("log_format must be 'json' or 'text'")
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.device is not None:
            from .devices import parse_device

            parse_device(self.device)
        for name in ("max_concurrency", "max_connections"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or none: no cap)")
        if self.max_body_size < 1:
            raise ConfigError(f"max_body_size must be >= 1, got {self.max_body_size}")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError("request_timeout must be > 0 seconds")
        for name in ("header_timeout", "body_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 seconds (0: no limit)")
        for name in ("shutdown_timeout", "drain_period"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 seconds")
        if self.watch_interval <= 0:
            raise ConfigError(f"watch_interval must be > 0 seconds, got {self.watch_interval}")
        if self.swap_policy not in ("double_buffer", "swap_in_place"):
            raise ConfigError(
                f"swap_policy must be 'double_buffer' or 'swap_in_place', got {self.swap_policy!r}"
            )
        if self.admin and not self.auth_token:
            raise ConfigError(
                "the admin API needs an auth token (--auth-token): management endpoints open "
                "to anyone who reaches the port are how TorchServe's ShellTorch happened"
            )
        if self.log_writer not in ("process", "thread"):
            raise ConfigError(f"log_writer must be 'process' or 'thread', got {self.log_writer!r}")
        if not 0.0 <= self.log_sample_rate <= 1.0:
            raise ConfigError(
                f"log_sample_rate must be between 0 and 1, got {self.log_sample_rate}"
            )

    @property
    def loopback_only(self) -> bool:
        return self.host in _LOOPBACK

    def runtime_options(self) -> dict[str, Any]:
        """Runtime defaults for every model served (a model's own ``runtime:`` wins)."""
        from .cpus import cpu_budget

        threads = self.threads if self.threads is not None else cpu_budget().threads(self.workers)
        options: dict[str, Any] = {"intra_op_threads": threads}
        if self.device is not None:
            options["device"] = self.device
        if not self.auto_batching:
            options["auto_batching"] = False
        return options

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Settings from ``overrides`` (None values ignored), then ``environ``, then the file."""
        environ = environ or {}
        values: dict[str, Any] = {}
        file = config_file or (
            Path(environ[env_var("config")]) if environ.get(env_var("config")) else None
        )
        if file is not None:
            values.update(_read_file(file))
        for name in _FIELDS:
            key = env_var(name)
            if key in environ:
                values[name] = environ[key]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**{name: _convert(name, value) for name, value in values.items()})

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "model_path": _optional(Path),
    "host": str,
    "http_port": int,
    "grpc_port": _optional(lambda v: int(v) or None),
    "workers": int,
    "threads": _optional(int),
    "device": _optional(str),
    "auto_batching": parse_bool,
    "max_body_size": int,
    "request_timeout": _optional(float),
    "shutdown_timeout": float,
    "drain_period": float,
    "max_concurrency": _optional(lambda v: int(v) or None),
    "max_connections": _optional(lambda v: int(v) or None),
    "header_timeout": float,
    "body_timeout": float,
    "expose_errors": parse_bool,
    "log_level": lambda v: str(v).lower(),
    "log_format": lambda v: str(v).lower(),
    "access_log": parse_bool,
    "auth_token": _optional(str),
    "trust": parse_bool,
    "log_db": _optional(str),
    "log_sample_rate": float,
    "log_writer": lambda v: str(v).lower(),
    "watch": parse_bool,
    "watch_interval": float,
    "swap_policy": lambda v: str(v).lower(),
    "admin": parse_bool,
    "console": parse_bool,
}
_FIELDS = tuple(f.name for f in fields(Settings))


def _convert(name: str, value: Any) -> Any:
    if name not in _CONVERTERS:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(_FIELDS)}")
    try:
        return _CONVERTERS[name](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: invalid value {value!r}: {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
