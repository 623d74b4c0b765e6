"""Alembic environment: the URL comes from the caller (skinserve db upgrade) or SKINSERVE_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from skinserve.config import Settings
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import Base
from skinserve.db.partitions import alembic_include_name

config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=alembic_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_registry_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=True,
                include_name=alembic_include_name,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
