"""A custom model with real preprocessing: text in, hashed character n-grams to a scikit-learn
classifier, a label and a score out.

``build.py`` trains the classifier and saves ``model.skops`` beside this file; modelport puts
its scikit-learn runtime under :class:`Sentiment`, which only turns text into the runtime's
``input`` tensor and its outputs into answers.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import modelport

DIMENSIONS = 2**11
NGRAMS = (2, 3, 4)
_SPACES = re.compile(r"\s+")


def featurize(texts: Sequence[str]) -> np.ndarray:
    """Hashed, L2-normalised counts of character n-grams: ``[len(texts), DIMENSIONS]``.

    ``zlib.crc32`` rather than ``hash()``: Python salts ``hash`` per process, and training and
    serving must agree on every bucket.
    """
    features = np.zeros((len(texts), DIMENSIONS), dtype=np.float64)
    for row, text in enumerate(texts):
        padded = " " + _SPACES.sub(" ", text.lower()).strip() + " "
        for n in NGRAMS:
            for i in range(len(padded) - n + 1):
                features[row, zlib.crc32(padded[i : i + n].encode()) % DIMENSIONS] += 1.0
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    normalised: np.ndarray = features / np.maximum(norms, 1e-12)
    return normalised


class Sentiment(modelport.Model):
    """Takes ``"some text"``, a list of texts, or ``{"text": ...}``; answers
    ``{"label": "positive" | "negative", "score": probability of that label}`` per text."""

    def preprocess(self, payload: Any) -> dict[str, np.ndarray]:
        if isinstance(payload, Mapping):
            if "text" not in payload:
                raise modelport.InvalidInputError(
                    f"expected a 'text' field, got the keys {sorted(payload)}"
                )
            payload = payload["text"]
        texts = [payload] if isinstance(payload, str) else payload
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise modelport.InvalidInputError("expected a text or a list of texts")
        return {"input": featurize(texts)}

    def postprocess(self, outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        return [
            {"label": str(label), "score": round(float(probs.max()), 4)}
            for label, probs in zip(outputs["label"], outputs["probabilities"])
        ]
