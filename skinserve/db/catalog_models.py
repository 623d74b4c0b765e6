"""The catalog's tables: products, reference ingredients (COSING), each product's ingredient list, and reviews."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from skinserve.db.models import Base, JSONDocument


class Product(Base):
    """One product as a retailer's file publishes it; (source, external_id) is its identity across ingests."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_products_source_external_id"),
        Index("idx_products_price", "price"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(50), nullable=False)  # skincare-clean | sephora
    external_id: Mapped[str] = mapped_column(String(500), nullable=False)
    name: Mapped[str] = mapped_column(String(500), nullable=False)
    brand: Mapped[str | None] = mapped_column(String(200))
    product_type: Mapped[str | None] = mapped_column(String(200))  # the most specific category
    categories: Mapped[str | None] = mapped_column(String(500))  # "Skincare > Treatments > Face Serums"
    size: Mapped[str | None] = mapped_column(String(200))
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    url: Mapped[str | None] = mapped_column(String(1000))
    rating: Mapped[float | None] = mapped_column(Float)
    review_count: Mapped[int | None] = mapped_column(Integer)
    ingredients_raw: Mapped[str | None] = mapped_column(Text)
    highlights: Mapped[list[str] | None] = mapped_column(JSONDocument)
    # ",oily,combination,normal," when the publisher names the skin types (Sephora's "Best for ..." highlights);
    # NULL when it does not. Comma-fenced so one portable LIKE finds a type on SQLite and Postgres alike.
    skin_types: Mapped[str | None] = mapped_column(String(100))
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)  # the file's other columns
    content_sha256: Mapped[str] = mapped_column(String(64), nullable=False)  # unchanged rows are not rewritten
    # Bit i set: the product lists the i-th active of actives.yaml. Derived from product_ingredients, so the ranking
    # reads one row per product instead of aggregating ingredient rows; rebuilt when actives.yaml changes.
    active_mask: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    # Bit i set: the product lists an ingredient actives.yaml marks unsuitable for SKIN_TYPES[i].
    unsuitable_mask: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())


class Ingredient(Base):
    """A reference ingredient: COSING's inventory entry, enriched by its annexes (II prohibited, III restricted)."""

    __tablename__ = "ingredients"
    __table_args__ = (Index("idx_ingredients_annex", "annex"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), nullable=False)  # as published: "SALICYLIC ACID"
    normalized_name: Mapped[str] = mapped_column(String(1000), nullable=False, unique=True)  # the match key
    synonyms: Mapped[list[str] | None] = mapped_column(JSONDocument)  # normalised INN / Ph. Eur. / glossary names
    cas_numbers: Mapped[str | None] = mapped_column(String(1000))
    ec_numbers: Mapped[str | None] = mapped_column(String(1000))
    functions: Mapped[list[str] | None] = mapped_column(JSONDocument)
    restriction: Mapped[str | None] = mapped_column(String(1000))  # COSING's "Restriction" cell: "III/98, V/3"
    annex: Mapped[str | None] = mapped_column(String(10))  # the strictest annex: II, III, IV, V or VI
    annex_refs: Mapped[list[str] | None] = mapped_column(JSONDocument)  # ["III/98", "V/3"]
    annex_conditions: Mapped[str | None] = mapped_column(Text)  # scope, maximum concentration, warnings
    cosing_ref: Mapped[str | None] = mapped_column(String(20))
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # cosing | annex
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())


class ProductIngredient(Base):
    """One entry of a product's ingredient list, in label order, within its variation ('' for a single list)."""

    __tablename__ = "product_ingredients"
    __table_args__ = (
        # The recommendation query joins the active ingredients' names to the products that list them.
        Index("idx_product_ingredients_name_product", "ingredient_name", "product_id"),
        Index("idx_product_ingredients_ingredient", "ingredient_id"),
    )

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    variation: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based within the variation
    ingredient_name: Mapped[str] = mapped_column(String(300), nullable=False)  # canonical normalised name
    label_text: Mapped[str] = mapped_column(String(500), nullable=False)  # as printed on the label
    ingredient_id: Mapped[int | None] = mapped_column(ForeignKey("ingredients.id", ondelete="SET NULL"))
    percent: Mapped[float | None] = mapped_column(Float)
    may_contain: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class Review(Base):
    """A review as Sephora's reviews_*.csv publishes it; `review_key` makes a re-ingest add nothing."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("idx_reviews_product", "product_id"),
        Index("idx_reviews_source_external_product", "source", "external_product_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    source: Mapped[str] = mapped_column(String(50), nullable=False)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    external_product_id: Mapped[str] = mapped_column(String(500), nullable=False)
    author_id: Mapped[str | None] = mapped_column(String(100))
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    is_recommended: Mapped[bool | None] = mapped_column(Boolean)
    helpfulness: Mapped[float | None] = mapped_column(Float)
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    skin_type: Mapped[str | None] = mapped_column(String(50))
    skin_tone: Mapped[str | None] = mapped_column(String(50))
    eye_color: Mapped[str | None] = mapped_column(String(50))
    hair_color: Mapped[str | None] = mapped_column(String(50))
    submitted_on: Mapped[date | None] = mapped_column(Date)


class CatalogSetting(Base):
    """Catalog-wide values: `active_mask_fingerprint`, the actives.yaml the products' masks were computed with."""

    __tablename__ = "catalog_settings"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
