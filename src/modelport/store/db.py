"""The database behind the prediction log: URL handling, engine, writes and the report's reads.

SQLite (a file) and PostgreSQL (through psycopg 3) are supported. Inserts of calls are
``ON CONFLICT (call_id) DO NOTHING``, their requests only inserted with them, so a batch
replayed after an ambiguous failure is never stored twice.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from .._deps import require
from ..errors import ConfigError
from .rows import CALL_COLUMNS, CALL_WIDTH, LEGACY_COLUMNS, requests_of
from .schema import calls, feedback, migrate, predictions, requests

__all__ = ["Database", "is_disconnect", "normalize_url"]

_REQUESTS_PER_STATEMENT = 300
"""Requests per INSERT into ``modelport_requests``: few statements per batch, and short
enough holds of the GIL."""
_CALLS_PER_STATEMENT = 50
"""Calls per INSERT into ``modelport_calls`` (800 bound fields)."""
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
"""Whether SQLite's INSERT takes ``RETURNING`` (3.35, 2021)."""
_CALLS_PER_PAGE = 500
"""Calls the readers fetch per query."""
_STAGING = "modelport_calls_staging"
"""PostgreSQL: the writer's session-local table that COPY fills before the real insert."""
_ERROR = CALL_COLUMNS.index("error")
_REQUEST_IDS = CALL_COLUMNS.index("request_ids")
_WITHOUT_ERROR = tuple(c for c in CALL_COLUMNS if c != "error")

try:
    from orjson import loads
