"""How a model does in production, from its prediction log: traffic, latency, errors,
accuracy from feedback, and drift against a reference data set (PSI, Kolmogorov-Smirnov); per
version, and each shadow candidate against its primary (:class:`Comparison`).

Render with :func:`print_report` (terminal), :func:`write_html` (plots embedded) or
:func:`report_registry` (Prometheus gauges). Needs ``pip install "modelport[store]"``.
"""

from __future__ import annotations

from .build import Drift, Report, Window, build_report
from .compare import Comparison, VersionFigures
from .html import render_html, write_html
from .prometheus import report_registry, write_textfile
from .reference import load_reference, reference_names
from .terminal import print_report

__all__ = [
    "Comparison",
    "Drift",
    "Report",
    "VersionFigures",
    "Window",
    "build_report",
    "load_reference",
    "print_report",
    "reference_names",
    "render_html",
    "report_registry",
    "write_html",
    "write_textfile",
]
