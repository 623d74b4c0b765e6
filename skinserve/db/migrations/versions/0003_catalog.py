"""The catalog: products, reference ingredients (COSING and its annexes), product ingredient lists, reviews.

Revision ID: 0003_catalog
Revises: 0002_prediction_logs
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_catalog"
down_revision = "0002_prediction_logs"
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("external_id", sa.String(500), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("brand", sa.String(200)),
        sa.Column("product_type", sa.String(200)),
        sa.Column("categories", sa.String(500)),
        sa.Column("size", sa.String(200)),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("url", sa.String(1000)),
        sa.Column("rating", sa.Float()),
        sa.Column("review_count", sa.Integer()),
        sa.Column("ingredients_raw", sa.Text()),
        sa.Column("highlights", JSONDocument),
        sa.Column("skin_types", sa.String(100)),
        sa.Column("attributes", JSONDocument),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("active_mask", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("unsuitable_mask", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now()),
        sa.UniqueConstraint("source", "external_id", name="uq_products_source_external_id"),
    )
    op.create_index("idx_products_price", "products", ["price"])
    op.create_table(
        "ingredients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("normalized_name", sa.String(1000), nullable=False, unique=True),
        sa.Column("synonyms", JSONDocument),
        sa.Column("cas_numbers", sa.String(1000)),
        sa.Column("ec_numbers", sa.String(1000)),
        sa.Column("functions", JSONDocument),
        sa.Column("restriction", sa.String(1000)),
        sa.Column("annex", sa.String(10)),
        sa.Column("annex_refs", JSONDocument),
        sa.Column("annex_conditions", sa.Text()),
        sa.Column("cosing_ref", sa.String(20)),
        sa.Column("description", sa.Text()),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now()),
    )
    op.create_index("idx_ingredients_annex", "ingredients", ["annex"])
    op.create_table(
        "product_ingredients",
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("variation", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("ingredient_name", sa.String(300), nullable=False),
        sa.Column("label_text", sa.String(500), nullable=False),
        sa.Column("ingredient_id", sa.Integer(), sa.ForeignKey("ingredients.id", ondelete="SET NULL")),
        sa.Column("percent", sa.Float()),
        sa.Column("may_contain", sa.Boolean(), nullable=False),
    )
    # Name first: the recommendation query looks products up by the active ingredients they list.
    op.create_index("idx_product_ingredients_name_product", "product_ingredients", ["ingredient_name", "product_id"])
    op.create_index("idx_product_ingredients_ingredient", "product_ingredients", ["ingredient_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("review_key", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="SET NULL")),
        sa.Column("external_product_id", sa.String(500), nullable=False),
        sa.Column("author_id", sa.String(100)),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("is_recommended", sa.Boolean()),
        sa.Column("helpfulness", sa.Float()),
        sa.Column("title", sa.Text()),
        sa.Column("text", sa.Text()),
        sa.Column("skin_type", sa.String(50)),
        sa.Column("skin_tone", sa.String(50)),
        sa.Column("eye_color", sa.String(50)),
        sa.Column("hair_color", sa.String(50)),
        sa.Column("submitted_on", sa.Date()),
    )
    op.create_index("idx_reviews_product", "reviews", ["product_id"])
    op.create_index("idx_reviews_source_external_product", "reviews", ["source", "external_product_id"])
    op.create_table(
        "catalog_settings",
        sa.Column("key", sa.String(50), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_settings")
    op.drop_index("idx_reviews_source_external_product", table_name="reviews")
    op.drop_index("idx_reviews_product", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("idx_product_ingredients_ingredient", table_name="product_ingredients")
    op.drop_index("idx_product_ingredients_name_product", table_name="product_ingredients")
    op.drop_table("product_ingredients")
    op.drop_index("idx_ingredients_annex", table_name="ingredients")
    op.drop_table("ingredients")
    op.drop_index("idx_products_price", table_name="products")
    op.drop_table("products")
