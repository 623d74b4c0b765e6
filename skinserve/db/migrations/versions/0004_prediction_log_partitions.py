"""prediction_logs for years: no 32-bit surrogate key; on Postgres, range-partitioned by UTC day.

The 32-bit `id` ran out in about five days at one GPU replica's 5,000 rows/s. Nothing refers to it, so it goes: the
primary key becomes (request_id, created_at). A unique key on a partitioned table must hold the partition key, and
created_at is fixed once per request (the spool keeps it to the microsecond), so the writer's
`ON CONFLICT (request_id, created_at) DO NOTHING` still stores a replayed row once.

Postgres: a partitioned table with a DEFAULT partition (see skinserve/db/partitions.py for why), one partition per
day that has rows, and today's and the next 7 days'; the rows are copied over. SQLite keeps one table, rebuilt with
the new key. Downgrade restores 0002's table (a serial id, numbered in created_at order) with every row of the
attached partitions; days detached by `skinserve db partitions` stay as tables of their own.

Revision ID: 0004_prediction_log_partitions
Revises: 0003_catalog
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from skinserve.db.partitions import DAY_FUNCTIONS, create_day

revision = "0004_prediction_log_partitions"
down_revision = "0003_catalog"
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")
DAYS_AHEAD = 7
# The columns both tables share, spelled out: SQL is literal text here, never assembled from strings.
COPY_UP = (
    "INSERT INTO prediction_logs (request_id, created_at, model_name, model_version, runtime, image_sha256, width, "
    "height, bytes, outputs, latency_ms, batch_size, client_id) SELECT request_id, created_at, model_name, "
    "model_version, runtime, image_sha256, width, height, bytes, outputs, latency_ms, batch_size, client_id "
    "FROM prediction_logs_0002"
)
COPY_DOWN = (
    "INSERT INTO prediction_logs (request_id, created_at, model_name, model_version, runtime, image_sha256, width, "
    "height, bytes, outputs, latency_ms, batch_size, client_id) SELECT request_id, created_at, model_name, "
    "model_version, runtime, image_sha256, width, height, bytes, outputs, latency_ms, batch_size, client_id "
    "FROM prediction_logs_0004 ORDER BY created_at"
)


def _columns() -> list[sa.Column]:
    return [
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("runtime", sa.String(50), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("outputs", JSONDocument, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(100)),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    # Free the names the new table takes: the old one is only read from now on.
    op.rename_table("prediction_logs", "prediction_logs_0002")
    op.drop_index("idx_prediction_logs_created_at", table_name="prediction_logs_0002")
    if postgres:
        op.execute("ALTER TABLE prediction_logs_0002 DROP CONSTRAINT prediction_logs_pkey")
    op.create_table(
        "prediction_logs",
        *_columns(),
        sa.PrimaryKeyConstraint("request_id", "created_at", name="prediction_logs_pkey"),
        postgresql_partition_by="RANGE (created_at)",
    )
    if postgres:
        op.execute("CREATE TABLE prediction_logs_default PARTITION OF prediction_logs DEFAULT")
        for function in DAY_FUNCTIONS.values():
            op.execute(function)
        days = bind.execute(
            sa.text(
                "SELECT DISTINCT CAST(created_at AT TIME ZONE 'UTC' AS date) FROM prediction_logs_0002 UNION "
                "SELECT CAST(now() AT TIME ZONE 'UTC' AS date) + i FROM generate_series(0, :ahead) AS i ORDER BY 1"
            ),
            {"ahead": DAYS_AHEAD},
        ).scalars()
        for day in days:
            create_day(bind, day)
    op.execute(COPY_UP)
    op.drop_table("prediction_logs_0002")
    op.create_index("idx_prediction_logs_created_at", "prediction_logs", ["created_at"])


def downgrade() -> None:
    op.rename_table("prediction_logs", "prediction_logs_0004")
    op.drop_index("idx_prediction_logs_created_at", table_name="prediction_logs_0004")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE prediction_logs_0004 DROP CONSTRAINT prediction_logs_pkey")
        op.execute("DROP FUNCTION IF EXISTS skinserve_create_log_day(date)")
        op.execute("DROP FUNCTION IF EXISTS skinserve_retire_log_day(date, text)")
    request_id, *others = _columns()
    op.create_table(
        "prediction_logs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.String(36), nullable=False, unique=True),
        *others,
    )
    op.execute(COPY_DOWN)
    op.drop_table("prediction_logs_0004")  # on Postgres with its attached partitions
    op.create_index("idx_prediction_logs_created_at", "prediction_logs", ["created_at"])
