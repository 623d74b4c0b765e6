"""Ingest of the published catalog files on SQLite and Postgres: each reader, idempotence, and every kind of bad input
answered with a per-row or per-file reason while the rest is ingested."""

from __future__ import annotations

import csv
import io
import shutil
import tracemalloc
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skinserve.catalog.formats import ReviewRecord
from skinserve.catalog.ingest import (
    CatalogFileError,
    CatalogIngestOptions,
    CatalogIngestSummary,
    _ReviewWriter,
    ingest_catalog_file,
)
from skinserve.db.catalog_models import Ingredient, Product, ProductIngredient, Review
from tests.catalog_data import (
    ANNEX_II,
    ANNEX_III,
    COSING,
    REVIEWS_HEADER,
    SEPHORA_PRODUCTS,
    SEPHORA_REVIEWS,
    SKINCARE_CLEAN,
    ingest_all,
    sephora_row,
    write_csv,
    write_reviews,
    write_sephora_products,
)
from tests.catalog_data import SEPHORA_HEADER as HEADER


def _count(engine, model) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def _product(engine, external_id: str) -> Product:
    with Session(engine) as session:
        return session.scalars(select(Product).where(Product.external_id == external_id)).one()


def _entries(engine, external_id: str) -> list[ProductIngredient]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(ProductIngredient)
                .join(Product, Product.id == ProductIngredient.product_id)
                .where(Product.external_id == external_id)
                .order_by(ProductIngredient.variation, ProductIngredient.position)
            )
        )


def _ingredient(engine, name: str) -> Ingredient:
    with Session(engine) as session:
        return session.scalars(select(Ingredient).where(Ingredient.normalized_name == name)).one()


def _reasons(summary: CatalogIngestSummary) -> dict[int, str]:
    return {p.line: p.reason for p in summary.rejected}


# ---------------------------------------------------------------- each reader


def test_skincare_clean_reads_the_published_legacy_file(registry_engine):
    summary = ingest_catalog_file(SKINCARE_CLEAN, registry_engine)
    assert (summary.format, summary.encoding, summary.added, summary.rejected_count) == (
        "skincare-clean",
        "cp1252",
        8,
        0,
    )
    assert any("Windows-1252" in note for note in summary.notes)
    product = _product(registry_engine, "The Ordinary Natural Moisturising Factors + HA 30ml")
    assert (product.price, product.currency, product.product_type) == (Decimal("5.20"), "GBP", "Moisturiser")
    assert product.url.endswith("/11396687.html")
    entries = _entries(registry_engine, "The Ordinary Niacinamide 10% + Zinc 1% 30ml")
    assert [e.ingredient_name for e in entries][:4] == ["aqua", "niacinamide", "pentylene glycol", "zinc pca"]


def test_sephora_products_keep_variations_categories_and_skin_types(registry_engine):
    summary = ingest_catalog_file(SEPHORA_PRODUCTS, registry_engine)
    assert (summary.format, summary.added, summary.rejected_count) == ("sephora-products", 8, 0)
    serum = _product(registry_engine, "P470025")
    assert serum.brand == "Peter Thomas Roth"
    assert serum.categories == "Skincare > Treatments > Blemish & Acne Treatments"
    assert serum.product_type == "Blemish & Acne Treatments"
    assert serum.skin_types == ",combination,oily,"
    assert (serum.rating, serum.review_count, serum.price, serum.currency) == (4.3212, 841, Decimal("48.00"), "USD")
    assert serum.attributes["loves_count"] == "12093"
    names = [e.ingredient_name for e in _entries(registry_engine, "P470025")]
    assert names[:3] == ["aqua", "alcohol denat", "salicylic acid"]  # the marketing lines above it are left out
    assert "phthalates" not in names
    variations = {e.variation for e in _entries(registry_engine, "P473671")}
    assert variations == {"Capri Eau de Parfum", "Kasbah Eau de Parfum"}
    blush = _entries(registry_engine, "P500127")
    assert [e.may_contain for e in blush][-2:] == [True, True]
    assert _entries(registry_engine, "P505556") == []  # a gift card lists no ingredients


