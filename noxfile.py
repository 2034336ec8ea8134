"""Test environments for heavy, conflicting extras (TensorFlow, Beam, Spark, Flink, Ray, Dask).

Each session installs its engine into its own virtual environment beside modelport and runs
the tests marked for it. ``scripts/test`` runs them all after the main suite.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
BASE = ["pytest>=8", "pytest-timeout>=2.3"]
