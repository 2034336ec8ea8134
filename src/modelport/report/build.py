"""Turn logged predictions (and their feedback) into a :class:`Report`.

Traffic, errors and latency come from every row but shadow answers (which only feed the
candidate-vs-primary comparisons, :mod:`.compare`); accuracy (classification) or MAE/RMSE
(regression) from rows with feedback; drift from numeric input and output features of rows
whose inputs were stored whole, against a reference data set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .compare import (
    Comparison,
    Pair,
    Tally,
    VersionFigures,
    compare,
    percentiles,
    resolve_task,
    scores,
)
from .stats import ks_2samp, psi, verdict

__all__ = ["Drift", "Report", "Window", "build_report", "features_of"]

Task = Literal["auto", "classification", "regression"]
MAX_FEATURES_PER_TENSOR = 64
"""Tensors with more values per row (images, embeddings) are left out of drift."""
NICE_WINDOWS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


@dataclass
class Window:
    """Figures for one time window ``[start, end)`` (seconds since the epoch)."""

    start: float
    end: float
    requests: int = 0
    errors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    """``p50``, ``p90``, ``p99``; empty when the window had no requests."""
    feedback: int = 0
    """Rows (not requests) with ground truth."""
    metric: float | None = None
    """Accuracy, or MAE for regression, over the window's feedback rows."""
    psi: dict[str, float] = field(default_factory=dict)


@dataclass
class Drift:
    """One feature's drift against the reference: PSI and KS over the whole report period."""

    feature: str
    kind: Literal["input", "output"]
    psi: float
    ks: float
    ks_pvalue: float
    n_reference: int
    n_current: int
    reference: np.ndarray = field(repr=False)
    current: np.ndarray = field(repr=False)
    name: str = ""
    """The feature's own name where it is known (``sepal_length`` for ``input[0]``)."""

    @property
    def label(self) -> str:
        """``name (feature)`` where the name is known, else ``feature``."""
        return f"{self.name} ({self.feature})" if self.name else self.feature

    @property
    def verdict(self) -> str:
        """``stable``, ``moderate`` or ``drifted``, from the PSI."""
        return verdict(self.psi)


@dataclass
class Report:
    """Everything ``modelport report`` shows, for one model."""

    model: str
    start: float
    end: float
    window_s: float
    windows: list[Window]
    requests: int
    errors: int
    error_kinds: dict[str, int]
    latency_ms: dict[str, float]
    versions: dict[str, int]
    task: Literal["classification", "regression"] | None
    feedback_rows: int
    feedback_unmatched: int
    accuracy: float | None = None
    mae: float | None = None
    rmse: float | None = None
    drift: list[Drift] = field(default_factory=list)
    truncated_inputs: int = 0
    """Requests whose inputs were too large to store whole, so not in the drift figures."""
    by_version: dict[str, VersionFigures] = field(default_factory=dict)
    """Traffic figures of each version that answered (a canary among them)."""
    comparisons: list[Comparison] = field(default_factory=list)
    """Each shadow candidate against the primary it mirrored."""
    shadow_rows: int = 0
    """Shadow answers in the period: not counted as traffic anywhere else."""


