"""The registry tables of the seed schema: training images, condition labels, subject metadata, training metrics.

Revision ID: 0001_registry
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ml_training_images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_url", sa.String(500), nullable=False),
        sa.Column("local_path", sa.String(255)),
        sa.Column("image_hash", sa.String(64), unique=True),
        sa.Column("dataset_source", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
    )
    op.create_table(
        "skin_condition_labels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("ml_training_images.id")),
        sa.Column("condition_type", sa.String(100), nullable=False),
        sa.Column("confidence_score", sa.Float()),
        sa.Column("severity_level", sa.String(50)),
        sa.Column("metadata", JSONDocument),
        sa.Column("verified", sa.Boolean(), server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
    )
    op.create_table(
        "subject_metadata",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("ml_training_images.id")),
        sa.Column("gender", sa.String(20)),
        sa.Column("age_range", sa.String(20)),
        sa.Column("ethnicity", sa.String(50)),
        sa.Column("skin_type", sa.String(50)),
        sa.Column("fitzpatrick_scale", sa.Integer()),
        sa.Column("additional_info", JSONDocument),
        sa.CheckConstraint("fitzpatrick_scale BETWEEN 1 AND 6", name="ck_subject_metadata_fitzpatrick_scale"),
    )
    op.create_table(
        "model_training_metrics",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(50)),
        sa.Column("training_date", sa.DateTime(), server_default=sa.func.now()),
        sa.Column("dataset_size", sa.Integer()),
        sa.Column("accuracy", sa.Float()),
        sa.Column("precision_score", sa.Float()),
        sa.Column("recall", sa.Float()),
        sa.Column("f1_score", sa.Float()),
        sa.Column("training_duration_minutes", sa.Integer()),
        sa.Column("hyperparameters", JSONDocument),
        sa.Column("notes", sa.Text()),
    )
    op.create_index("idx_training_images_source", "ml_training_images", ["dataset_source"])
    op.create_index("idx_condition_labels_type", "skin_condition_labels", ["condition_type"])
    op.create_index("idx_metadata_skin_type", "subject_metadata", ["skin_type"])
    op.create_index("idx_training_metrics_date", "model_training_metrics", ["training_date"])


def downgrade() -> None:
    op.drop_index("idx_training_metrics_date", table_name="model_training_metrics")
    op.drop_index("idx_metadata_skin_type", table_name="subject_metadata")
    op.drop_index("idx_condition_labels_type", table_name="skin_condition_labels")
    op.drop_index("idx_training_images_source", table_name="ml_training_images")
    op.drop_table("model_training_metrics")
    op.drop_table("subject_metadata")
    op.drop_table("skin_condition_labels")
    op.drop_table("ml_training_images")
