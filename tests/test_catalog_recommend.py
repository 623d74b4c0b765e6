"""Recommendations on SQLite and Postgres: what is ranked first and why, and what is left out."""

from __future__ import annotations

import pytest

from skinserve.catalog.ingest import ingest_catalog_file
from skinserve.catalog.knowledge import default_knowledge
from skinserve.catalog.recommend import NoCatalog, Recommender, condition_weights
from skinserve.catalog.schemas import RecommendRequest
from skinserve.errors import ERROR_CODES
from tests.catalog_data import catalog_engine, write_sephora_products  # noqa: F401  (fixture)


def _recommend(engine, **body):
    return Recommender(engine, default_knowledge()).recommend(RecommendRequest.model_validate(body))


def _names(answer) -> list[str]:
    return [p.external_id for p in answer.products]


def _analysis(**present: str) -> dict:
    return {
        "request_id": "r1",
        "conditions": {
            name: {"probability": 0.9, "present": name in present, "severity": {"label": present.get(name, "none")}}
            for name in ("acne", "redness", "hyperpigmentation", "fine_lines_wrinkles")
        },
        "healthy": not present,
    }


def test_products_whose_actives_target_the_condition_come_first_with_their_reasons(catalog_engine):  # noqa: F811
    answer = _recommend(catalog_engine, conditions=[{"name": "acne", "severity": "severe"}], limit=3)
    first = answer.products[0]
    assert first.external_id == "P470025"  # salicylic acid, niacinamide and zinc PCA
    assert (first.score, first.matched_actives, first.matched_conditions) == (3.0, 3, ["acne"])
    assert {(r.canonical, r.condition) for r in first.reasons} == {
        ("salicylic acid", "acne"),
        ("niacinamide", "acne"),
        ("zinc pca", "acne"),
    }
    assert all(r.reason for r in first.reasons)
    assert first.restricted[0].refs == ["III/98", "V/3"]  # shown, not hidden: salicylic acid is Annex III


def test_severity_weights_decide_between_conditions(catalog_engine):  # noqa: F811
    retinol_first = _recommend(
        catalog_engine,
        conditions=[{"name": "fine_lines_wrinkles", "severity": "severe"}, {"name": "pore_size", "severity": "mild"}],
        currency="USD",
    )
    assert retinol_first.products[0].external_id == "P447791"
    pores_first = _recommend(
        catalog_engine,
        conditions=[{"name": "fine_lines_wrinkles", "severity": "mild"}, {"name": "pore_size", "severity": "severe"}],
        currency="USD",
    )
    assert pores_first.products[0].external_id == "P470025"


def test_a_product_with_a_prohibited_ingredient_is_never_recommended(catalog_engine):  # noqa: F811
    answer = _recommend(catalog_engine, conditions=[{"name": "hyperpigmentation"}], limit=50)
    assert "P454380" not in _names(answer)  # glycolic acid and niacinamide, but also hydroquinone (Annex II)
    assert answer.products


def test_skin_type_leaves_out_what_the_data_says_is_unsuitable(catalog_engine):  # noqa: F811
    everyone = _names(_recommend(catalog_engine, conditions=[{"name": "acne"}], limit=50))
    dry = _names(_recommend(catalog_engine, conditions=[{"name": "acne"}], skin_type="dry", limit=50))
    oily = _names(_recommend(catalog_engine, conditions=[{"name": "acne"}], skin_type="oily", limit=50))
    assert "P470025" in everyone and "P470025" not in dry  # "Best for Oily, Combo Skin", and alcohol denat.
    assert "P480312" in everyone and "P480312" not in oily  # coconut oil: comedogenic
    assert "P447791" not in oily  # "Best for Normal, Dry, Combo Skin"
    assert set(dry) < set(everyone)


def test_budget_currency_and_category_filter(catalog_engine):  # noqa: F811
    cheap = _recommend(catalog_engine, conditions=[{"name": "acne"}], max_price=10, currency="USD", limit=50)
    assert [(p.price, p.currency) for p in cheap.products] == [(6.0, "USD")]
    serums = _recommend(catalog_engine, conditions=[{"name": "acne"}], category="serum", limit=50)
    assert serums.products and all("serum" in p.categories.lower() for p in serums.products)
    wildcard = _recommend(catalog_engine, conditions=[{"name": "acne"}], category="%", limit=50)
    assert wildcard.products == []


def test_restricted_ingredients_other_than_the_actives_can_be_excluded(catalog_engine):  # noqa: F811
    conditions = [{"name": "redness", "severity": "moderate"}]
    allowed = _names(_recommend(catalog_engine, conditions=conditions, limit=50))
    strict = _names(_recommend(catalog_engine, conditions=conditions, limit=50, exclude_restricted=True))
    assert "P470025" in allowed and "P470025" not in strict  # its salicylic acid is restricted, not a redness active


