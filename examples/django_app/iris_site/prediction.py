"""The model, loaded once per process and shared by every request (and thread) after that.

``get_model()`` loads it on first use; ``iris_site.wsgi`` calls it at start-up, so a server
(``runserver``, gunicorn, uWSGI) pays the load before its first request, not during it.
Management commands that never serve (``migrate``, ``check``) never load it.
"""

from __future__ import annotations

import threading

from django.conf import settings

import modelport

_lock = threading.Lock()
_model: modelport.Model | None = None


def get_model() -> modelport.Model:
    """The process's model: loaded by the first caller, the same object for every other."""
    global _model
    if _model is None:
        with _lock:  # runserver and threaded servers answer requests in several threads
            if _model is None:
                _model = modelport.load(settings.MODELPORT_MODEL)
    return _model
