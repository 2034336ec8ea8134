"""The iris demo's ``model.py``: friendly JSON in, species names out.

The ONNX graph (input ``input`` FP32 [-1, 4]; outputs ``label`` and ``probabilities``) runs
underneath; this class only adds the request and answer shapes a person would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import modelport

SPECIES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class Iris(modelport.Model):
    """Accepts ``{"sepal_length": 5.1, ...}``, a list of such rows, ``[5.1, 3.5, 1.4, 0.2]``,
    a list of such lists, or ``{"input": [[...], ...]}``; answers one
    ``{"species", "probabilities"}`` per row."""

    labels = SPECIES  # feedback may name the species

    def preprocess(self, payload: Any) -> dict[str, np.ndarray]:
        if isinstance(payload, Mapping) and "input" in payload:
            payload = payload["input"]
        rows = payload if isinstance(payload, list) else [payload]
        if rows and not isinstance(rows[0], (list, tuple, Mapping)):
            rows = [rows]  # one flower as four numbers
        matrix = [self._row(r, i) for i, r in enumerate(rows)]
        return {"input": np.asarray(matrix, dtype=np.float32).reshape(-1, len(FEATURES))}

    @staticmethod
    def _row(row: Any, index: int) -> list[float]:
        if isinstance(row, Mapping):
            missing = [f for f in FEATURES if f not in row]
            if missing:
                raise modelport.InvalidInputError(
                    f"row {index}: missing {missing}; expected the keys {FEATURES}"
                )
            row = [row[f] for f in FEATURES]
        if len(row) != len(FEATURES):
            raise modelport.InvalidInputError(
                f"row {index}: expected {len(FEATURES)} numbers {FEATURES}, got {len(row)}"
            )
        try:
            return [float(v) for v in row]
        except (TypeError, ValueError):
            raise modelport.InvalidInputError(
                f"row {index}: expected numbers, got {row!r}"
            ) from None

    def postprocess(self, outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        return [
            {
                "species": SPECIES[int(label)],
                "probabilities": {s: round(float(p), 6) for s, p in zip(SPECIES, probs)},
            }
            for label, probs in zip(outputs["label"], outputs["probabilities"])
        ]
