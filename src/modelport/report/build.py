"""Turn logged predictions (and their feedback) into a :class:`Report`.

Traffic, errors and latency come from every row; accuracy (classification) or MAE/RMSE
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

from .stats import ks_2samp, psi

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


def features_of(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Numeric per-row features of ``{name: {"shape", "datatype", "data"}}`` tensors:
    ``name`` for one value per row, ``name[j]`` for column ``j``."""
    features: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if "data" not in tensor or np.dtype(tensor["datatype"]).kind not in "biuf":
            continue
        shape = tensor["shape"] or [1]
        if 0 in shape:
            continue
        rows = np.asarray(tensor["data"], dtype=np.float64).reshape(shape[0], -1)
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
) -> Report:
    """Compute the report from :meth:`PredictionLog.predictions` rows (sorted by time)."""
    ts: list[float] = []
    latency: list[float] = []
    status: list[str] = []
    versions: dict[str, int] = {}
    inputs: dict[str, list[np.ndarray]] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    feature_ts: list[np.ndarray] = []
    pairs: list[tuple[float, Any, Any, str]] = []  # (time, prediction row, truth, dtype kind)
    truncated = unmatched = 0
    for row in rows:
        t = float(row["ts"])
        ts.append(t)
        latency.append(float(row["latency_ms"]))
        status.append(str(row["status"]))
        versions[row["version"]] = versions.get(row["version"], 0) + 1
        outs = json.loads(row["outputs"]) if row["outputs"] else {}
        if row["inputs_truncated"]:
            truncated += 1
        else:
            feats = features_of(json.loads(row["inputs"]))
            n = _extend(inputs, feats)
            _extend(outputs, features_of(outs), n)
            feature_ts.append(np.full(n, t))
        if row["feedback"] is not None and outs:
            matched = _pair(outs, output, row["feedback"])
            if matched is None:
                unmatched += 1
            else:
                pairs.extend((t, p, y, matched[2]) for p, y in zip(matched[0], matched[1]))
    if not ts:
        now = float(np.floor(_now()))
        return Report(model, now, now, window_s or 3600, [], 0, 0, {}, {}, {}, None, 0, 0)
    start, end = ts[0], ts[-1]
    window = float(window_s) if window_s else _nice_window(end - start)
    edges = np.arange(math.floor(start / window) * window, end + window, window)
    t_arr, lat_arr, ok = np.asarray(ts), np.asarray(latency), np.asarray(status) == "ok"
    index = np.searchsorted(edges, t_arr, side="right") - 1
    windows = [Window(float(a), float(a + window)) for a in edges[:-1]]
    for k, w in enumerate(windows):
        sel = index == k
        w.requests = int(sel.sum())
        w.errors = int((~ok[sel]).sum())
        w.latency_ms = _percentiles(lat_arr[sel])
    report = Report(
        model=model,
        start=start,
        end=end,
        window_s=window,
        windows=windows,
        requests=len(ts),
        errors=int((~ok).sum()),
        error_kinds=_counts(s for s in status if s != "ok"),
        latency_ms=_percentiles(lat_arr),
        versions=versions,
        task=None,
        feedback_rows=len(pairs),
        feedback_unmatched=unmatched,
        truncated_inputs=truncated,
    )
    _quality(report, pairs, task, edges)
    if reference:
        all_ts = np.concatenate(feature_ts) if feature_ts else np.zeros(0)
        _drift(report, reference, inputs, outputs, all_ts, edges, psi_bins)
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
    return list(rows), truths, ("vector" if rows.shape[1] > 1 else kind)


def _quality(report: Report, pairs: list[Any], task: Task, edges: np.ndarray) -> None:
    if not pairs:
        return
    kinds = {p[3] for p in pairs}
    is_label = any(isinstance(p[2], str | bool) for p in pairs)
    if task == "auto":
        classify = is_label or bool(kinds & {"vector", "i", "u", "b", "S", "U", "O"})
        task = "classification" if classify else "regression"
    report.task = task
    t = np.asarray([p[0] for p in pairs])
    if task == "classification":
        score = np.asarray([_correct(p[1], p[2]) for p in pairs], dtype=np.float64)
        report.accuracy = float(score.mean())
    else:
        try:
            pred = np.asarray([float(np.asarray(p[1], dtype=np.float64)[0]) for p in pairs])
            truth = np.asarray([float(p[2]) for p in pairs])
        except (TypeError, ValueError):
            report.task = None
            return
        score = np.abs(pred - truth)
        report.mae = float(score.mean())
        report.rmse = float(np.sqrt(np.mean(score**2)))
    index = np.searchsorted(edges, t, side="right") - 1
    for k, w in enumerate(report.windows):
        sel = index == k
        w.feedback = int(sel.sum())
        w.metric = float(score[sel].mean()) if w.feedback else None


def _correct(prediction: np.ndarray, truth: Any) -> bool:
    predicted: Any = int(np.argmax(prediction)) if prediction.size > 1 else prediction[0]
    if isinstance(predicted, float) and predicted.is_integer():
        predicted = int(predicted)
    if isinstance(truth, bool) or isinstance(predicted, bool):
        return bool(predicted) == bool(truth)
    if isinstance(truth, str) or isinstance(predicted, str):
        return str(predicted) == str(truth)
    return bool(predicted == truth)


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
            ref = np.asarray(ref, dtype=np.float64)
            cur = np.concatenate(chunks)
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


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


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
