"""Matching a label's entries to COSING (exact, synonym, fuzzy, none) and the analysis built on it."""

from __future__ import annotations

import pytest

from skinserve.catalog.analysis import MAX_INGREDIENTS, TooManyIngredients, analyze_ingredient_text
from skinserve.catalog.inci import parse_ingredients
from skinserve.catalog.knowledge import KnowledgeError, default_knowledge, load_knowledge
from skinserve.catalog.matching import IngredientIndex, ReferenceIngredient, load_ingredient_index
from tests.catalog_data import catalog_engine  # noqa: F401  (fixture)


def _index(*names: str, synonyms: dict[str, tuple[str, ...]] | None = None) -> IngredientIndex:
    synonyms = synonyms or {}
    reference = [
        ReferenceIngredient(id=i, name=n.upper(), normalized_name=n, synonyms=synonyms.get(n, ()))
        for i, n in enumerate(names, start=1)
    ]
    return IngredientIndex(reference, default_knowledge())


def _entry(text: str):
    return parse_ingredients(text).variations[0].ingredients[0]


INDEX = _index(
    "aqua", "glycerin", "niacinamide", "sodium hyaluronate", "peg-60 hydrogenated castor oil", "parfum",
    synonyms={"glycerin": ("glycerol",), "niacinamide": ("nicotinamide",)},
)  # fmt: skip


@pytest.mark.parametrize(
    ("label", "kind", "canonical", "matched_text"),
    [
        ("Niacinamide", "exact", "niacinamide", "niacinamide"),
        ("Water (Aqua)", "exact", "aqua", "aqua"),
        ("Aqua/Water/Eau", "exact", "aqua", "aqua"),
        ("Glycerol", "synonym", "glycerin", "glycerol"),
        ("Nicotinamide", "synonym", "niacinamide", "nicotinamide"),
        ("Water", "synonym", "aqua", "water"),
        ("Fragrance", "synonym", "parfum", "fragrance"),
        ("Sodium Hyaluronte", "fuzzy", "sodium hyaluronate", "sodium hyaluronte"),
        ("Unobtainium Seed Extract", "none", "unobtainium seed extract", None),
    ],
)
def test_each_match_kind(label, kind, canonical, matched_text):
    match = INDEX.resolve(_entry(label))
    assert (match.kind, match.canonical, match.matched_text) == (kind, canonical, matched_text)
    assert (match.ingredient is not None) == (kind != "none")


def test_a_fuzzy_match_carries_its_score():
    match = INDEX.resolve(_entry("Niacinamid"))
    assert match.kind == "fuzzy" and 90 <= match.score < 100


def test_a_close_spelling_with_other_numbers_is_not_a_match():
    assert INDEX.resolve(_entry("PEG-40 Hydrogenated Castor Oil")).kind == "none"
    assert INDEX.resolve(_entry("PEG-60 Hydrogenated Castr Oil")).kind == "fuzzy"


def test_short_names_are_never_fuzzy_matched():
    assert _index("mica").resolve(_entry("Mila")).kind == "none"


def test_without_cosing_an_active_is_still_known_by_its_name():
    empty = IngredientIndex([], default_knowledge())
    analysis = analyze_ingredient_text("Water, Retinal, Alcohol Denat. (SD Alcohol 39C)", empty)
    retinal, alcohol = analysis.ingredients[1], analysis.ingredients[2]
    assert retinal.match.kind == "none" and "fine_lines_wrinkles" in [t.condition for t in retinal.targets]
    assert alcohol.match.canonical == "alcohol denat"
    assert analysis.unsuitable_for == {"dry": ["Alcohol Denat. (SD Alcohol 39C)"], "sensitive": [alcohol.name]}
    assert analysis.reference_ingredients == 0


def test_every_knowledge_line_carries_a_reason_and_known_names():
    knowledge = default_knowledge()
    assert knowledge.active(["salicylic acid"]).targets[0].condition == "acne"
    niacinamide = {t.condition for t in knowledge.active(["niacinamide"]).targets}
    assert {"hyperpigmentation", "pore_size", "redness"} <= niacinamide
    for name in ("retinol", "retinal"):
        assert {"fine_lines_wrinkles", "aging", "textured_skin"} <= {
            t.condition for t in knowledge.active([name]).targets
        }
    assert all(t.reason for a in knowledge.actives for t in a.targets)


def test_a_knowledge_file_with_an_unknown_condition_is_refused(tmp_path):
    bad = tmp_path / "k.yaml"
    bad.write_text("version: 1\nactives:\n  - inci: X\n    targets:\n      wrinkles: because\n")
    with pytest.raises(KnowledgeError, match="unknown condition .wrinkles."):
        load_knowledge(bad)


def test_an_analysis_against_the_catalog_shows_functions_restrictions_and_targets(catalog_engine):  # noqa: F811
    index = load_ingredient_index(catalog_engine, default_knowledge())
    text = "Aqua/Water/Eau, Glycerin, Niacinamid 5%, Salicylic Acid 2%, Hydroquinone, Parfum*. *Organic"
    analysis = analyze_ingredient_text(text, index)
    by_name = {i.name: i for i in analysis.ingredients}
    assert by_name["Aqua/Water/Eau"].match.inci_name == "AQUA"
    assert by_name["Glycerin"].functions[:2] == ["denaturant", "fragrance"]
    niacinamide = by_name["Niacinamid"]
    assert (niacinamide.match.kind, niacinamide.match.inci_name, niacinamide.percent) == ("fuzzy", "NIACINAMIDE", 5.0)
    salicylic = by_name["Salicylic Acid"].restriction
    assert (salicylic.annex, salicylic.restricted, salicylic.refs) == ("III", True, ["III/98", "V/3"])
    assert "2,0 %" in salicylic.conditions
    assert by_name["Hydroquinone"].restriction.prohibited
    assert by_name["Parfum"].footnote == "*"
    assert analysis.prohibited == ["Hydroquinone"] and analysis.restricted == ["Salicylic Acid"]
    assert analysis.conditions["acne"] == ["Niacinamid", "Salicylic Acid"]
    assert analysis.match_counts == {"exact": 5, "fuzzy": 1}
    assert [i.reason for i in analysis.ignored] == ["footnote"]


def test_an_analysis_refuses_more_entries_than_it_analyses():
    with pytest.raises(TooManyIngredients) as caught:
        analyze_ingredient_text(", ".join(f"Ingredient {i}" for i in range(MAX_INGREDIENTS + 1)), INDEX)
    assert caught.value.status == 422


def test_fuzzy_lookups_per_analysis_are_bounded():
    from skinserve.catalog.analysis import MAX_FUZZY_LOOKUPS

    text = ", ".join(["Niacinamid"] * (MAX_FUZZY_LOOKUPS + 5) + ["Niacinamide"])
    counts = analyze_ingredient_text(text, INDEX).match_counts
    assert counts == {"fuzzy": MAX_FUZZY_LOOKUPS, "none": 5, "exact": 1}
