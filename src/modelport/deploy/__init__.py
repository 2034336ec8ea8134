"""Deployment bundles: a Docker image, Kubernetes, KServe and AWS Lambda.

``build(model, target, out)`` writes everything a target needs into ``out``; the CLI's
``modelport build`` is a thin wrapper over it. Renderers are plain functions returning text
or manifests as dicts: ``docker``, ``kubernetes``, ``kserve``, ``sam``.
"""

from __future__ import annotations

from .bundle import Bundle, build
from .options import TARGETS, DeployOptions, Target

__all__ = ["TARGETS", "Bundle", "DeployOptions", "Target", "build"]
