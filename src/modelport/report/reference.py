"""Read a reference data set (what the model was trained or validated on) for drift.

Features are named as the report names them: ``x`` for a one-value-per-row tensor, ``x[j]``
for column ``j`` of a 2-D tensor. Formats:

- ``.npz``: one array per input or output tensor, rows along the first axis;
- ``.npy``: one array, taken as the model's only input (``input_name``);
- ``.csv``: a header row of feature names (``x[0]``, ``y``…), numeric rows below; or, with
  ``input_name``, any header and the columns taken in order as ``input_name[j]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["load_reference", "reference_names"]


def load_reference(path: str | Path, input_name: str | None = None) -> dict[str, np.ndarray]:
    """Feature name → reference values (1-D float arrays)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reference data set {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _features({name: archive[name] for name in archive.files})
        if suffix == ".npy":
            if input_name is None:
                raise ConfigError(
                    f"{path.name}: a .npy reference needs the input's name (--reference-input)"
                )
            return _features({input_name: np.load(path, allow_pickle=False)})
        if suffix == ".csv":
            return _csv(path, input_name)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read reference data set {path}: {exc}") from exc
    raise ConfigError(f"reference data set {path.name}: use a .npz, .npy or .csv file")


def reference_names(path: str | Path, input_name: str | None = None) -> dict[str, str]:
    """Features' own names from a ``.csv`` reference taken as ``input_name`` (its header:
    ``sepal_length,…`` names ``input[0]``, …); empty for other files."""
    path = Path(path)
    if input_name is None or path.suffix.lower() != ".csv":
        return {}
    with path.open(encoding="utf-8") as f:
        header = [h.strip() for h in f.readline().strip().split(",")]
    if len(header) == 1:
        return {input_name: header[0]} if header[0] else {}
    return {f"{input_name}[{j}]": name for j, name in enumerate(header) if name}


def _features(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            continue
        rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
        if rows.shape[1] == 1:
            out[name] = rows[:, 0].astype(np.float64)
        else:
            for j in range(rows.shape[1]):
                out[f"{name}[{j}]"] = rows[:, j].astype(np.float64)
    if not out:
        raise ConfigError("the reference data set holds no numeric arrays")
    return out


def _csv(path: Path, input_name: str | None) -> dict[str, np.ndarray]:
    with path.open(encoding="utf-8") as f:
        header = [h.strip() for h in f.readline().strip().split(",")]
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if data.shape[1] != len(header):
        raise ConfigError(
            f"{path.name}: header has {len(header)} columns, rows have {data.shape[1]}"
        )
    if input_name is not None:
        return _features({input_name: data})
    return {name: data[:, j] for j, name in enumerate(header)}
