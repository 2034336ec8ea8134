"""LightGBM runtime: a ``Booster`` saved as a model text file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import threads_option
from ..datatypes import from_numpy
from ..errors import CorruptArtifactError
from ..model import Inputs, Model, as_input_dict, maybe_single
from ..signature import Signature, TensorSpec
from .xgboost import _one_matrix

__all__ = ["LightGBMModel"]

_IMPORTANCES = re.compile(rb"^end of trees\s*(feature_importances:\n([^\n=]+=\d+\n)*)?\s*$")


class LightGBMModel(Model):
    """A LightGBM ``Booster`` model text file (as written by ``Booster.save_model``).

    Input ``input``: FP64 ``[-1, num_feature]``. Output ``predictions``: what
    ``Booster.predict`` returns (``[-1]``, or ``[-1, classes]`` for multiclass objectives).
    Options: ``num_threads`` (default: the process's CPU budget).
    After loading, ``booster`` is the native ``lightgbm.Booster``.
    """

    framework: ClassVar[str] = "lightgbm"
    format_description: ClassVar[str] = "a LightGBM model text file"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.booster: Any = None
        self.feature_names: list[str] | None = None
        self._n_features = 0
        self._predict_options: dict[str, Any] = {}

    def load(self) -> None:
        assert self.path is not None, "LightGBMModel needs an artifact path"
        lgb = require("lightgbm", extra="lightgbm")
        data = self.path.read_bytes()
        problem = _incomplete(data)
        if problem:
            raise CorruptArtifactError(
                f"{self.path}: not a complete LightGBM model text file ({problem}); "
                "was it truncated?"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptArtifactError(f"{self.path}: not UTF-8 text: {exc}") from None
        self.booster = lgb.Booster(model_str=text)
        self._predict_options["num_threads"] = threads_option(self.options, "num_threads")
        self._n_features = int(self.booster.num_feature())
        self.feature_names = [str(n) for n in self.booster.feature_name()]
        if self.signature is None:
            probe = np.asarray(self.booster.predict(np.zeros((1, self._n_features))))
            self.signature = Signature(
                (TensorSpec("input", "FP64", (-1, self._n_features)),),
                (TensorSpec("predictions", from_numpy(probe.dtype), (-1, *probe.shape[1:])),),
            )

    def predict(self, inputs: Inputs) -> Any:
        feed, single = as_input_dict(self, inputs)
        x = _one_matrix(feed, self._n_features)
        result = self.booster.predict(x, **self._predict_options)
        return maybe_single({"predictions": np.asarray(result)}, single)


def _incomplete(data: bytes) -> str | None:
    """Why ``data`` is not a whole model file, or None.

    LightGBM's parser aborts the process (not an exception) on some truncated files, so the
    structure is checked first: the header's ``tree_sizes`` must lead exactly to
    ``end of trees``, and what follows must be whole sections.
    """
    if not data.startswith((b"tree\n", b"tree\r\n")):
        return "it does not start with 'tree'"
    data = data.replace(b"\r\n", b"\n")
    end_of_header = data.find(b"\n\n")
    if end_of_header < 0:
        return "the header never ends"
    header = dict(
        line.split(b"=", 1) for line in data[:end_of_header].splitlines()[1:] if b"=" in line
    )
    if b"max_feature_idx" not in header:
        return "the header lacks max_feature_idx"
    if b"tree_sizes" in header:
        try:
            sizes = [int(s) for s in header[b"tree_sizes"].split()]
        except ValueError:
            return "its tree_sizes are not numbers"
        rest = data[end_of_header + 2 + sum(sizes) :]
        if not rest.startswith(b"end of trees"):
            return "its trees stop short of what the header announces"
    else:
        marker = data.find(b"end of trees")
        if marker < 0:
            return "'end of trees' is missing"
        rest = data[marker:]
    if b"\nparameters:" in rest:
        if b"\nend of parameters" not in rest:
            return "its parameters section is cut short"
    elif not _IMPORTANCES.match(rest):
        return "what follows the trees is cut short"
    return None
