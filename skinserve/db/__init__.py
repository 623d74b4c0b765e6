"""The registry: SQLAlchemy models, engines and Alembic migrations."""

# Every table on Base.metadata whichever module is imported first (Alembic's env, a test's drop_all).
from skinserve.db import catalog_models as _catalog_models  # noqa: F401
