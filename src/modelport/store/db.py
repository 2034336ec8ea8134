"""The database behind the prediction log: URL handling, engine, writes and the report's reads.

SQLite (a file) and PostgreSQL (through psycopg 3) are supported. Inserts of predictions are
``ON CONFLICT (record_id) DO NOTHING``, so a batch replayed after an ambiguous failure is
never stored twice.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from .._deps import require
from ..errors import ConfigError
from .rows import ROW_COLUMNS, ROW_WIDTH
from .schema import feedback, migrate, predictions

__all__ = ["Database", "is_disconnect", "normalize_url"]

_ROWS_PER_STATEMENT = 100
"""Rows per INSERT: few statements per batch, and short enough holds of the GIL."""
_STAGING = "modelport_predictions_staging"
"""PostgreSQL: the writer's session-local table that COPY fills before the real insert."""
_ERROR = ROW_COLUMNS.index("error")
_WITHOUT_ERROR = tuple(c for c in ROW_COLUMNS if c != "error")


def normalize_url(url: str | Path) -> str:
    """A SQLAlchemy URL for ``url``: a file path or ``sqlite:///…`` → SQLite, ``postgresql://…``
    (or ``postgres://``) → PostgreSQL through psycopg 3."""
    text = str(url)
    if "://" not in text:
        if not text.strip():
            raise ConfigError("log database URL is empty")
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        require("psycopg", "store")
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        return text
    raise ConfigError(
        f"unsupported log database URL scheme {scheme!r}: use a file path, sqlite:///PATH "
        "or postgresql://USER@HOST:PORT/DB"
    )


def is_disconnect(exc: BaseException) -> bool:
    """True if ``exc`` means the database is unreachable (as opposed to a bad row).

    Takes SQLAlchemy's errors and the drivers' own (the writer inserts through the raw DBAPI
    connection): SQLite's and psycopg's ``OperationalError`` and ``InterfaceError``.
    """
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError
    )


