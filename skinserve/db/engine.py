"""Engines for the registry: Postgres through psycopg 3, or the embedded SQLite default."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def create_registry_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created and foreign keys enforced, as Postgres does."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg2", "default", None):
        # psycopg 3 is the driver we ship; a bare postgresql:// URL would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    # Fail in seconds, not minutes, when the server is down or a firewall drops the packets. prepare_threshold=None:
    # psycopg 3 otherwise prepares a statement on the server after 5 runs, which PgBouncer in transaction pooling
    # (before 1.21, or without max_prepared_statements) hands to another client's connection: "prepared statement
    # _pg3_0 already exists / does not exist". Costs nothing here: SQLAlchemy sends a batch as one multi-row INSERT.
    return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10, "prepare_threshold": None})


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