def test_sephora_reviews_are_read_and_linked_to_products_ingested_after_them(registry_engine):
    summary = ingest_catalog_file(SEPHORA_REVIEWS, registry_engine)
    assert (summary.format, summary.added, summary.rejected_count) == ("sephora-reviews", 6, 0)
    with Session(registry_engine) as session:
        assert session.scalar(select(func.count()).where(Review.product_id.is_not(None))) == 0
        review = session.scalars(select(Review).where(Review.author_id == "31423088263")).one()
    assert review.text.startswith("I'm sorry, but this did nothing") and "\n" in review.text
    assert (review.rating, review.is_recommended, review.skin_type) == (1, False, "oily")
    after = ingest_catalog_file(SEPHORA_PRODUCTS, registry_engine)
    assert any("linked 6 earlier review" in note for note in after.notes)
    with Session(registry_engine) as session:
        assert session.scalar(select(func.count()).where(Review.product_id.is_not(None))) == 6


def test_cosing_inventory_below_its_title_lines(registry_engine):
    summary = ingest_catalog_file(COSING, registry_engine)
    assert (summary.format, summary.header_line, summary.added) == ("cosing", 5, 30)
    glycerin = _ingredient(registry_engine, "glycerin")
    assert glycerin.synonyms == ["glycerol"] and "humectant" in glycerin.functions
    salicylic = _ingredient(registry_engine, "salicylic acid")
    assert (salicylic.annex, salicylic.annex_refs, salicylic.cosing_ref) == ("III", ["III/98", "V/3"], "37380")
    assert _ingredient(registry_engine, "hydroquinone").annex == "II"


def test_cosing_annexes_add_conditions_and_their_own_names(registry_engine):
    ingest_catalog_file(COSING, registry_engine)
    three = ingest_catalog_file(ANNEX_III, registry_engine)
    assert (three.format, three.skipped) == ("cosing-annex", 1)  # "Moved or deleted"
    salicylic = _ingredient(registry_engine, "salicylic acid")
    assert "III/98" in salicylic.annex_conditions and "2,0 %" in salicylic.annex_conditions
    assert _ingredient(registry_engine, "retinyl palmitate").annex == "III"  # named only by the annex
    ingest_catalog_file(ANNEX_II, registry_engine)  # the annex named only by its file name
    assert _ingredient(registry_engine, "spironolactone").annex == "II"
    assert _ingredient(registry_engine, "trichloroacetic acid").annex_refs == ["II/10"]
    with Session(registry_engine) as session:  # "(*)" entries are chemical names outside the glossary
        assert session.scalar(select(func.count()).where(Ingredient.normalized_name == "boldenone")) == 0


def test_an_annex_file_that_does_not_say_which_annex_needs_one(registry_engine, tmp_path):
    anonymous = shutil.copy(ANNEX_II, tmp_path / "annex.csv")
    with pytest.raises(CatalogFileError, match="--annex"):
        ingest_catalog_file(anonymous, registry_engine)
    summary = ingest_catalog_file(anonymous, registry_engine, CatalogIngestOptions(annex="II"))
    assert summary.added == 5  # spironolactone, trichloroacetic acid, hydroquinone, prasterone, testosterone


def test_cosing_ingested_after_products_links_their_ingredients(registry_engine):
    ingest_catalog_file(SEPHORA_PRODUCTS, registry_engine)
    with Session(registry_engine) as session:
        assert session.scalar(select(func.count(ProductIngredient.ingredient_id))) == 0
    summary = ingest_catalog_file(COSING, registry_engine)
    assert any("linked" in note for note in summary.notes)
    water = _entries(registry_engine, "P447791")[0]
    assert (water.label_text, water.ingredient_name) == ("Water/Aqua/Eau", "aqua")
    assert water.ingredient_id == _ingredient(registry_engine, "aqua").id


# ---------------------------------------------------------------- idempotence


