"""Settings of the example: no database, no templates, only what a JSON API needs.

``MODELPORT_MODEL`` (a model file or directory) picks the model; the demo iris by default.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

MODELPORT_MODEL = os.environ.get("MODELPORT_MODEL", str(ROOT / "demo" / "iris"))
"""The model this site serves, loaded once per process (``iris_site.prediction``)."""

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-set-DJANGO_SECRET_KEY")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "iris_site.urls"
WSGI_APPLICATION = "iris_site.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # request bodies up to 1 MiB
