"""The prediction log: every request (or a sample) and its feedback, in SQLite or PostgreSQL.

``PredictionLog.open(url)`` starts a background writer (a child process by default);
``record()`` never blocks the request path; ``feedback()`` joins ground truth to a logged
request. SQLAlchemy is imported only when a log is opened (``pip install "modelport[store]"``).
"""

from __future__ import annotations

from .log import LogStats, PredictionLog
from .records import PredictionRecord

__all__ = ["LogStats", "PredictionLog", "PredictionRecord"]
