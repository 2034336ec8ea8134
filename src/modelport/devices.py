"""Where a model runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``, for every runtime.

One option, read the same way everywhere: ``modelport.load(path, device="cuda")``, ``device:``
in ``modelport.yaml``, ``--device`` on ``serve`` and ``predict``. ``cuda`` that is not there is
an error naming what was found (a CPU build of torch, onnxruntime without its CUDA provider,
no GPU visible), never a silent CPU run; only ``auto`` falls back to the CPU, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, DeviceUnavailableError

__all__ = [
    "GPU_INSTANCES",
    "GPU_MAX_BATCH_SIZE",
    "Device",
    "onnx_providers",
    "parse_device",
    "tensorflow_device",
    "thread_stream",
    "torch_device",
]

log = logging.getLogger("modelport.runtime")

GPU_MAX_BATCH_SIZE = 128
"""``max_batch_size`` on a GPU when nobody set one and the model cannot be timed at start (on
the CPU: 32); a GPU's cost per call barely grows with the batch."""
GPU_INSTANCES = 2
"""Batches in flight at once on a GPU when ``instances`` is not set (on the CPU: 1): one
batch's preprocessing and copies overlap the other's compute."""

_PATTERN = re.compile(r"^(cpu|auto|cuda|gpu)(?::(\d+))?$")
_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Device:
    """A parsed device: ``kind`` is ``cpu``, ``cuda`` or ``auto``; ``index`` the GPU's."""

    kind: str
    index: int = 0

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind


def parse_device(value: Any) -> Device:
    """``cpu`` (also None), ``cuda``/``gpu``, ``cuda:N``, or ``auto`` (a GPU when there is one)."""
    if value is None or value == "":
        return Device("cpu")
    if isinstance(value, Device):
        return value
    match = _PATTERN.match(str(value).strip().lower())
    if match is None:
        raise ConfigError(f"device {value!r}: expected cpu, cuda, cuda:N or auto")
    kind, index = match.group(1), match.group(2)
    if kind == "gpu":
        kind = "cuda"
    if index is not None and kind != "cuda":
        raise ConfigError(f"device {value!r}: only cuda takes an index (cuda:N)")
    return Device(kind, int(index or 0))


def byte_size(value: Any, what: str) -> int:
    """``4294967296``, ``"4GiB"``, ``"512MB"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _BYTES.match(str(value).strip())
    if match is None:
        raise ConfigError(f"{what} {value!r}: expected a number of bytes such as 4GiB")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    return int(float(match.group(1)) * scale)


def onnx_providers(options: dict[str, Any], ort: Any, model: str) -> list[Any]:
    """onnxruntime's execution providers for the ``device`` in ``options``.

    ``cuda``: the CUDA provider (``device_id``, ``gpu_mem_limit`` from ``gpu_memory_limit``),
    after TensorRT's when ``tensorrt: true`` (engines cached in ``tensorrt_cache``), then the
    CPU for the operators the GPU providers lack. Explicit ``providers`` win over all of it.
    """
    if options.get("providers"):
        return list(options["providers"])
    device = parse_device(options.get("device"))
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    available = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        found = (
            f"onnxruntime {ort.__version__} offers {available}: install onnxruntime-gpu "
            "(in place of onnxruntime) with a CUDA runtime it supports"
        )
        if device.kind == "auto":
            log.info("no GPU for onnxruntime; running on the CPU", extra={"model": model})
            return ["CPUExecutionProvider"]
        raise DeviceUnavailableError(f"model {model!r} asks for device {device}, but {found}")
    index = device.index
    cuda: dict[str, Any] = {"device_id": index}
    if options.get("gpu_memory_limit") is not None:
        cuda["gpu_mem_limit"] = byte_size(options["gpu_memory_limit"], "gpu_memory_limit")
    providers: list[Any] = []
    if options.get("tensorrt"):
        if "TensorrtExecutionProvider" not in available:
            raise DeviceUnavailableError(
                f"model {model!r} asks for TensorRT, but onnxruntime offers {available}"
            )
        trt: dict[str, Any] = {"device_id": index}
        if options.get("tensorrt_cache"):
            trt.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=str(options["tensorrt_cache"])
            )
        if options.get("dtype") in ("float16", "fp16"):
            trt["trt_fp16_enable"] = True
        providers.append(("TensorrtExecutionProvider", trt))
    providers += [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    return providers


def torch_device(options: dict[str, Any], torch: Any, model: str) -> Any:
    """The ``torch.device`` for the ``device`` in ``options``; an error when CUDA is asked
    for and this torch cannot reach a GPU (a CPU build, no driver, no such index)."""
    device = parse_device(options.get("device"))
    if device.kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.version.cuda
        found = (
            f"torch {torch.__version__} is a CPU build (no CUDA)"
            if build is None
            else f"torch {torch.__version__} (CUDA {build}) sees no GPU: no driver, or "
            "CUDA_VISIBLE_DEVICES hides them"
        )
        if device.kind == "auto":
            log.info("no GPU for torch; running on the CPU", extra={"model": model})
            return torch.device("cpu")
        raise DeviceUnavailableError(f"model {model!r} asks for device {device}, but {found}")
    count = torch.cuda.device_count()
    if device.index >= count:
        raise DeviceUnavailableError(
            f"model {model!r} asks for device {device}, but torch sees {count} GPU(s)"
        )
    return torch.device("cuda", device.index)


def tensorflow_device(options: dict[str, Any], tf: Any, model: str) -> str:
    """TensorFlow's device name (``/CPU:0``, ``/GPU:N``) for the ``device`` in ``options``.

    On a GPU, memory growth is turned on first (TensorFlow otherwise takes all of every GPU's
    memory at start, leaving none to a second model or process).
    """
    device = parse_device(options.get("device"))
    if device.kind == "cpu":
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        built = bool(tf.test.is_built_with_cuda())
        found = (
            f"TensorFlow {tf.__version__} sees no GPU"
            + ("" if built else " (it is built without CUDA: install tensorflow[and-cuda])")
        )
        if device.kind == "auto":
            log.info("no GPU for TensorFlow; running on the CPU", extra={"model": model})
            return "/CPU:0"
        raise DeviceUnavailableError(f"model {model!r} asks for device {device}, but {found}")
    if device.index >= len(gpus):
        raise DeviceUnavailableError(
            f"model {model!r} asks for device {device}, but TensorFlow sees {len(gpus)} GPU(s)"
        )
    for gpu in gpus:
        # RuntimeError: the GPUs are initialised already (an earlier model did it).
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return f"/GPU:{device.index}"


_streams = threading.local()


@contextlib.contextmanager
def thread_stream(torch: Any, device: Any) -> Iterator[None]:
    """Run what follows on this thread's own CUDA stream of ``device`` (nothing on the CPU):
    with ``instances`` above 1, each worker thread's copies and kernels then overlap the
    others' instead of queueing on the default stream. Copies back to the host inside it
    (``.cpu()``) wait for that stream only."""
    if getattr(device, "type", "cpu") != "cuda":
        yield
        return
    streams: dict[Any, Any] = _streams.__dict__.setdefault("by_device", {})
    stream = streams.get(device)
    if stream is None:
        stream = streams[device] = torch.cuda.Stream(device=device)
    with torch.cuda.stream(stream):
        yield
