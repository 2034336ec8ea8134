"""Transport-neutral V2 inference messages.

Front doors (REST, gRPC, Lambda) decode their wire format into these and encode these back;
the data plane behind them only ever sees these. Tensor data is always a numpy array here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InferenceRequest", "InferenceResponse", "RequestedOutput"]


@dataclass
class RequestedOutput:
    """An output the caller asked for, with its per-output parameters
    (e.g. ``binary_data``)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceRequest:
    """A decoded V2 infer request: named input arrays plus protocol fields."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    """None means all outputs."""
    input_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class InferenceResponse:
    """A V2 infer response: named output arrays plus protocol fields."""

    model_name: str
    model_version: str | None
    outputs: dict[str, np.ndarray]
    id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    output_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    """Declared V2 datatype of an output where its numpy dtype does not tell (BF16)."""
