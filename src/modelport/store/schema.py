"""Tables of the prediction log and the migrations that create and evolve them.

Version 2 stores one row per model call in ``modelport_calls`` (the requests it answered
packed into it, their tensors stacked as the model saw them) and one narrow row per request
in ``modelport_requests`` (request id → call and position), which is what feedback and the
report's join look up: a tenth of the index entries and bound fields that a row per request
costs. Version 1's ``modelport_predictions`` (a row per request) is kept and still read.

The schema version lives in ``modelport_schema``; :func:`migrate` applies, in order and in one
transaction, every migration above it. On PostgreSQL an advisory lock keeps two
processes from migrating at once.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

__all__ = [
    "SCHEMA_VERSION",
    "calls",
    "feedback",
    "metadata",
    "migrate",
    "predictions",
    "requests",
    "schema_version",
]

metadata = sa.MetaData()

schema_version = sa.Table(
    "modelport_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: the rowid itself

predictions = sa.Table(  # version 1: one row per request; written only by spool replays now
    "modelport_predictions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("record_id", sa.String(32), nullable=False, unique=True),
    sa.Column("request_id", sa.String(256), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("ts", sa.Float(53), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("inputs_sha256", sa.String(64), nullable=False),
    sa.Column("inputs_bytes", sa.Integer, nullable=False),
    sa.Column("inputs_truncated", sa.Boolean, nullable=False),
    sa.Column("outputs", sa.Text),
    sa.Column("latency_ms", sa.Float(53), nullable=False),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Index("ix_modelport_predictions_model_ts", "model", "ts"),
    sa.Index("ix_modelport_predictions_request_id", "request_id"),
)

calls = sa.Table(
    "modelport_calls",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("call_id", sa.String(32), nullable=False, unique=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("ts", sa.Float(53), nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("request_ids", sa.Text, nullable=False),
    sa.Column("rows", sa.Text, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("inputs_sha256", sa.String(64), nullable=False),
    sa.Column("inputs_bytes", sa.BigInteger, nullable=False),
    sa.Column("inputs_truncated", sa.Boolean, nullable=False),
    sa.Column("outputs", sa.Text),
    sa.Column("latency_ms", sa.Text, nullable=False),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Index("ix_modelport_calls_model_ts", "model", "ts"),
)

requests = sa.Table(
    "modelport_requests",
    metadata,
    sa.Column("request_id", sa.String(256), primary_key=True),
    sa.Column("call", _ID, primary_key=True),
    sa.Column("pos", sa.Integer, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,  # the key is the row: one b-tree, not a table and an index
)

feedback = sa.Table(
    "modelport_feedback",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("request_id", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("ts", sa.Float(53), nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    predictions.create(conn)
    feedback.create(conn)


def _v2(conn: sa.Connection) -> None:
    calls.create(conn)
    requests.create(conn)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2]
"""Migration ``k`` (1-based) takes the schema from version ``k - 1`` to ``k``; append only."""
SCHEMA_VERSION = len(MIGRATIONS)

_LOCK_KEY = 0x6D6F64656C706F  # "modelpo": one advisory lock id for all modelport migrations


def current_version(conn: sa.Connection) -> int:
    """The schema version in the database; 0 for an empty one."""
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    value = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
    return int(value or 0)


def migrate(engine: sa.Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; return the version it was at."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        start = current_version(conn)
        if start > SCHEMA_VERSION:
            from ..errors import ConfigError

            raise ConfigError(
                f"the prediction log's schema is version {start}, newer than this modelport "
                f"understands ({SCHEMA_VERSION}); upgrade modelport"
            )
        for version in range(start + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(sa.delete(schema_version))
            conn.execute(sa.insert(schema_version).values(version=version))
    return start
