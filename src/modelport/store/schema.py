"""Tables of the prediction log and the migrations that create and evolve them.

The schema version lives in ``modelport_schema``; :func:`migrate` applies, in order and in one
transaction, every migration above it. On PostgreSQL an advisory lock keeps two
processes from migrating at once.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

__all__ = ["SCHEMA_VERSION", "feedback", "metadata", "migrate", "predictions", "schema_version"]

metadata = sa.MetaData()

schema_version = sa.Table(
    "modelport_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

predictions = sa.Table(
    "modelport_predictions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
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


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1]
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