def test_ties_break_on_the_bayesian_rating_then_price(registry_engine, tmp_path):
    base = {"brand_name": "B", "ingredients": "['Water, Azelaic Acid']", "primary_category": "Skincare"}
    products = [
        base | {"product_id": "FEW", "product_name": "Perfect but 2 reviews", "rating": "5.0", "reviews": "2.0",
                "price_usd": "10"},
        base | {"product_id": "MANY", "product_name": "4.6 over 900 reviews", "rating": "4.6", "reviews": "900.0",
                "price_usd": "30"},
        base | {"product_id": "CHEAP", "product_name": "Unrated, cheap", "price_usd": "5"},
        base | {"product_id": "DEAR", "product_name": "Unrated, dear", "price_usd": "50"},
        base | {"product_id": "LOW", "product_name": "Low", "rating": "3.1", "reviews": "400.0", "price_usd": "1"},
    ]  # fmt: skip
    ingest_catalog_file(write_sephora_products(tmp_path / "p.csv", products), registry_engine)
    answer = _recommend(registry_engine, conditions=[{"name": "redness"}])
    assert _names(answer) == ["MANY", "FEW", "LOW", "CHEAP", "DEAR"]
    few = answer.products[1]
    assert few.rating == 5.0 and few.bayesian_rating < answer.products[0].bayesian_rating


def test_an_analysis_as_analyze_answers_it_is_accepted(catalog_engine):  # noqa: F811
    answer = _recommend(catalog_engine, analysis=_analysis(acne="moderate", redness="mild"))
    assert [(c.name, c.severity, c.weight) for c in answer.conditions] == [
        ("acne", "moderate", 2.0),
        ("redness", "mild", 1.0),
    ]
    assert answer.products[0].score == 3.0


def test_a_healthy_analysis_gets_no_products_and_says_why(catalog_engine):  # noqa: F811
    answer = _recommend(catalog_engine, analysis=_analysis())
    assert answer.products == [] and "no condition" in answer.note


def test_without_a_catalog_the_answer_is_503_no_catalog(registry_engine):
    with pytest.raises(NoCatalog) as caught:
        _recommend(registry_engine, conditions=[{"name": "acne"}])
    assert caught.value.status == 503 and ERROR_CODES["no_catalog"].status == 503


def test_condition_weights_keep_the_stronger_of_two_mentions():
    request = RecommendRequest.model_validate(
        {"conditions": [{"name": "acne", "severity": "mild"}, {"name": "acne", "severity": "severe"}]}
    )
    assert [(c.name, c.weight) for c in condition_weights(request)] == [("acne", 3.0)]


def test_each_product_mask_holds_the_actives_it_lists(catalog_engine):  # noqa: F811
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from skinserve.db.catalog_models import Product

    knowledge = default_knowledge()
    with Session(catalog_engine) as session:
        masks = dict(session.execute(select(Product.external_id, Product.active_mask)).all())
    listed = {a.canonical for a in knowledge.actives if masks["P470025"] >> knowledge.bit(a) & 1}
    assert listed == {"salicylic acid", "niacinamide", "zinc pca"}
    assert masks["P505556"] == 0  # the gift card lists nothing


def test_a_changed_actives_file_rebuilds_the_masks_before_ranking(catalog_engine, tmp_path):  # noqa: F811
    from skinserve.catalog.knowledge import DEFAULT_KNOWLEDGE, load_knowledge

    # Glycerin becomes an acne active, placed first: every other active's bit moves one place.
    edited = tmp_path / "actives.yaml"
    glycerin = '  - inci: GLYCERIN\n    targets:\n      acne: "test line"\n'
    edited.write_text(DEFAULT_KNOWLEDGE.read_text().replace("actives:\n", "actives:\n" + glycerin, 1))
    knowledge = load_knowledge(edited)
    assert knowledge.fingerprint != default_knowledge().fingerprint
    answer = Recommender(catalog_engine, knowledge).recommend(
        RecommendRequest.model_validate({"conditions": [{"name": "acne"}], "limit": 50})
    )
    assert any(r.canonical == "glycerin" for p in answer.products for r in p.reasons)
    assert "P447791" in _names(answer)  # still found by its retinol after the bits moved


def test_a_may_contain_colourant_is_no_active(catalog_engine):  # noqa: F811
    answer = _recommend(catalog_engine, conditions=[{"name": "aging"}], limit=50)
    assert "P480312" in _names(answer)  # zinc oxide, listed
    assert "P500127" not in _names(answer)  # titanium dioxide only as a blush's "may contain" shade
