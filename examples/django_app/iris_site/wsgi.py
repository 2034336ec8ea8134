"""The WSGI application (``gunicorn iris_site.wsgi``), with the model loaded at start-up."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iris_site.settings")
application = get_wsgi_application()

from .prediction import get_model  # noqa: E402  (needs the settings configured above)

get_model()  # load now: the first request should not wait for it
