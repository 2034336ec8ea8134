"""A model's declared signature: named, typed, shaped inputs and outputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datatypes import DATATYPES, from_numpy, to_numpy
from .errors import ConfigError, InvalidInputError

__all__ = ["Signature", "TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: V2 datatype and shape, ``-1`` for a variable dimension.

    The first dimension is the batch dimension.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("tensor name must not be empty")
        if self.datatype not in DATATYPES:
            raise ConfigError(
                f"tensor {self.name!r}: unknown datatype {self.datatype!r}; "
                f"expected one of {', '.join(sorted(DATATYPES))}"
            )
        shape = tuple(int(d) for d in self.shape)
        if any(d < -1 for d in shape):
            raise ConfigError(f"tensor {self.name!r}: dimensions must be -1 or >= 0, got {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype that carries this tensor."""
        return to_numpy(self.datatype)

    def to_dict(self) -> dict[str, Any]:
        """The V2 metadata form: ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Build from the V2 metadata form."""
        try:
            return cls(str(data["name"]), str(data["datatype"]), tuple(data["shape"]))
        except KeyError as exc:
            raise ConfigError(f"tensor spec {dict(data)!r} lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tensor spec {dict(data)!r}: {exc}") from None

    def check(self, array: np.ndarray) -> None:
        """Raise :class:`InvalidInputError` if ``array`` does not fit this spec."""
        if self.shape and array.ndim != len(self.shape):
            raise InvalidInputError(
                f"input {self.name!r}: expected {len(self.shape)} dimensions "
                f"(shape {list(self.shape)}), got shape {list(array.shape)}"
            )
        for i, (want, got) in enumerate(zip(self.shape, array.shape)):
            if want != -1 and want != got:
                raise InvalidInputError(
                    f"input {self.name!r}: dimension {i} must be {want}, got shape "
                    f"{list(array.shape)} (expected {list(self.shape)})"
                )
        if self.datatype == "BYTES":
            if array.dtype.kind not in "OSU":
                raise InvalidInputError(
                    f"input {self.name!r}: expected BYTES, got {from_numpy(array.dtype)}"
                )
        elif array.dtype != self.dtype:
            raise InvalidInputError(
                f"input {self.name!r}: expected datatype {self.datatype}, got "
                f"{from_numpy(array.dtype) if array.dtype.kind != 'O' else 'BYTES'}"
            )


def _specs(items: Iterable[TensorSpec | Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    specs = tuple(s if isinstance(s, TensorSpec) else TensorSpec.from_dict(s) for s in items)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"tensor names must be unique, got {names}")
    return specs


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a model, in order."""

    inputs: tuple[TensorSpec, ...] = field(default=())
    outputs: tuple[TensorSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _specs(self.inputs))
        object.__setattr__(self, "outputs", _specs(self.outputs))

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def input(self, name: str) -> TensorSpec | None:
        """The input spec called ``name``, or None."""
        return next((s for s in self.inputs if s.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        """The output spec called ``name``, or None."""
        return next((s for s in self.outputs if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=_specs(data.get("inputs") or ()), outputs=_specs(data.get("outputs") or ())
        )

    def check_input_names(self, inputs: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidInputError` naming every missing and unexpected input.

        A model without declared inputs takes any names.
        """
        if not self.inputs or (
            len(inputs) == len(self.inputs) and all(s.name in inputs for s in self.inputs)
        ):
            return
        missing = [s.name for s in self.inputs if s.name not in inputs]
        unexpected = [str(n) for n in inputs if self.input(n) is None]
        problems = []
        if missing:
            problems.append(f"missing input(s) {missing}")
        if unexpected:
            problems.append(f"unexpected input(s) {unexpected}")
        raise InvalidInputError(f"{' and '.join(problems)}; the model expects {self.input_names}")

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InvalidInputError` unless ``inputs`` fit the declared inputs.

        Missing and unexpected names are errors; so are datatype and shape mismatches, and
        inputs whose batch dimensions disagree.
        """
        if not self.inputs:
            return
        self.check_input_names(inputs)
        batch: int | None = None
        for spec in self.inputs:
            array = inputs[spec.name]
            spec.check(array)
            if array.ndim:
                if batch is None:
                    batch = array.shape[0]
                elif array.shape[0] != batch:
                    raise InvalidInputError(
                        f"inputs disagree on the batch size: {spec.name!r} has "
                        f"{array.shape[0]} rows, earlier inputs {batch}"
                    )

    @staticmethod
    def infer(
        inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray] | None = None
    ) -> Signature:
        """A signature read off example arrays (batch dimension made variable)."""

        def spec(name: str, a: np.ndarray) -> TensorSpec:
            shape = (-1, *a.shape[1:]) if a.ndim else ()
            return TensorSpec(name, from_numpy(a.dtype), shape)

        return Signature(
            inputs=tuple(spec(n, a) for n, a in inputs.items()),
            outputs=tuple(spec(n, a) for n, a in (outputs or {}).items()),
        )