def test_a_second_ingest_of_every_file_changes_nothing(registry_engine):
    ingest_all(registry_engine)
    counts = [_count(registry_engine, m) for m in (Product, ProductIngredient, Ingredient, Review)]
    for path in (COSING, ANNEX_III, ANNEX_II, SKINCARE_CLEAN, SEPHORA_PRODUCTS, SEPHORA_REVIEWS):
        again = ingest_catalog_file(path, registry_engine)
        assert (again.added, again.updated, again.rejected_count) == (0, 0, 0), path.name
    assert [_count(registry_engine, m) for m in (Product, ProductIngredient, Ingredient, Review)] == counts


def test_a_changed_product_is_rewritten_with_its_new_ingredient_list(registry_engine, tmp_path):
    base = {"product_id": "P1", "product_name": "Serum", "brand_name": "B", "price_usd": "20.0"}
    first = write_sephora_products(tmp_path / "a.csv", [base | {"ingredients": "['Water, Niacinamide']"}])
    ingest_catalog_file(first, registry_engine)
    second = write_sephora_products(tmp_path / "b.csv", [base | {"ingredients": "['Water, Retinol, Bakuchiol']"}])
    summary = ingest_catalog_file(second, registry_engine)
    assert (summary.added, summary.updated) == (0, 1)
    assert [e.ingredient_name for e in _entries(registry_engine, "P1")] == ["aqua", "retinol", "bakuchiol"]


# ---------------------------------------------------------------- bad input: the whole file


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "blank"),
        (",".join(HEADER).encode() + b"\n", "header only"),
        (b"name,price\nCream,5\n", "no known catalog"),
    ],
    ids=["empty", "blank-lines", "header-only", "unknown-header"],
)
def test_a_file_that_cannot_be_ingested_says_why_and_writes_nothing(registry_engine, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CatalogFileError, match=message):
        ingest_catalog_file(path, registry_engine)
    assert _count(registry_engine, Product) == 0


def test_an_explicit_format_that_the_header_is_not_is_refused(registry_engine):
    with pytest.raises(CatalogFileError, match="no sephora-products header"):
        ingest_catalog_file(SEPHORA_REVIEWS, registry_engine, CatalogIngestOptions(fmt="sephora-products"))


def test_unknown_columns_are_named_and_the_rows_still_ingested(registry_engine, tmp_path):
    rows = [sephora_row(product_id="P1", product_name="A", brand_name="B", price_usd="5") + ["surprise"]]
    path = write_csv(tmp_path / "extra.csv", [*HEADER, "my_column"], rows)
    summary = ingest_catalog_file(path, registry_engine)
    assert summary.added == 1
    assert any("my_column" in note for note in summary.notes)


# ---------------------------------------------------------------- bad input: rows


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


def test_bad_rows_are_rejected_by_line_and_the_rest_ingested(registry_engine, tmp_path):
    good = {"brand_name": "B", "price_usd": "10.0", "ingredients": "['Water, Glycerin']"}
    lines = [
        _line(HEADER),
        _line(sephora_row(product_id="P1", product_name="One", **good)),  # 2 ok
        "P2,short row",  # 3 wrong width
        _line(sephora_row(product_id="P3", product_name="Crème Three", **good)),  # 4 ok: the file is UTF-8
        _line(sephora_row(product_id="P1", product_name="One again", **good)),  # 5 duplicate id
        _line(sephora_row(product_id="P5", product_name="Five", brand_name="B", price_usd="ten")),  # 6 price
        _line(sephora_row(product_id="P6", product_name="Six", brand_name="B", price_usd="1", ingredients="['W, G'")),
        _line(sephora_row(product_id="P7", product_name="Seven", brand_name="B", price_usd="1", rating="7")),
        'P8,"unclosed name,6342,B',  # 9 broken quoting
        _line(sephora_row(product_id="P9", product_name="Nine", **good)),  # 10 ok
    ]
    content = ("\n".join(lines) + "\n").encode()
    content += _line(sephora_row(product_id="P10", product_name="Caf\xe9", **good)).encode("latin-1") + b"\n"
    content += _line(sephora_row(product_id="P11", product_name="Eleven", **good)).encode() + b"\n"
    path = tmp_path / "product_info.csv"
    path.write_bytes(content)
    summary = ingest_catalog_file(path, registry_engine)
    reasons = _reasons(summary)
    assert summary.added == 4 and summary.rejected_count == 7
    assert reasons[3] == f"2 fields, the header has {len(HEADER)}"
    assert reasons[5] == "duplicate product id 'P1' (first on line 2)"
    assert "price_usd 'ten' is not a price" in reasons[6]
    assert "ingredients is not a readable list literal" in reasons[7]
    assert "rating 7.0 is outside 0.0-5.0" in reasons[8]
    assert reasons[9].startswith("broken quoting")
    assert "not valid UTF-8" in reasons[11]
    with Session(registry_engine) as session:
        ids = set(session.scalars(select(Product.external_id)))
    assert ids == {"P1", "P3", "P9", "P11"}


