"""The functions the catalog routes call, on SQLite and Postgres: answers, and a ClientError (never a 500) for
every hostile body."""

from __future__ import annotations

import json

import pytest

from skinserve.catalog.routes import BodyTooLarge, CatalogRoutes, InvalidCatalogRequest, MalformedBody, NoCatalog
from skinserve.catalog.schemas import IngredientAnalysis, Recommendations, RecommendRequest
from skinserve.errors import ClientError
from tests.catalog_data import catalog_engine  # noqa: F401  (fixture)

ANALYSIS = {
    "request_id": "0b6f",
    "model": {"name": "skin-classifier", "version": "v1"},
    "conditions": {
        "acne": {"probability": 0.91, "present": True, "severity": {"label": "moderate", "probabilities": {}}},
        "redness": {"probability": 0.12, "present": False, "severity": {"label": "none", "probabilities": {}}},
    },
    "primary_concern": "acne",
    "healthy": False,
}


def test_analyze_answers_raw_json_bytes(catalog_engine):  # noqa: F811
    routes = CatalogRoutes(catalog_engine)
    answer = routes.analyze_ingredients(json.dumps({"ingredients": "Aqua, Niacinamide, Salicylic Acid"}).encode())
    assert isinstance(answer, IngredientAnalysis)
    assert [i.match.kind for i in answer.ingredients] == ["exact", "exact", "exact"]
    IngredientAnalysis.model_validate_json(answer.model_dump_json())  # the answer round-trips through its schema


def test_recommend_answers_an_analysis_and_a_condition_list(catalog_engine):  # noqa: F811
    routes = CatalogRoutes(catalog_engine)
    from_analysis = routes.recommend({"analysis": ANALYSIS, "skin_type": "oily", "limit": 3})
    from_list = routes.recommend(
        {"conditions": [{"name": "acne", "severity": "moderate"}], "skin_type": "oily", "limit": 3}
    )
    assert isinstance(from_analysis, Recommendations)
    assert [p.id for p in from_analysis.products] == [p.id for p in from_list.products]
    assert from_analysis.conditions[0].name == "acne"


def test_shine_recommendations_name_the_product_and_the_reason(catalog_engine):  # noqa: F811
    items = CatalogRoutes(catalog_engine).shine_recommendations(ANALYSIS, limit=2)
    assert len(items) == 2
    first = items[0]
    assert first.product == "Peter Thomas Roth Clarifying Blemish Serum with 2% Salicylic Acid"
    assert first.type == "Blemish & Acne Treatments" and first.conditions == ["acne"]
    assert "Salicylic Acid 2%" in first.reason and "for acne" in first.reason


def test_without_a_catalog_recommend_is_503_and_shine_leaves_the_answer_alone(registry_engine):
    routes = CatalogRoutes(registry_engine)
    with pytest.raises(NoCatalog) as caught:
        routes.recommend({"conditions": [{"name": "acne"}]})
    assert (caught.value.status, caught.value.code) == (503, "no_catalog")
    assert routes.shine_recommendations(ANALYSIS) is None


HOSTILE_ANALYZE = [
    (b"", MalformedBody, 400),
    (b"{not json", MalformedBody, 400),
    (b"\xff\xfe\x00", MalformedBody, 400),
    (b"[" * 200_000 + b"]" * 200_000, BodyTooLarge, 413),  # over the body limit
    (b"[" * 5_000 + b"]" * 5_000, MalformedBody, 400),  # nested past the JSON decoder's recursion limit
    (b"[]", InvalidCatalogRequest, 422),
    (b'"text"', InvalidCatalogRequest, 422),
    (b"{}", InvalidCatalogRequest, 422),
    (b'{"ingredients": ""}', InvalidCatalogRequest, 422),
    (b'{"ingredients": 42}', InvalidCatalogRequest, 422),
    (b'{"ingredients": null}', InvalidCatalogRequest, 422),
    (b'{"ingredients": "Water", "extra": 1}', InvalidCatalogRequest, 422),
    (json.dumps({"ingredients": "x" * 20_001}).encode(), InvalidCatalogRequest, 422),
    (json.dumps({"ingredients": ", ".join(["Aqua"] * 400)}).encode(), ClientError, 422),
]