class Database:
    """An engine on the log database, migrated on first successful use."""

    def __init__(self, url: str | Path) -> None:
        self.url = normalize_url(url)
        parsed = sa.make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                folder = Path(parsed.database).parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create the log's folder {folder}: {exc}") from exc
            self.engine = sa.create_engine(
                self.url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(
                self.url, pool_pre_ping=True, pool_size=4, connect_args={"connect_timeout": 5}
            )
        self.migrated = False
        self._mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._statements: dict[tuple[int, bool], str] = {}
        self._raw: Any = None  # the writer's DBAPI connection, kept between batches

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def ensure_schema(self) -> None:
        """Create or upgrade the tables once per process."""
        if not self.migrated:
            migrate(self.engine)
            self.migrated = True

    def insert_predictions(self, flat: Sequence[Any]) -> None:
        """Insert rows, given as one flat sequence of fields (:data:`~modelport.store.rows.
        ROW_COLUMNS` in order, row after row), in one transaction, skipping known record ids.

        Meant for one thread (the writer): it keeps one raw DBAPI connection, dropped on error.
        """
        self.ensure_schema()
        # One multi-row INSERT per chunk on the driver's connection: SQLAlchemy's per-statement
        # and per-row parameter work costs more than the insert, and a driver's executemany
        # releases and retakes the GIL once per row, stalling the event loop in this process.
        fresh = self._raw is None
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        conn = self._raw
        try:
            cursor = conn.cursor()
            if self.dialect == "postgresql":
                self._copy(cursor, flat, fresh)
            else:
                step = _ROWS_PER_STATEMENT * ROW_WIDTH
                for start in range(0, len(flat), step):
                    chunk = flat[start : start + step]
                    if type(chunk) is not list:
                        chunk = list(chunk)
                    rows = len(chunk) // ROW_WIDTH
                    # sqlite3 binds str, int and float at once but looks None up among its
                    # adapters (about 0.4 µs each): without a failed request, leave the error
                    # column out and let it default to NULL.
                    failed = rows - chunk[_ERROR::ROW_WIDTH].count(None)
                    if not failed:
                        del chunk[_ERROR::ROW_WIDTH]
                    cursor.execute(self._insert_sql(rows, with_error=bool(failed)), chunk)
            cursor.close()
            conn.commit()
        except BaseException:
            self._raw = None
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise

    def _copy(self, cursor: Any, flat: Sequence[Any], fresh: bool) -> None:
        """PostgreSQL: ``COPY`` into a session's staging table, then one ``INSERT … SELECT …
        ON CONFLICT DO NOTHING`` (COPY itself cannot skip known record ids)."""
        columns = ", ".join(ROW_COLUMNS)
        if fresh:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
                f"SELECT {columns} FROM {predictions.name} WITH NO DATA"
            )
        with cursor.copy(f"COPY {_STAGING} ({columns}) FROM STDIN") as copy:
            for start in range(0, len(flat), ROW_WIDTH):
                copy.write_row(flat[start : start + ROW_WIDTH])
        cursor.execute(
            f"INSERT INTO {predictions.name} ({columns}) SELECT {columns} FROM {_STAGING} "
            "ON CONFLICT (record_id) DO NOTHING"
        )

    def _insert_sql(self, rows: int, with_error: bool = True) -> str:
        sql = self._statements.get((rows, with_error))
        if sql is None:
            columns = ROW_COLUMNS if with_error else _WITHOUT_ERROR
            marks = f"({', '.join(self._mark for _ in columns)})"
            sql = (
                f"INSERT INTO {predictions.name} ({', '.join(columns)}) VALUES "
                f"{', '.join([marks] * rows)} ON CONFLICT (record_id) DO NOTHING"
            )
            if rows in (1, _ROWS_PER_STATEMENT):  # the common sizes; others are one-offs
                self._statements[rows, with_error] = sql
        return sql

    def models_for_request(self, request_id: str) -> list[str]:
        """Distinct models that logged a prediction with ``request_id``."""
        self.ensure_schema()
        query = sa.select(predictions.c.model).where(predictions.c.request_id == request_id)
        with self.engine.connect() as conn:
            return sorted(set(conn.execute(query.distinct()).scalars()))

    def upsert_feedback(self, model: str, request_id: str, value: Any) -> None:
        """Store ground truth for ``(model, request_id)``, replacing any earlier value."""
        self.ensure_schema()
        stmt = self._insert(feedback).values(
            model=model, request_id=request_id, value=json.dumps(value), ts=time.time()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["model", "request_id"],
            set_={"value": stmt.excluded.value, "ts": stmt.excluded.ts},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def prediction_rows(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Predictions of ``model`` in ``[since, until)`` by time, each with its feedback
        (``feedback``: the decoded value or None) and ``metadata`` (a decoded dict)."""
        self.ensure_schema()
        p, f = predictions, feedback
        join = p.outerjoin(f, sa.and_(f.c.model == p.c.model, f.c.request_id == p.c.request_id))
        query = (
            sa.select(
                p.c.request_id,
                p.c.version,
                p.c.ts,
                p.c.inputs,
                p.c.inputs_truncated,
                p.c.outputs,
                p.c.latency_ms,
                p.c.status,
                p.c.metadata,
                f.c.value.label("feedback"),
            )
            .select_from(join)
            .where(p.c.model == model)
            .order_by(p.c.ts)
        )
        if since is not None:
            query = query.where(p.c.ts >= since)
        if until is not None:
            query = query.where(p.c.ts < until)
        with self.engine.connect() as conn:
            for row in conn.execute(query.execution_options(yield_per=2000)).mappings():
                item = dict(row)
                raw = item["feedback"]
                item["feedback"] = None if raw is None else json.loads(raw)
                meta = item["metadata"]
                item["metadata"] = json.loads(meta) if meta and meta != "{}" else {}
                yield item

    def count(self, model: str | None = None) -> int:
        """Number of logged predictions (of ``model``, or all)."""
        self.ensure_schema()
        query = sa.select(sa.func.count()).select_from(predictions)
        if model is not None:
            query = query.where(predictions.c.model == model)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def dispose(self) -> None:
        """Close every pooled connection."""
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None
        self.engine.dispose()

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the report read while the writer writes; NORMAL is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 32 MiB of page cache (default 2 MiB): the indexes' hot pages stay in memory between
    # batches instead of being read back for every insert.
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.close()