def test_reviews_with_bad_cells_are_rejected_by_line(registry_engine, tmp_path):
    row = ["0", "42", "5", "1.0", "", "0", "0", "0", "2023-01-02", "ok", "t", "", "", "dry", "", "P1", "n", "b", "5"]
    bad_rating = row.copy()
    bad_rating[2] = "6"
    bad_date = row.copy()
    bad_date[8] = "yesterday"
    bad_flag = row.copy()
    bad_flag[3] = "maybe"
    summary = ingest_catalog_file(
        write_csv(tmp_path / "reviews.csv", REVIEWS_HEADER, [row, bad_rating, bad_date, bad_flag]), registry_engine
    )
    assert summary.added == 1
    assert _reasons(summary) == {
        3: "rating 6 is outside 1-5",
        4: "submission_time 'yesterday' is not a date (YYYY-MM-DD)",
        5: "is_recommended 'maybe' is not 1/0",
    }


def test_a_row_the_database_refuses_is_rejected_and_its_batch_still_written(registry_engine):
    def review(key: str, rating) -> tuple[int, ReviewRecord]:
        fields = dict(source="sephora", external_product_id="P1", author_id="a", rating=rating, is_recommended=None)
        fields |= dict(helpfulness=None, title=None, text=None, skin_type=None, skin_tone=None, eye_color=None)
        return 1, ReviewRecord(review_key=key, hair_color=None, submitted_on=None, **fields)

    writer = _ReviewWriter(registry_engine)
    summary = CatalogIngestSummary("f", "sephora-reviews", "utf-8", 1)
    problems = writer.write([review("a" * 64, 5), review("b" * 64, None), review("c" * 64, 4)], summary)
    assert [p.line for p in problems] == [1] and "refused by the database" in problems[0].reason
    assert summary.added == 2 and _count(registry_engine, Review) == 2


# ---------------------------------------------------------------- streaming


def test_a_reviews_file_four_times_larger_needs_no_more_memory(registry_engine, tmp_path):
    products = [f"P{i}" for i in range(300)]
    options = CatalogIngestOptions(batch_size=500)
    ingest_catalog_file(write_reviews(tmp_path / "warm.csv", 500, products, seed=0), registry_engine, options)
    small = write_reviews(tmp_path / "small.csv", 2_000, products, seed=1)
    large = write_reviews(tmp_path / "large.csv", 8_000, products, seed=2)
    peaks = []
    tracemalloc.start()
    try:
        for path in (small, large):
            tracemalloc.reset_peak()
            summary = ingest_catalog_file(path, registry_engine, options)
            peaks.append(tracemalloc.get_traced_memory()[1])
            assert summary.added == summary.rows and summary.rejected_count == 0
    finally:
        tracemalloc.stop()
    # Read whole, the large file's 6,000 extra rows would take ~10 MB more as Python objects; streamed, one batch.
    assert peaks[1] < peaks[0] + 3 * 2**20, f"peak traced memory {[round(p / 2**20, 1) for p in peaks]} MB"
