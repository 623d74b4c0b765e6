"""The registry: SQLAlchemy models, engines and Alembic migrations."""