except ImportError:  # pragma: no cover - orjson is a dependency of the store extra
    loads = json.loads  # type: ignore[assignment]


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
        self._call_statements: dict[tuple[int, bool], str] = {}  # by (calls, with error)
        self._request_statements: dict[int, str] = {}  # by requests
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

    def insert_calls(self, flat: Sequence[Any]) -> None:
        """Insert call rows, given as one flat sequence of fields (:data:`~modelport.store.
        rows.CALL_COLUMNS` in order, row after row), and their requests, in one transaction;
        calls already stored (by call id) are skipped with their requests.

        Meant for one thread (the writer): it keeps one raw DBAPI connection, dropped on error.
        """
        self._in_transaction(self._copy_calls if self.dialect == "postgresql" else
                             self._insert_calls, flat)  # fmt: skip

    def insert_legacy(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows of schema version 1 (:data:`~modelport.store.rows.LEGACY_COLUMNS`, as
        a spool of that version holds them) into ``modelport_predictions``, skipping known
        record ids."""
        columns = ", ".join(LEGACY_COLUMNS)
        marks = ", ".join(self._mark for _ in LEGACY_COLUMNS)
        sql = (
            f"INSERT INTO {predictions.name} ({columns}) VALUES ({marks}) "
            "ON CONFLICT (record_id) DO NOTHING"
        )

        def insert(cursor: Any, _fresh: bool, rows: Sequence[Sequence[Any]]) -> None:
            for row in rows:
                cursor.execute(sql, [bool(v) if c == "inputs_truncated" else v
                                     for c, v in zip(LEGACY_COLUMNS, row)])  # fmt: skip

        self._in_transaction(insert, rows)

    def _in_transaction(self, insert: Callable[[Any, bool, Any], None], rows: Any) -> None:
        self.ensure_schema()
        # Inserts go through the driver's own connection: SQLAlchemy's per-statement and
        # per-row parameter work costs more than the inserts themselves.
        fresh = self._raw is None
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        conn = self._raw
        try:
            cursor = conn.cursor()
            insert(cursor, fresh, rows)
            cursor.close()
            conn.commit()
        except BaseException:
            self._raw = None
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise

    def _insert_calls(self, cursor: Any, _fresh: bool, flat: Sequence[Any]) -> None:
        """SQLite: multi-row INSERTs of calls ``RETURNING`` the rowids of those not already
        stored (what their requests point at), then the requests, a few hundred a statement;
        before SQLite 3.35 (no ``RETURNING``), one INSERT per call and its ``lastrowid``."""
        width = CALL_WIDTH
        keys: list[Any] = []
        step = (_CALLS_PER_STATEMENT if _RETURNING else 1) * width
        for start in range(0, len(flat), step):
            chunk = flat[start : start + step]
            if type(chunk) is not list:
                chunk = list(chunk)
            rows = len(chunk) // width
            # sqlite3 binds str, int and float at once but looks None up among its adapters
            # (about 0.4 µs each): without a failed call, leave the error column out.
            failed = rows - chunk[_ERROR::width].count(None)
            if not failed:
                del chunk[_ERROR::width]
            cursor.execute(self._calls_sql(rows, bool(failed)), chunk)
            if _RETURNING:
                stored = cursor.fetchall()
            elif cursor.rowcount == 1:  # 0: a replay of a call already stored
                stored = [(cursor.lastrowid, chunk[_REQUEST_IDS])]
            else:
                stored = []
            for call, ids in stored:
                for pos, request_id in enumerate(loads(ids)):
                    keys += (request_id, call, pos)
        step = _REQUESTS_PER_STATEMENT * 3
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            cursor.execute(self._requests_sql(len(chunk) // 3), chunk)

    def _copy_calls(self, cursor: Any, fresh: bool, flat: Sequence[Any]) -> None:
        """PostgreSQL: ``COPY`` into a session's staging table, then one statement moves the
        new calls (COPY itself cannot skip known call ids) and unpacks their request ids."""
        columns = ", ".join(CALL_COLUMNS)
        if fresh:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
                f"SELECT {columns} FROM {calls.name} WITH NO DATA"
            )
        with cursor.copy(f"COPY {_STAGING} ({columns}) FROM STDIN") as copy:
            for start in range(0, len(flat), CALL_WIDTH):
                copy.write_row(flat[start : start + CALL_WIDTH])
        cursor.execute(
            f"WITH new AS (INSERT INTO {calls.name} ({columns}) SELECT {columns} FROM {_STAGING} "
            "ON CONFLICT (call_id) DO NOTHING RETURNING id, request_ids) "
            f"INSERT INTO {requests.name} (request_id, call, pos) "
            "SELECT r.value, new.id, r.pos - 1 FROM new CROSS JOIN LATERAL "
            "json_array_elements_text(new.request_ids::json) WITH ORDINALITY AS r(value, pos) "
            "ON CONFLICT DO NOTHING"
        )

    def _calls_sql(self, rows: int, with_error: bool) -> str:
        sql = self._call_statements.get((rows, with_error))
        if sql is None:
            columns = CALL_COLUMNS if with_error else _WITHOUT_ERROR
            marks = f"({', '.join(self._mark for _ in columns)})"
            sql = (
                f"INSERT INTO {calls.name} ({', '.join(columns)}) VALUES "
                f"{', '.join([marks] * rows)} ON CONFLICT (call_id) DO NOTHING"
            )
            if _RETURNING:
                sql += " RETURNING id, request_ids"
            if rows in (1, _CALLS_PER_STATEMENT):  # the common sizes; others are one-offs
                self._call_statements[rows, with_error] = sql
        return sql

    def _requests_sql(self, rows: int) -> str:
        sql = self._request_statements.get(rows)
        if sql is None:
            marks = f"({self._mark}, {self._mark}, {self._mark})"
            sql = (
                f"INSERT INTO {requests.name} (request_id, call, pos) VALUES "
                f"{', '.join([marks] * rows)} ON CONFLICT DO NOTHING"
            )
            if rows == _REQUESTS_PER_STATEMENT:  # the common size; others are one-offs
                self._request_statements[rows] = sql
        return sql

    def models_for_request(self, request_id: str) -> list[str]:
        """Distinct models that logged a prediction with ``request_id``."""
        return self.models_for_requests([request_id]).get(request_id, [])

    def models_for_requests(self, request_ids: Sequence[str]) -> dict[str, list[str]]:
        """:meth:`models_for_request` for many ids at once (ids logged by none are absent)."""
        self.ensure_schema()
        c, r, p = calls, requests, predictions
        found: dict[str, set[str]] = {}
        unique = list(dict.fromkeys(request_ids))
        with self.engine.connect() as conn:
            for k in range(0, len(unique), 500):  # well under every driver's parameter limit
                chunk = unique[k : k + 500]
                query = sa.union(
                    sa.select(r.c.request_id, c.c.model)
                    .join(c, r.c.call == c.c.id)
                    .where(r.c.request_id.in_(chunk)),
                    sa.select(p.c.request_id, p.c.model).where(p.c.request_id.in_(chunk)),
                )
                for request_id, model in conn.execute(query):
                    found.setdefault(request_id, set()).add(model)
        return {k: sorted(v) for k, v in found.items()}

    def upsert_feedback(self, model: str, request_id: str, value: Any) -> None:
        """Store ground truth for ``(model, request_id)``, replacing any earlier value."""
        self.upsert_feedback_many([(model, request_id, value)])

    def upsert_feedback_many(self, rows: Sequence[tuple[str, str, Any]]) -> None:
        """Store ``(model, request_id, value)`` rows in one transaction, replacing earlier
        values."""
        self.ensure_schema()
        stmt = self._insert(feedback)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model", "request_id"],
            set_={"value": stmt.excluded.value, "ts": stmt.excluded.ts},
        )
        now = time.time()
        params = [
            {"model": m, "request_id": rid, "value": json.dumps(v), "ts": now}
            for m, rid, v in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(stmt, params)

    def prediction_rows(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Predictions of ``model`` in ``[since, until)`` by time, one per request, each with
        its feedback (``feedback``: the decoded value or None) and ``metadata`` (a dict)."""
        self.ensure_schema()
        yield from heapq.merge(
            self._legacy_rows(model, since, until),
            self._call_rows(model, since, until),
            key=itemgetter("ts"),
        )

    def _call_rows(
        self, model: str, since: float | None, until: float | None
    ) -> Iterator[dict[str, Any]]:
        c = calls
        query = sa.select(
            c.c.id, c.c.version, c.c.ts, c.c.request_ids, c.c.rows, c.c.inputs,
            c.c.inputs_truncated, c.c.outputs, c.c.latency_ms, c.c.status, c.c.metadata,
        ).where(c.c.model == model)  # fmt: skip
        if since is not None:
            query = query.where(c.c.ts >= since)
        if until is not None:
            query = query.where(c.c.ts < until)
        query = query.order_by(c.c.ts, c.c.id).limit(_CALLS_PER_PAGE)
        after: tuple[float, int] | None = None
        while True:  # page by (ts, id): no cursor or connection held while the caller works
            page = query if after is None else query.where(sa.tuple_(c.c.ts, c.c.id) > after)
            with self.engine.connect() as conn:
                found = conn.execute(page).mappings().all()
                items = [item for row in found for item in requests_of(row)]
                values = self._feedback_of(conn, model, {i["request_id"] for i in items})
            for item in items:
                raw = values.get(item["request_id"])
                item["feedback"] = None if raw is None else json.loads(raw)
                yield item
            if len(found) < _CALLS_PER_PAGE:
                return
            after = (found[-1]["ts"], found[-1]["id"])

    @staticmethod
    def _feedback_of(conn: sa.Connection, model: str, ids: set[str]) -> dict[str, str]:
        f = feedback
        found: dict[str, str] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), 500):
            query = sa.select(f.c.request_id, f.c.value).where(
                f.c.model == model, f.c.request_id.in_(wanted[start : start + 500])
            )
            found.update((k, v) for k, v in conn.execute(query))
        return found

    def _legacy_rows(
        self, model: str, since: float | None, until: float | None
    ) -> Iterator[dict[str, Any]]:
        """Requests logged by schema version 1 (one row each in ``modelport_predictions``)."""
        p, f = predictions, feedback
        with self.engine.connect() as conn:
            if conn.execute(sa.select(p.c.id).where(p.c.model == model).limit(1)).first() is None:
                return  # the common case: nothing from before version 2
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
        """Number of logged predictions (of ``model``, or all): requests, not calls."""
        self.ensure_schema()
        in_calls = sa.select(sa.func.coalesce(sa.func.sum(calls.c.requests), 0))
        legacy = sa.select(sa.func.count()).select_from(predictions)
        if model is not None:
            in_calls = in_calls.where(calls.c.model == model)
            legacy = legacy.where(predictions.c.model == model)
        with self.engine.connect() as conn:
            return int(conn.execute(in_calls).scalar_one()) + int(
                conn.execute(legacy).scalar_one()
            )

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
