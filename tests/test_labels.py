"""The label schema: condition order, severity words per condition, optional targets."""

from __future__ import annotations

import pytest

from skinserve.labels import (
    CONDITIONS,
    ConditionLabel,
    LabelError,
    Severity,
    Targets,
    all_absent,
    fitzpatrick_from_text,
    is_healthy_word,
    parse_fitzpatrick,
    parse_severity,
    validate_targets,
)


def test_conditions_have_the_fixed_order():
    assert CONDITIONS == (
        "acne",
        "fine_lines_wrinkles",
        "aging",
        "hyperpigmentation",
        "textured_skin",
        "redness",
        "pore_size",
    )


def test_severity_is_ordinal():
    assert Severity.none < Severity.mild < Severity.moderate < Severity.severe
    assert [s.value for s in Severity] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("condition", "word", "level"),
    [
        ("aging", "early_signs", Severity.mild),
        ("aging", "moderate", Severity.moderate),
        ("aging", "advanced", Severity.severe),
        ("textured_skin", "slight", Severity.mild),
        ("textured_skin", "severe", Severity.severe),
        ("acne", "mild", Severity.mild),
        ("redness", "severe", Severity.severe),
        ("pore_size", "none", Severity.none),
    ],
)
def test_shine_words_map_onto_the_scale(condition, word, level):
    assert parse_severity(condition, word, "x.json") is level


@pytest.mark.parametrize(("condition", "word"), [("textured_skin", "mild"), ("aging", "severe"), ("acne", "awful")])
def test_unknown_word_names_the_file_and_the_word(condition, word):
    with pytest.raises(LabelError) as caught:
        parse_severity(condition, word, "some/dir/img_1.json")
    message = str(caught.value)
    assert "some/dir/img_1.json" in message
    assert repr(word) in message
    assert condition in message


def test_healthy_words():
    assert all(is_healthy_word(w) for w in ("clear_skin", "minimal_concerns", "well_maintained"))
    assert not is_healthy_word("mild")


def test_healthy_needs_every_condition_known_absent():
    assert Targets(conditions=all_absent()).healthy is True
    partial = {c: ConditionLabel.absent() for c in CONDITIONS[:4]}
    assert Targets(conditions=partial).healthy is None
    assert Targets(conditions={"acne": ConditionLabel.at(Severity.mild)}).healthy is False


def test_stratum_names_the_condition_severity_cell():
    labels = all_absent() | {"acne": ConditionLabel.at(Severity.mild), "redness": ConditionLabel.at(Severity.severe)}
    assert Targets(conditions=labels).stratum() == "acne:mild+redness:severe"
    assert Targets(conditions=all_absent()).stratum() == "healthy"
    assert Targets(skin_type="oily").stratum() == "skin_type:oily"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fair skin tone (Fitzpatrick II)", 2),
        ("tan brown skin tone (Fitzpatrick V)", 5),
        ("Fitzpatrick type 3", 3),
        ("olive skin tone", None),
        (None, None),
    ],
)
def test_fitzpatrick_is_read_from_skin_tone_text(text, expected):
    assert fitzpatrick_from_text(text) == expected


def test_fitzpatrick_outside_one_to_six_is_refused():
    assert parse_fitzpatrick("IV", "m.csv:2") == 4
    assert parse_fitzpatrick("", "m.csv:2") is None
    with pytest.raises(LabelError, match="m.csv:3"):
        parse_fitzpatrick("7", "m.csv:3")


def test_validate_rejects_unknown_skin_type_and_contradictions():
    with pytest.raises(LabelError, match="skin type 'greasy'"):
        validate_targets(Targets(skin_type="greasy"), "f")
    with pytest.raises(LabelError, match="contradicts"):
        validate_targets(Targets(conditions={"acne": ConditionLabel(present=False, severity=Severity.mild)}), "f")