@pytest.mark.parametrize(("body", "error", "status"), HOSTILE_ANALYZE, ids=range(len(HOSTILE_ANALYZE)))
def test_hostile_analyze_bodies_are_client_errors(catalog_engine, body, error, status):  # noqa: F811
    with pytest.raises(error) as caught:
        CatalogRoutes(catalog_engine).analyze_ingredients(body)
    assert caught.value.status == status


def test_odd_but_valid_ingredient_texts_are_analysed(catalog_engine):  # noqa: F811
    routes = CatalogRoutes(catalog_engine)
    for text in ("\x00\x01", "((((((", ",,,,", "*" * 500, "Wasser ☃ Glyzerin", "a" * 19_999, "May contain:"):
        answer = routes.analyze_ingredients({"ingredients": text})
        assert isinstance(answer, IngredientAnalysis)


HOSTILE_RECOMMEND = [
    {},
    {"conditions": []} | {"analysis": ANALYSIS},
    {"conditions": [{"name": "wrinkles"}]},
    {"conditions": [{"name": "acne", "severity": "extreme"}]},
    {"conditions": "acne"},
    {"conditions": [{"name": "acne"}] * 8},
    {"analysis": {"conditions": {"acne": {"present": "maybe"}}}},
    {"analysis": {"conditions": {"sunburn": {"present": True}}}},
    {"analysis": {"conditions": {"acne": {"present": True, "probability": 7}}}},
    {"analysis": []},
    {"conditions": [{"name": "acne"}], "skin_type": "purple"},
    {"conditions": [{"name": "acne"}], "max_price": -1},
    {"conditions": [{"name": "acne"}], "max_price": 1e308},
    {"conditions": [{"name": "acne"}], "currency": "dollars"},
    {"conditions": [{"name": "acne"}], "limit": 0},
    {"conditions": [{"name": "acne"}], "limit": 10_000},
    {"conditions": [{"name": "acne"}], "category": ""},
    {"conditions": [{"name": "acne"}], "category": "x" * 101},
    {"conditions": [{"name": "acne"}], "surprise": True},
]


@pytest.mark.parametrize("body", HOSTILE_RECOMMEND, ids=range(len(HOSTILE_RECOMMEND)))
def test_hostile_recommend_bodies_are_422_invalid_input(catalog_engine, body):  # noqa: F811
    with pytest.raises(InvalidCatalogRequest) as caught:
        CatalogRoutes(catalog_engine).recommend(body)
    assert (caught.value.status, caught.value.code) == (422, "invalid_input")
    assert str(caught.value)  # the message names the field


def test_nan_and_infinity_budgets_are_refused(catalog_engine):  # noqa: F811
    for raw in (
        b'{"conditions": [{"name": "acne"}], "max_price": NaN}',
        b'{"conditions": [{"name": "acne"}], "max_price": Infinity}',
    ):
        with pytest.raises(InvalidCatalogRequest):
            CatalogRoutes(catalog_engine).recommend(raw)


def test_sql_in_a_category_is_only_text(catalog_engine):  # noqa: F811
    routes = CatalogRoutes(catalog_engine)
    answer = routes.recommend({"conditions": [{"name": "acne"}], "category": "x' OR '1'='1"})
    assert answer.products == []
    assert routes.recommend({"conditions": [{"name": "acne"}]}).products  # the tables are intact


def test_the_request_and_answer_schemas_publish(catalog_engine):  # noqa: F811
    schema = RecommendRequest.model_json_schema()
    assert {"analysis", "conditions", "skin_type", "max_price"} <= set(schema["properties"])
    assert "no_catalog" in __import__("skinserve.errors", fromlist=["ERROR_CODES"]).ERROR_CODES
