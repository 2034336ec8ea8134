"""XGBoost runtime: a ``Booster`` saved as ``.json`` or ``.ubj``, run with ``inplace_predict``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import threads_option
from ..datatypes import from_numpy
from ..errors import CorruptArtifactError, InvalidInputError
from ..model import Inputs, Model, as_input_dict, maybe_single
from ..signature import Signature, TensorSpec

__all__ = ["XGBoostModel"]

# "[13:38:12] /path/to/json.cc:409: Expecting ..." -> "Expecting ..."
_LOG_PREFIX = re.compile(r"^\[[\d:]+\] [^:]+:\d+: ")


class XGBoostModel(Model):
    """An XGBoost ``Booster`` (``.json``/``.ubj``, as written by ``save_model``).

    Input ``input``: FP32 ``[-1, num_features]``. Output ``predictions``: what
    ``Booster.inplace_predict`` returns (``[-1]``, or ``[-1, classes]`` for ``multi:softprob``).
    Options: ``nthread`` (threads per prediction; default: the process's CPU budget).
    After loading, ``booster`` is the native ``xgboost.Booster``.
    """

    framework: ClassVar[str] = "xgboost"
    format_description: ClassVar[str] = "an XGBoost model (.json or .ubj)"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.booster: Any = None
        self.feature_names: list[str] | None = None
        self._n_features = 0

    def load(self) -> None:
        assert self.path is not None, "XGBoostModel needs an artifact path"
        xgb = require("xgboost", extra="xgboost")
        booster = xgb.Booster()
        try:
            booster.load_model(str(self.path))
        except xgb.core.XGBoostError as exc:
            detail = _LOG_PREFIX.sub("", str(exc).strip().splitlines()[0]).rstrip(" :")
            raise CorruptArtifactError(
                f"{self.path}: could not be loaded as {self.format_description} "
                f"(truncated or corrupt?): {detail}"
            ) from None
        booster.set_param({"nthread": threads_option(self.options, "nthread")})
        self.booster = booster
        self._n_features = int(booster.num_features())
        names = booster.feature_names
        self.feature_names = [str(n) for n in names] if names else None
        if self.signature is None:
            probe = np.asarray(booster.inplace_predict(np.zeros((1, self._n_features), np.float32)))
            self.signature = Signature(
                (TensorSpec("input", "FP32", (-1, self._n_features)),),
                (TensorSpec("predictions", from_numpy(probe.dtype), (-1, *probe.shape[1:])),),
            )

    def predict(self, inputs: Inputs) -> Any:
        feed, single = as_input_dict(self, inputs)
        x = _one_matrix(feed, self._n_features)
        # Column names were checked by the caller (or are positional): skip XGBoost's own check.
        result = self.booster.inplace_predict(x, validate_features=False)
        return maybe_single({"predictions": np.asarray(result)}, single)


def _one_matrix(feed: dict[str, np.ndarray], n_features: int) -> np.ndarray:
    """The single ``[rows, n_features]`` matrix a booster takes, or a clear error."""
    if len(feed) != 1:
        raise InvalidInputError(
            f"the model takes one input ('input', [rows, {n_features}]), got {sorted(feed)}"
        )
    x = np.asarray(next(iter(feed.values())))
    if x.ndim != 2 or x.shape[1] != n_features:
        raise InvalidInputError(
            f"input 'input': expected shape [rows, {n_features}], got {list(x.shape)}"
        )
    if x.dtype.kind not in "fiub":
        raise InvalidInputError(f"input 'input': expected numbers, got dtype {x.dtype}")
    return x
