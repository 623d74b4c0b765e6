"""Catalog test data: the real-shaped fixture files under fixtures/catalog/, and writers for files the tests vary.

The fixture files carry the published headers exactly (Sephora's product_info.csv and reviews_*.csv, Skincare
Products Clean in its Windows-1252 bytes, COSING's inventory and annex exports with their title lines); their rows
are real products' labels, shaped as the published files shape them.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from skinserve.catalog.formats import COLUMNS
from skinserve.catalog.ingest import ingest_catalog_file

CATALOG_FIXTURES = Path(__file__).parent / "fixtures" / "catalog"
COSING = CATALOG_FIXTURES / "COSING_Ingredients-Fragrance Inventory_v2.csv"
ANNEX_III = CATALOG_FIXTURES / "COSING_Annex_III_v2.csv"
ANNEX_II = CATALOG_FIXTURES / "COSING_Annex.II_v2.csv"
SKINCARE_CLEAN = CATALOG_FIXTURES / "skincare_products_clean.csv"
SEPHORA_PRODUCTS = CATALOG_FIXTURES / "product_info.csv"
SEPHORA_REVIEWS = CATALOG_FIXTURES / "reviews_0-250.csv"
ALL_FILES = (COSING, ANNEX_III, ANNEX_II, SKINCARE_CLEAN, SEPHORA_PRODUCTS, SEPHORA_REVIEWS)

SEPHORA_HEADER = list(COLUMNS["sephora-products"])
REVIEWS_HEADER = list(COLUMNS["sephora-reviews"])


def ingest_all(engine, files: Iterable[Path] = ALL_FILES) -> None:
    for path in files:
        ingest_catalog_file(path, engine)


@pytest.fixture
def catalog_engine(registry_engine):
    """A registry on SQLite and on Postgres holding every fixture file."""
    ingest_all(registry_engine)
    return registry_engine


def sephora_row(**values: str) -> list[str]:
    """One product_info.csv row: the published columns in order, empty unless given."""
    defaults = {"brand_id": "6234", "loves_count": "100", "limited_edition": "0", "new": "0", "online_only": "0"}
    defaults |= {"out_of_stock": "0", "sephora_exclusive": "0", "child_count": "0", "primary_category": "Skincare"}
    merged = defaults | values
    return [merged.get(column, "") for column in SEPHORA_HEADER]


def write_csv(path: Path, header: list[str], rows: Iterable[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_sephora_products(path: Path, products: Iterable[Mapping[str, str]]) -> Path:
    return write_csv(path, SEPHORA_HEADER, (sephora_row(**p) for p in products))


SKIN_TYPES = ("dry", "oily", "combination", "normal", "")
SKIN_TONES = ("fair", "light", "lightMedium", "medium", "mediumTan", "tan", "deep", "")
PHRASES = (
    "Love this, my skin feels soft.",
    'Works, but the "fresh" scent is strong, and it pills under makeup.',
    "Broke me out after a week.\nWould not repurchase.",
    "Holy grail. Third bottle.",
)


def write_reviews(path: Path, rows: int, product_ids: list[str], seed: int = 0) -> Path:
    """A reviews_*.csv of `rows` generated rows, written as it goes (for the streaming tests and benchmark)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(REVIEWS_HEADER)
        for i in range(rows):
            product = rng.choice(product_ids)
            recommended = rng.choice(("1.0", "0.0", ""))
            writer.writerow(
                [
                    str(i), str(rng.randrange(10**9, 10**11)), str(rng.randint(1, 5)), recommended,
                    f"{rng.random():.4f}" if rng.random() < 0.5 else "", "2", "1", "1",
                    f"20{rng.randint(10, 23)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    rng.choice(PHRASES) + f" #{i}", "Review title", rng.choice(SKIN_TONES), "brown",
                    rng.choice(SKIN_TYPES), "black", product, "Product name", "Brand", "20.0",
                ]
            )  # fmt: skip
    return path
