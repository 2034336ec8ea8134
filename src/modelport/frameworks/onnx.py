"""ONNX runtime: onnxruntime ``InferenceSession``; the signature is read from the graph."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import threads_option
from ..devices import onnx_providers
from ..model import Inputs, Model, as_input_dict, maybe_single
from ..signature import Signature, TensorSpec

__all__ = ["OnnxModel"]

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        from ..errors import UnknownFormatError

        raise UnknownFormatError(
            f"ONNX tensor {arg.name!r} has type {arg.type}, which modelport cannot carry "
            "(non-tensor outputs such as ZipMap: convert with zipmap=False)"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


log = logging.getLogger("modelport.runtime")


class OnnxModel(Model):
    """An ``.onnx`` file run by onnxruntime.

    Options: ``intra_op_threads``, ``inter_op_threads`` (0 lets onnxruntime choose),
    ``providers`` (default: from ``device``), ``graph_optimization_level`` (``all``,
    ``extended``, ``basic``, ``disabled``); on a GPU ``gpu_memory_limit``, ``tensorrt`` and
    ``tensorrt_cache`` (see :func:`modelport.devices.onnx_providers`).
    """

    framework: ClassVar[str] = "onnx"
    format_description: ClassVar[str] = "an ONNX model (.onnx)"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.session: Any = None
        self._output_names: list[str] = []
        self._wants_str: set[str] = set()

    def load(self) -> None:
        ort = require("onnxruntime", extra="onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads_option(self.options)
        so.inter_op_num_threads = int(self.options.get("inter_op_threads", 0))
        level = str(self.options.get("graph_optimization_level", "all")).lower()
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[level]
        so.log_severity_level = 3
        providers = onnx_providers(self.options, ort, self.name)
        self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        running = self.session.get_providers()
        if running != ["CPUExecutionProvider"] or self.options.get("device"):
            log.info(
                "onnxruntime providers",
                extra={
                    "model": self.name,
                    "providers": running,
                    "device": self.options.get("device"),
                },
            )
        graph = Signature(
            inputs=tuple(_spec(a) for a in self.session.get_inputs()),
            outputs=tuple(_spec(a) for a in self.session.get_outputs()),
        )
        if self.signature is None:
            self.signature = graph
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._wants_str = {s.name for s in graph.inputs if s.datatype == "BYTES"}

    @property
    def on_gpu(self) -> bool:
        providers = self.session.get_providers() if self.session is not None else []
        return bool(providers) and providers[0] != "CPUExecutionProvider"

    def predict(self, inputs: Inputs) -> Any:
        feed, single = as_input_dict(self, inputs)
        for name in self._wants_str.intersection(feed):
            feed[name] = _to_str(feed[name])
        results = self.session.run(self._output_names, feed)
        return maybe_single(dict(zip(self._output_names, results)), single)


def _to_str(array: np.ndarray) -> np.ndarray:
    # onnxruntime takes string tensors as str objects; the protocol carries bytes.
    if array.dtype.kind == "O":
        decoded: np.ndarray = np.vectorize(
            lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), otypes=[object]
        )(array)
        return decoded
    converted: np.ndarray = array.astype(str).astype(object)
    return converted
