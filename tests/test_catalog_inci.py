"""The INCI parser's hard cases: commas in names and brackets, synonyms, percentages, may-contain, footnotes,
variation headings and marketing lines."""

from __future__ import annotations

from skinserve.catalog.inci import normalize_inci, parse_ingredients


def names(parsed, variation=None):
    return [i.normalized for v in parsed.variations if variation is None or v.name == variation for i in v.ingredients]


def test_commas_inside_parentheses_and_between_digits_do_not_split():
    parsed = parse_ingredients(
        "Butyrospermum Parkii (Shea) Butter, 1,2-Hexanediol, Iron Oxides (CI 77491, CI 77492), Glycerin"
    )
    assert names(parsed) == [
        "butyrospermum parkii (shea) butter",
        "1,2-hexanediol",
        "iron oxides (ci 77491, ci 77492)",
        "glycerin",
    ]


def test_slashed_and_bracketed_synonyms_become_alternatives():
    water, inverse, fragrance = (
        parse_ingredients("Aqua/Water/Eau, Water (Aqua), Parfum (Fragrance)").variations[0].ingredients
    )
    assert water.normalized == "aqua/water/eau" and water.alternatives == ("aqua", "water", "eau")
    assert inverse.alternatives == ("water", "aqua")
    assert fragrance.alternatives == ("parfum", "fragrance")


def test_a_slash_inside_an_inci_name_keeps_the_whole_name_first():
    [entry] = parse_ingredients("Caprylic/Capric Triglyceride").variations[0].ingredients
    assert entry.candidates[0] == "caprylic/capric triglyceride"


def test_percentages_are_kept_and_removed_from_the_name():
    entries = parse_ingredients("Salicylic Acid 2%, Niacinamide (10%), 0.5 % Retinol, Zinc Oxide 9,5%").variations[0]
    assert [(e.normalized, e.percent) for e in entries.ingredients] == [
        ("salicylic acid", 2.0),
        ("niacinamide", 10.0),
        ("retinol", 0.5),
        ("zinc oxide", 9.5),
    ]


def test_may_contain_flags_the_rest_of_the_list_and_brackets_flag_only_their_inside():
    parsed = parse_ingredients("Isododecane, Dimethicone. May Contain (+/-): Mica, CI 77891")
    assert [(e.normalized, e.may_contain) for e in parsed.variations[0].ingredients] == [
        ("isododecane", False),
        ("dimethicone", False),
        ("mica", True),
        ("ci 77891", True),
    ]
    bracket = parse_ingredients("Water, Glycerin [+/- CI 77891, CI 77491], Tocopherol").variations[0].ingredients
    assert [(e.normalized, e.may_contain) for e in bracket] == [
        ("water", False),
        ("glycerin", False),
        ("ci 77891", True),
        ("ci 77491", True),
        ("tocopherol", False),
    ]


def test_footnote_marks_are_kept_and_footnote_lines_are_not_ingredients():
    parsed = parse_ingredients("Aloe Barbadensis Leaf Juice*, Glycerin**, Tocopherol. *Organic\n**Natural origin")
    entries = parsed.variations[0].ingredients
    assert [(e.normalized, e.footnote) for e in entries] == [
        ("aloe barbadensis leaf juice", "*"),
        ("glycerin", "**"),
        ("tocopherol", None),
    ]
    assert [i.reason for i in parsed.ignored] == ["footnote", "footnote"]


def test_variation_headings_start_new_lists():
    parsed = parse_ingredients(["Product variation 1:", "Water, Glycerin", "Product variation 2:", "Talc, Mica"])
    assert [v.name for v in parsed.variations] == ["Product variation 1", "Product variation 2"]
    assert names(parsed, "Product variation 2") == ["talc", "mica"]
    inline = parse_ingredients(["Mini Size: Water, Retinol", "Mini Size: Water, Bakuchiol"])
    assert [v.name for v in inline.variations] == ["Mini Size", "Mini Size (2)"]


def test_marketing_lines_are_reported_and_left_out():
    parsed = parse_ingredients(
        [
            "-Niacinamide: Visibly minimizes the look of pores.",
            "Water, Niacinamide, Zinc PCA",
            "Clean at Sephora products are formulated without parabens, sulfates SLS & SLES, phthalates.",
            "Please be aware that ingredient lists may change or vary from time to time.",
        ]
    )
    assert names(parsed) == ["water", "niacinamide", "zinc pca"]
    assert len(parsed.ignored) == 3


def test_labels_and_drug_facts_sections_are_not_ingredients():
    parsed = parse_ingredients(
        "Ingredients: Water, Glycerin\nActive Ingredients: Zinc Oxide 20%\nInactive: Water, Dimethicone"
    )
    entries = parsed.variations[0].ingredients
    assert [e.normalized for e in entries] == ["water", "glycerin", "zinc oxide", "water", "dimethicone"]
    assert [e.section for e in entries] == [None, None, "active", "inactive", "inactive"]


def test_trade_blends_joined_by_and_are_separate_entries():
    entries = parse_ingredients("Xanthan Gum (and) Sodium Hyaluronate").variations[0].ingredients
    assert [e.normalized for e in entries] == ["xanthan gum", "sodium hyaluronate"]


def test_normalisation_folds_case_accents_dashes_and_spacing():
    assert normalize_inci("  Cire  d’Abeille – Beeswax ") == "cire d'abeille-beeswax"
    assert normalize_inci("ALCOHOL DENAT.") == "alcohol denat"
    assert normalize_inci("PEG - 40 Hydrogenated  Castor Oil") == "peg-40 hydrogenated castor oil"


def test_text_without_ingredients_parses_to_nothing():
    assert parse_ingredients("").variations == []
    assert parse_ingredients("12, 3.5, %").variations == []