def features_of(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Numeric per-row features of ``{name: {"shape", "datatype", "data"}}`` tensors:
    ``name`` for one value per row, ``name[j]`` for column ``j``; floats keep their logged
    dtype, the rest are float64."""
    features: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if "data" not in tensor or np.dtype(tensor["datatype"]).kind not in "biuf":
            continue
        shape = tensor["shape"] or [1]
        if 0 in shape:
            continue
        # Parsed in the logged dtype: a float32 stored as its shortest decimal ("5.1") reads
        # back as that exact float32, which is what a float32 reference holds.
        dtype = np.dtype(tensor["datatype"])
        rows = np.asarray(tensor["data"], dtype=dtype if dtype.kind == "f" else np.float64)
        rows = rows.reshape(shape[0], -1)
        if rows.shape[1] == 1:
            features[name] = rows[:, 0]
        elif rows.shape[1] <= MAX_FEATURES_PER_TENSOR:
            for j in range(rows.shape[1]):
                features[f"{name}[{j}]"] = rows[:, j]
    return features


def build_report(
    model: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    reference: Mapping[str, np.ndarray] | None = None,
    window_s: float | None = None,
    output: str | None = None,
    task: Task = "auto",
    psi_bins: int = 10,
    feature_names: Mapping[str, str] | None = None,
) -> Report:
    """Compute the report from :meth:`PredictionLog.predictions` rows (sorted by time).

    ``feature_names`` gives features their own names (``{"input[0]": "sepal_length"}``).

    Shadow answers (``metadata["shadow"]``) are not traffic: they only feed
    :attr:`Report.comparisons`.
    """
    ts: list[float] = []
    latency: list[float] = []
    status: list[str] = []
    tallies: dict[str, Tally] = {}
    inputs: dict[str, list[np.ndarray]] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    feature_ts: list[np.ndarray] = []
    pairs: list[Pair] = []
    pair_ts: list[float] = []
    by_request: dict[tuple[str, str], tuple[float, bool, list[Pair]]] = {}
    shadows: list[tuple[str, str, str, float, bool, bool | None, list[Pair]]] = []
    truncated = unmatched = 0
    for row in rows:
        outs = json.loads(row["outputs"]) if row["outputs"] else {}
        meta = row.get("metadata") or {}
        shadow = meta.get("shadow") is True
        matched: list[Pair] = []
        if row["feedback"] is not None and outs:
            found = _pair(outs, output, row["feedback"])
            if found is not None:
                matched = [(p, y, found[2]) for p, y in zip(found[0], found[1])]
            elif not shadow:  # counted once, on the traffic row
                unmatched += 1
        t, lat, ok = float(row["ts"]), float(row["latency_ms"]), row["status"] == "ok"
        if shadow:
            primary = str(meta.get("primary_version", ""))
            agrees = meta.get("agrees")
            shadows.append((row["request_id"], row["version"], primary, lat, ok, agrees, matched))
            continue
        ts.append(t)
        latency.append(lat)
        status.append(str(row["status"]))
        tallies.setdefault(row["version"], Tally()).add(lat, ok, matched)
        by_request[(row["request_id"], row["version"])] = (lat, ok, matched)
        pairs.extend(matched)
        pair_ts.extend([t] * len(matched))
        if row["inputs_truncated"]:
            truncated += 1
        else:
            feats = features_of(json.loads(row["inputs"]))
            n = _extend(inputs, feats)
            _extend(outputs, features_of(outs), n)
            feature_ts.append(np.full(n, t))
    resolved = resolve_task(pairs + [p for s in shadows for p in s[6]], task)
    comparisons = compare(shadows, by_request, resolved)
    if not ts:
        now = float(np.floor(_now()))
        empty = Report(model, now, now, window_s or 3600, [], 0, 0, {}, {}, {}, None, 0, 0)
        empty.comparisons = comparisons
        empty.shadow_rows = len(shadows)
        return empty
    start, end = ts[0], ts[-1]
    window = float(window_s) if window_s else _nice_window(end - start)
    edges = np.arange(math.floor(start / window) * window, end + window, window)
    t_arr, lat_arr, ok_arr = np.asarray(ts), np.asarray(latency), np.asarray(status) == "ok"
    index = np.searchsorted(edges, t_arr, side="right") - 1
    windows = [Window(float(a), float(a + window)) for a in edges[:-1]]
    for k, w in enumerate(windows):
        sel = index == k
        w.requests = int(sel.sum())
        w.errors = int((~ok_arr[sel]).sum())
        w.latency_ms = percentiles(lat_arr[sel])
    report = Report(
        model=model,
        start=start,
        end=end,
        window_s=window,
        windows=windows,
        requests=len(ts),
        errors=int((~ok_arr).sum()),
        error_kinds=_counts(s for s in status if s != "ok"),
        latency_ms=percentiles(lat_arr),
        versions={v: len(tally.latency) for v, tally in tallies.items()},
        task=None,
        feedback_rows=len(pairs),
        feedback_unmatched=unmatched,
        truncated_inputs=truncated,
        by_version={v: tallies[v].figures(v, resolved) for v in sorted(tallies)},
        comparisons=comparisons,
        shadow_rows=len(shadows),
    )
    _quality(report, pairs, np.asarray(pair_ts), resolved, edges)
    if reference:
        all_ts = np.concatenate(feature_ts) if feature_ts else np.zeros(0)
        _drift(report, reference, inputs, outputs, all_ts, edges, psi_bins)
        for d in report.drift:
            d.name = (feature_names or {}).get(d.feature, "")
    return report


def _extend(
    into: dict[str, list[np.ndarray]], feats: dict[str, np.ndarray], n: int | None = None
) -> int:
    rows = n if n is not None else max((v.size for v in feats.values()), default=0)
    for name, values in feats.items():
        if values.size == rows:
            into.setdefault(name, []).append(values)
    return rows


def _pair(outs: dict[str, Any], output: str | None, truth: Any) -> tuple[Any, Any, str] | None:
    """Per-row (prediction values, ground truths, output dtype kind), or None on a mismatch."""
    name = output if output is not None else next(iter(outs))
    tensor = outs.get(name)
    if tensor is None or "data" not in tensor:
        return None
    kind = np.dtype(tensor["datatype"]).kind
    shape = tensor["shape"] or [1]
    data = np.asarray(tensor["data"], dtype=object if kind in "SUO" else np.float64)
    rows = data.reshape(shape[0], -1) if len(shape) > 1 else data.reshape(-1, 1)
    truths = truth if isinstance(truth, list) else [truth]
    if len(truths) != rows.shape[0]:
        return None
    if kind not in "SUO" and any(isinstance(v, str) for v in truths):
        return None  # a class name against class indices: unmatched, never scored as wrong
    return list(rows), truths, ("vector" if rows.shape[1] > 1 else kind)


def _quality(
    report: Report,
    pairs: list[Pair],
    t: np.ndarray,
    task: Literal["classification", "regression"] | None,
    edges: np.ndarray,
) -> None:
    score = scores(pairs, task) if pairs else None
    if score is None:
        return
    report.task = task
    if task == "classification":
        report.accuracy = float(score.mean())
    else:
        report.mae = float(score.mean())
        report.rmse = float(np.sqrt(np.mean(score**2)))
    index = np.searchsorted(edges, t, side="right") - 1
    for k, w in enumerate(report.windows):
        sel = index == k
        w.feedback = int(sel.sum())
        w.metric = float(score[sel].mean()) if w.feedback else None


def _drift(
    report: Report,
    reference: Mapping[str, np.ndarray],
    inputs: dict[str, list[np.ndarray]],
    outputs: dict[str, list[np.ndarray]],
    ts: np.ndarray,
    edges: np.ndarray,
    bins: int,
) -> None:
    index = np.searchsorted(edges, ts, side="right") - 1
    kinds: tuple[tuple[Literal["input", "output"], dict[str, list[np.ndarray]]], ...] = (
        ("input", inputs),
        ("output", outputs),
    )
    for kind, source in kinds:
        for feature, chunks in source.items():
            ref = reference.get(feature)
            if ref is None:
                continue
            cur = np.concatenate(chunks)
            # Compare at the served precision: a float64 reference of float32 inputs is rounded
            # as the model saw it, or values on a bin edge land on different sides.
            ref = np.asarray(ref)
            if cur.dtype.itemsize < 8 and cur.dtype.kind == "f":
                ref = ref.astype(cur.dtype)
            ref, cur = ref.astype(np.float64), cur.astype(np.float64)
            d, p = ks_2samp(ref, cur)
            report.drift.append(
                Drift(feature, kind, psi(ref, cur, bins), d, p, ref.size, cur.size, ref, cur)
            )
            if cur.size == index.size:
                for k, w in enumerate(report.windows):
                    sel = cur[index == k]
                    if sel.size:
                        w.psi[feature] = psi(ref, sel, bins)
    report.drift.sort(key=lambda d: -d.psi if not math.isnan(d.psi) else 0.0)


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _nice_window(span: float) -> float:
    """The smallest round window giving at most ~24 windows over ``span`` seconds."""
    for w in NICE_WINDOWS:
        if span / w <= 24:
            return float(w)
    return float(NICE_WINDOWS[-1])


def _now() -> float:
    import time

    return time.time()
