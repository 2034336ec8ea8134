"""``modelport.yaml``: what a model declares beside its artifact.

Example::

    name: iris
    version: "2"
    description: Iris species from four measurements
    framework: onnx               # only to override detection
    artifact: model.onnx          # when a directory holds several files
    model_class: MyModel          # when model.py defines several Model subclasses
    task: text-classification     # a Hugging Face directory's task, to override detection
    device: cuda                  # cpu (default), cuda, cuda:N or auto
    instances: 2                  # batches in flight at once (default 1; 2 on a GPU)
    trust: false                  # allow pickle-based artifacts
    signature:
      inputs:  [{name: features, datatype: FP32, shape: [-1, 4]}]
      outputs: [{name: label, datatype: INT64, shape: [-1]}]
    request_signature:            # what callers send, when model.py's batch hooks convert
      inputs:  [{name: text, datatype: BYTES, shape: [-1]}]
      outputs: [{name: embedding, datatype: FP32, shape: [-1, 384]}]
    batching: {max_batch_size: 64, max_queue_delay_ms: 2, bucket_size: 0}
    runtime: {intra_op_threads: 1}
    warmup: {batch_sizes: [1, 8]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .signature import Signature

__all__ = ["CONFIG_FILE", "BatchingConfig", "ModelConfig", "load_config"]

CONFIG_FILE = "modelport.yaml"


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching hints, in Triton's vocabulary.

    ``max_batch_size`` 0 or 1 turns batching off (each request runs alone).
    """

    max_batch_size: int = 32
    max_queue_delay_ms: float = 1.0
    max_queue_size: int = 1024
    bucket_size: int | None = None
    """For sequence models with batch hooks: sort a batch's rows by length and run them in
    groups of at least this many rows, each padded to its own longest row; 0 runs the batch
    whole. None: the model's own :attr:`~modelport.Model.bucket_size`."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything a model may declare; every field optional."""

    name: str | None = None
    version: str | None = None
    description: str = ""
    framework: str | None = None
    artifact: str | None = None
    model_class: str | None = None
    device: str | None = None
    """Where the model runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (see
    :mod:`modelport.devices`); None: the server's ``--device``, else the CPU."""
    instances: int | None = None
    """Batches run at once, each in its own worker thread on the same loaded model (Triton's
    instance count); None: 1 on the CPU, 2 on a GPU (one batch's preprocessing overlaps the
    other's compute). On the CPU the default threads per call are divided among them."""
    task: str | None = None
    """A Hugging Face model's task (``feature-extraction``, ``text-classification``,
    ``token-classification``, ``image-classification``); None: from the directory."""
    trust: bool = False
    signature: Signature | None = None
    request_signature: Signature | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    batching_set: frozenset[str] = frozenset()
    """The ``batching:`` keys ``modelport.yaml`` gave (the others are defaults)."""
    runtime: Mapping[str, Any] = field(default_factory=dict)
    warmup: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, **overrides: Any) -> ModelConfig:
        """A copy with the non-None ``overrides`` applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _schema() -> Any:
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class _Tensor(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1)
        datatype: Literal[
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "BF16",
            "BYTES",
        ]
        shape: list[int]

    class _Signature(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: list[_Tensor] = []
        outputs: list[_Tensor] = []

    class _Batching(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_batch_size: int = Field(default=32, ge=0)
        max_queue_delay_ms: float = Field(default=1.0, ge=0)
        max_queue_size: int = Field(default=1024, ge=1)
        bucket_size: int | None = Field(default=None, ge=0)

    class _Warmup(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a misspelt key must not be ignored
        enabled: bool = True
        inputs: Any = None
        batch_sizes: list[int] | None = None

    class _Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
        version: str | int | None = None
        description: str = ""
        framework: str | None = None
        artifact: str | None = None
        model_class: str | None = None
        task: str | None = None
        device: str | None = Field(default=None, pattern=r"^(cpu|auto|gpu|cuda)(:\d+)?$")
        instances: int | None = Field(default=None, ge=1, le=64)
        trust: bool = False
        signature: _Signature | None = None
        request_signature: _Signature | None = None
        batching: _Batching = _Batching()
        runtime: dict[str, Any] = {}
        warmup: _Warmup = _Warmup()
        extra: dict[str, Any] = {}

    return _Config


def parse_config(data: Any, source: str = CONFIG_FILE) -> ModelConfig:
    """Validate a mapping (as read from YAML) into a :class:`ModelConfig`."""
    from pydantic import ValidationError

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        parsed = _schema().model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    signature = request_signature = None
    if parsed.signature is not None:
        signature = Signature.from_dict(parsed.signature.model_dump())
    if parsed.request_signature is not None:
        request_signature = Signature.from_dict(parsed.request_signature.model_dump())
    return ModelConfig(
        name=parsed.name,
        version=None if parsed.version is None else str(parsed.version),
        description=parsed.description,
        framework=parsed.framework,
        artifact=parsed.artifact,
        model_class=parsed.model_class,
        task=parsed.task,
        device=parsed.device,
        instances=parsed.instances,
        trust=parsed.trust,
        signature=signature,
        request_signature=request_signature,
        batching=BatchingConfig(**parsed.batching.model_dump()),
        batching_set=frozenset(parsed.batching.model_fields_set),
        runtime=parsed.runtime,
        warmup=parsed.warmup.model_dump(exclude_unset=True),
        extra=parsed.extra,
    )


def load_config(path: Path) -> ModelConfig:
    """Read and validate a ``modelport.yaml`` file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))
