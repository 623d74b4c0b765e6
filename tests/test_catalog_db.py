"""Migration 0003_catalog on SQLite and Postgres: its tables and indexes, down to 0002 and back up."""

from __future__ import annotations

from sqlalchemy import inspect

from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine

CATALOG_TABLES = {"products", "ingredients", "product_ingredients", "reviews", "catalog_settings"}
CATALOG_INDEXES = {
    ("products", "idx_products_price", ("price",)),
    ("ingredients", "idx_ingredients_annex", ("annex",)),
    ("product_ingredients", "idx_product_ingredients_name_product", ("ingredient_name", "product_id")),
    ("product_ingredients", "idx_product_ingredients_ingredient", ("ingredient_id",)),
    ("reviews", "idx_reviews_product", ("product_id",)),
    ("reviews", "idx_reviews_source_external_product", ("source", "external_product_id")),
}


def _indexes(engine) -> set[tuple[str, str, tuple[str, ...]]]:
    inspector = inspect(engine)
    return {
        (table, index["name"], tuple(index["column_names"]))
        for table in CATALOG_TABLES
        for index in inspector.get_indexes(table)
        if not index.get("duplicates_constraint")
    }


def test_the_catalog_tables_have_their_keys_and_indexes(registry_engine):
    inspector = inspect(registry_engine)
    assert set(inspector.get_table_names()) >= CATALOG_TABLES
    assert _indexes(registry_engine) == CATALOG_INDEXES
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("products")}
    assert ("source", "external_id") in unique
    assert inspector.get_pk_constraint("product_ingredients")["constrained_columns"] == [
        "product_id",
        "variation",
        "position",
    ]
    foreign = {(f["referred_table"], tuple(f["constrained_columns"])) for f in inspector.get_foreign_keys("reviews")}
    assert foreign == {("products", ("product_id",))}


def test_downgrade_to_0002_drops_only_the_catalog_and_upgrade_restores_it(registry_url):
    engine = create_registry_engine(registry_url)
    migrate.downgrade(registry_url, "0002_prediction_logs")
    tables = set(inspect(engine).get_table_names())
    assert not tables & CATALOG_TABLES and {"ml_training_images", "prediction_logs"} <= tables
    engine.dispose()
    migrate.upgrade(registry_url)
    assert migrate.current_revision(registry_url) == migrate.head_revision() == "0004_prediction_log_partitions"
    engine = create_registry_engine(registry_url)  # a connection that saw the old schema may answer from it (SQLite)
    assert _indexes(engine) == CATALOG_INDEXES
    engine.dispose()
