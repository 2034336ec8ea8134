"""scikit-learn runtime: ``.skops`` files (safe by default) and, only when trusted, pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..datatypes import from_numpy
from ..errors import CorruptArtifactError, InvalidInputError, UntrustedArtifactError
from ..model import Inputs, Model, as_input_dict, maybe_single
from ..signature import Signature, TensorSpec

__all__ = ["SklearnModel"]

PICKLE_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle"})


class SklearnModel(Model):
    """A fitted scikit-learn estimator or pipeline.

    ``.skops`` files load with :func:`skops.io.load`; types skops does not trust by default
    are refused unless the model is trusted (``trust=True``). ``.joblib``/``.pkl`` files are
    pickles and load only when trusted.

    Input ``input``: FP64 ``[-1, n_features_in_]`` (an estimator fitted on a DataFrame gets its
    columns back by name). Classifiers output ``label`` and, when they have ``predict_proba``,
    ``probabilities`` ``[-1, n_classes]``; other estimators output ``predictions``.
    After loading, ``estimator`` is the native fitted estimator and ``feature_names`` its
    ``feature_names_in_`` (or None).
    """

    framework: ClassVar[str] = "sklearn"
    format_description: ClassVar[str] = (
        "a scikit-learn model (.skops, or .joblib/.pkl with trust=True)"
    )

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.estimator: Any = None
        self.feature_names: list[str] | None = None
        self._n_features: int | None = None
        self._classifier = False
        self._proba = False

    def load(self) -> None:
        assert self.path is not None, "SklearnModel needs an artifact path"
        if self.path.suffix.lower() in PICKLE_SUFFIXES:
            estimator = self._load_pickle(self.path)
        else:
            estimator = self._load_skops(self.path)
        if not callable(getattr(estimator, "predict", None)):
            raise CorruptArtifactError(
                f"{self.path}: holds a {type(estimator).__name__}, not an estimator with predict()"
            )
        self.estimator = estimator
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        n = getattr(estimator, "n_features_in_", None)
        self._n_features = int(n) if n is not None else None
        classes = getattr(estimator, "classes_", None)
        self._classifier = classes is not None and _estimator_type(estimator) == "classifier"
        # A multi-output classifier's predict_proba is a list per target: labels only.
        self._proba = (
            self._classifier
            and not isinstance(classes, list)
            and callable(getattr(estimator, "predict_proba", None))
        )
        if self.signature is None:
            self.signature = self._signature(classes)

    @property
    def _trusted(self) -> bool:
        return bool(self.config.trust or self.options.get("trust"))

    def _load_skops(self, path: Path) -> Any:
        sio = require("skops.io", extra="sklearn")
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:
            raise CorruptArtifactError(
                f"{path}: not a readable .skops file (truncated or corrupt?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if untrusted and not self._trusted:
            raise UntrustedArtifactError(_untrusted_message(path, untrusted))
        try:
            return sio.load(path, trusted=untrusted)
        except Exception as exc:
            raise CorruptArtifactError(
                f"{path}: could not be loaded as {self.format_description}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _load_pickle(self, path: Path) -> Any:
        if not self._trusted:
            raise UntrustedArtifactError(
                f"{path}: {path.suffix} files are Python pickles, and loading a pickle runs "
                "arbitrary code from the file. Load it only if you trust its source: "
                "modelport.load(path, trust=True), --trust on the command line, or "
                "'trust: true' in modelport.yaml. Safer: save the model with skops (.skops)"
            )
        joblib = require("joblib", extra="sklearn")
        try:
            return joblib.load(path)
        except Exception as exc:
            raise CorruptArtifactError(
                f"{path}: could not be unpickled (truncated or corrupt?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _signature(self, classes: Any) -> Signature:
        inputs = (TensorSpec("input", "FP64", (-1, self._n_features or -1)),)
        if not self._classifier:
            return Signature(inputs, (self._predictions_spec(),))
        if isinstance(classes, list):  # multi-output classifier: one label per target
            first = np.asarray(classes[0])
            label = TensorSpec("label", _datatype(first), (-1, len(classes)))
            return Signature(inputs, (label,))
        classes = np.asarray(classes)
        outputs = [TensorSpec("label", _datatype(classes), (-1,))]
        if self._proba:
            outputs.append(TensorSpec("probabilities", "FP64", (-1, len(classes))))
        return Signature(inputs, tuple(outputs))

    def _predictions_spec(self) -> TensorSpec:
        # Targets, dtype (e.g. a clusterer's int labels): only known by asking the estimator.
        if self._n_features:
            try:
                zeros = self._frame(np.zeros((1, self._n_features)))
                probe = np.asarray(self.estimator.predict(zeros))
                return TensorSpec("predictions", _datatype(probe), (-1, *probe.shape[1:]))
            except Exception:  # a probe that fails leaves the shape open
                pass
        return TensorSpec("predictions", "FP64", (-1,))

    def predict(self, inputs: Inputs) -> Any:
        feed, single = as_input_dict(self, inputs)
        if len(feed) != 1:
            raise InvalidInputError(
                f"model {self.name!r} takes one input ('input', [rows, features]), "
                f"got {sorted(feed)}"
            )
        x = np.asarray(next(iter(feed.values())))
        if x.ndim != 2:
            raise InvalidInputError(
                f"input 'input': expected a 2-D array [rows, features], got shape {list(x.shape)}"
            )
        if self._n_features is not None and x.shape[1] != self._n_features:
            raise InvalidInputError(
                f"input 'input': the model expects {self._n_features} features, "
                f"got shape {list(x.shape)}"
            )
        data = self._frame(x)
        if not self._classifier:
            return maybe_single({"predictions": np.asarray(self.estimator.predict(data))}, single)
        out = {"label": np.asarray(self.estimator.predict(data))}
        if self._proba:
            out["probabilities"] = np.asarray(self.estimator.predict_proba(data))
        return maybe_single(out, single)

    def _frame(self, x: np.ndarray) -> Any:
        # An estimator fitted on a DataFrame selects (and checks) its columns by name.
        if self.feature_names is None:
            return x
        pd = require("pandas", extra="io")
        return pd.DataFrame(x, columns=self.feature_names, copy=False)


_NODE_INDEX_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
"""Tree storage whose node indices scikit-learn follows without bounds checks."""


def _untrusted_message(path: Path, untrusted: list[str]) -> str:
    """Why a ``.skops`` file is refused: its untrusted types, why, and how to allow them."""
    trees = [t for t in untrusted if t in _NODE_INDEX_TYPES]
    others = [t for t in untrusted if t not in _NODE_INDEX_TYPES]
    why = []
    if trees:
        why.append(
            f"{', '.join(trees)} {'holds' if len(trees) == 1 else 'hold'} the nodes of tree "
            "models (decision trees, random forests, extra trees, gradient boosting), whose "
            "indices scikit-learn follows without bounds checks, so a crafted file can crash "
            "the process or read memory out of bounds when the model predicts"
        )
    if others:
        why.append(
            f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} built from the file's "
            "contents by code skops does not vouch for"
        )
    return (
        f"{path}: holds types that skops does not trust by default: {', '.join(untrusted)}. "
        f"{'; '.join(why)}. If you made the file or trust its source, allow them: "
        "modelport.load(path, trust=True), --trust on the command line, or 'trust: true' "
        "in modelport.yaml"
    )


def _estimator_type(estimator: Any) -> str | None:
    """``"classifier"``, ``"regressor"``, or None, as scikit-learn itself tells them apart."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return "classifier"
    return "regressor" if is_regressor(estimator) else None


def _datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype.kind in "OSU" else from_numpy(array.dtype)
