"""A custom model with real preprocessing: text in, hashed character n-grams to a scikit-learn
classifier, a label and a score out.

``build.py`` trains the classifier and saves ``model.skops`` beside this file; modelport puts
its scikit-learn runtime under :class:`Sentiment`. Callers send text (``text`` BYTES) and get
``label`` and ``score`` at every door, V2 and gRPC included: the featurizing and the scoring
are the contract's batch hooks, run on the rows of many requests at once. The per-payload
hooks only give plain JSON its friendly forms.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import modelport
from modelport.model import as_texts

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

    request_signature = modelport.Signature(
        inputs=[modelport.TensorSpec("text", "BYTES", (-1,))],
        outputs=[
            modelport.TensorSpec("label", "BYTES", (-1,)),
            modelport.TensorSpec("score", "FP64", (-1,)),
        ],
    )

    def preprocess(self, payload: Any) -> dict[str, list[str]]:
        if isinstance(payload, Mapping):
            if "text" not in payload:
                raise modelport.InvalidInputError(
                    f"expected a 'text' field, got the keys {sorted(payload)}"
                )
            payload = payload["text"]
        texts = [payload] if isinstance(payload, str) else payload
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise modelport.InvalidInputError("expected a text or a list of texts")
        return {"text": texts}

    def preprocess_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"input": featurize(as_texts(inputs["text"]))}

    def postprocess_batch(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        return {
            "label": outputs["label"].astype(object),
            "score": outputs["probabilities"].max(axis=1).astype(np.float64),
        }

    def postprocess(self, outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        return [
            {"label": str(label), "score": round(float(score), 4)}
            for label, score in zip(outputs["label"], outputs["score"])
        ]
