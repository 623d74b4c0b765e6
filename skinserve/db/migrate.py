"""Alembic, driven from code: the migrations ship inside the package so `skinserve db upgrade` works anywhere."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from skinserve.config import redacted_url
from skinserve.db.engine import create_registry_engine
from skinserve.errors import SkinserveError

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaNotCurrent(SkinserveError):
    """The registry cannot be reached, or is not at the head revision; the message says what to run."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Kept as an attribute, not an ini option: ini interpolation would mangle '%' in passwords.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    engine = create_registry_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_head(database_url: str) -> None:
    """Refuse, before any work is done, a registry that cannot be reached or is not migrated to the head."""
    try:
        current = current_revision(database_url)
    except Exception as err:  # any driver error means the same here: no usable registry
        reason = getattr(err, "orig", None) or type(err).__name__
        raise SchemaNotCurrent(f"cannot reach the registry at {redacted_url(database_url)}: {reason}") from err
    if current != head_revision():
        raise SchemaNotCurrent(
            f"registry {redacted_url(database_url)} is at revision {current}; run `skinserve db upgrade` first"
        )
