"""Every real Shine sidecar in the shared sample parses to the targets its README describes."""

from __future__ import annotations

import pytest

from skinserve.data.shine import parse_sidecar, read_shine
from skinserve.labels import CONDITIONS, LabelError, Severity

from .conftest import SHINE_SAMPLE

# relpath -> (condition present or "healthy", severity, conditions known, Fitzpatrick, group id)
# The 20250930 balanced batch names only 4 conditions; the other 3 must stay unknown.
EXPECTED = {
    "acne/mild/acne_mild_0.json": ("acne", "mild", 7, None, "acne_mild_0"),
    "acne/mild/acne_mild_0_flipped.json": ("acne", "mild", 7, None, "acne_mild_0"),
    "acne/mild/acne_mild_20250910_163628_0002.json": ("acne", "mild", 7, None, "acne_mild_20250910_163628_0002"),
    "acne/moderate/acne_moderate_20250910_163628_0012.json": (
        "acne",
        "moderate",
        7,
        None,
        "acne_moderate_20250910_163628_0012",
    ),
    "acne/moderate/acne_moderate_20250928_151250_0015_flipped.json": (
        "acne",
        "moderate",
        7,
        None,
        "acne_moderate_20250928_151250_0015",
    ),
    "aging/advanced/aging_advanced_20250910_163628_0080.json": (
        "aging",
        "severe",
        7,
        None,
        "aging_advanced_20250910_163628_0080",
    ),
    "aging/advanced/aging_advanced_20250910_163628_0083.json": (
        "aging",
        "severe",
        7,
        None,
        "aging_advanced_20250910_163628_0083",
    ),
    "aging/early_signs/aging_early_signs_20250928_151250_0062.json": (
        "aging",
        "mild",
        7,
        None,
        "aging_early_signs_20250928_151250_0062",
    ),
    "fine_lines_wrinkles/severe/fine_lines_wrinkles_severe_20250910_163628_0055.json": (
        "fine_lines_wrinkles",
        "severe",
        7,
        None,
        "fine_lines_wrinkles_severe_20250910_163628_0055",
    ),
    "healthy/clear_skin/healthy_clear_skin_0000.json": ("healthy", "none", 7, None, "healthy_clear_skin_0000"),
    "healthy/clear_skin/healthy_clear_skin_0000_flipped.json": ("healthy", "none", 7, None, "healthy_clear_skin_0000"),
    "hyperpigmentation/mild/hyperpigmentation_mild_20250930_221854_0383.json": (
        "hyperpigmentation",
        "mild",
        4,
        2,
        "hyperpigmentation_mild_20250930_221854_0383",
    ),
    "hyperpigmentation/moderate/hyperpigmentation_moderate_20250910_163628_0100.json": (
        "hyperpigmentation",
        "moderate",
        7,
        None,
        "hyperpigmentation_moderate_20250910_163628_0100",
    ),
    "hyperpigmentation/severe/hyperpigmentation_severe_20250910_163628_0114_flipped.json": (
        "hyperpigmentation",
        "severe",
        7,
        None,
        "hyperpigmentation_severe_20250910_163628_0114",
    ),
    "pore_size/mild/pore_size_mild_20250930_221854_0122.json": (
        "pore_size",
        "mild",
        4,
        5,
        "pore_size_mild_20250930_221854_0122",
    ),
    "pore_size/moderate/pore_size_moderate_0.json": ("pore_size", "moderate", 7, None, "pore_size_moderate_0"),
    "pore_size/moderate/pore_size_moderate_20250910_163628_0190_flipped.json": (
        "pore_size",
        "moderate",
        7,
        None,
        "pore_size_moderate_20250910_163628_0190",
    ),
    "redness/mild/redness_mild_20250930_221854_0000_flipped.json": (
        "redness",
        "mild",
        4,
        4,
        "redness_mild_20250930_221854_0000",
    ),
    "redness/moderate/redness_moderate_20250910_163628_0163.json": (
        "redness",
        "moderate",
        7,
        None,
        "redness_moderate_20250910_163628_0163",
    ),
    "redness/severe/redness_severe_20250910_163628_0170.json": (
        "redness",
        "severe",
        7,
        None,
        "redness_severe_20250910_163628_0170",
    ),
    "textured_skin/severe/textured_skin_severe_20250930_221854_0343_flipped.json": (
        "textured_skin",
        "severe",
        4,
        5,
        "textured_skin_severe_20250930_221854_0343",
    ),
    "textured_skin/slight/textured_skin_slight_20250910_163628_0120.json": (
        "textured_skin",
        "mild",
        7,
        None,
        "textured_skin_slight_20250910_163628_0120",
    ),
    "textured_skin/slight/textured_skin_slight_20250910_163628_0124.json": (
        "textured_skin",
        "mild",
        7,
        None,
        "textured_skin_slight_20250910_163628_0124",
    ),
}
# Records the reader must report, with words the reason must contain.
REPORTED = {
    "healthy/acne_mild_20250910_163628_0000.json": ("acne", "healthy"),
    "textured_skin/mild/acne_mild_20250910_163628_0001.json": ("'mild'", "textured_skin"),
}


def test_the_table_covers_every_sidecar_in_the_sample():
    on_disk = {p.relative_to(SHINE_SAMPLE).as_posix() for p in SHINE_SAMPLE.rglob("*.json")}
    sidecars = {p for p in on_disk if not p.startswith("summaries/")}
    assert sidecars == set(EXPECTED) | set(REPORTED)


@pytest.mark.parametrize("relpath", sorted(EXPECTED))
def test_sidecar_parses_to_its_targets(relpath: str):
    condition, severity, known, fitzpatrick, group = EXPECTED[relpath]
    record = parse_sidecar(SHINE_SAMPLE / relpath, SHINE_SAMPLE)
    targets = record.targets
    assert len(targets.conditions) == known
    if condition == "healthy":
        assert targets.healthy is True
        assert targets.present_conditions() == []
    else:
        assert targets.present_conditions() == [condition]
        assert targets.conditions[condition].severity == Severity[severity]
        absent = [c for c in targets.conditions if c != condition]
        assert all(targets.conditions[c] == targets.conditions[c].absent() for c in absent)
    assert targets.fitzpatrick == fitzpatrick
    assert record.group_id == group
    assert record.path.name == relpath.rsplit("/", 1)[1].replace(".json", ".png")


def test_balanced_batch_leaves_unnamed_conditions_unknown_not_absent():
    record = parse_sidecar(
        SHINE_SAMPLE / "hyperpigmentation/mild/hyperpigmentation_mild_20250930_221854_0383.json", SHINE_SAMPLE
    )
    unknown = [c for c in CONDITIONS if c not in record.targets.conditions]
    assert unknown == ["acne", "fine_lines_wrinkles", "aging"]
    assert record.targets.healthy is False  # one is present; "healthy" needs all 7 known absent


def test_demographics_are_carried():
    record = parse_sidecar(SHINE_SAMPLE / "aging/advanced/aging_advanced_20250910_163628_0080.json", SHINE_SAMPLE)
    demographics = record.targets.demographics
    assert (demographics.age_group, demographics.age_range, demographics.gender) == ("young_adult", "18-25", "male")
    assert demographics.skin_tone == "very fair skin tone"


@pytest.mark.parametrize("relpath", sorted(REPORTED))
def test_untrustworthy_sidecar_is_an_error_naming_the_file(relpath: str):
    with pytest.raises(LabelError) as caught:
        parse_sidecar(SHINE_SAMPLE / relpath, SHINE_SAMPLE)
    assert caught.value.source == relpath
    for word in REPORTED[relpath]:
        assert word in caught.value.reason


def test_reader_reports_disagreements_and_missing_images_instead_of_using_them():
    result = read_shine(SHINE_SAMPLE)
    assert result.records == []  # the sample has no images
    reasons = {p.path: p.reason for p in result.problems}
    assert set(REPORTED) <= set(reasons)
    missing = {path for path, reason in reasons.items() if reason.startswith("image missing")}
    assert missing == {relpath.replace(".json", ".png") for relpath in EXPECTED}


def test_reader_without_image_check_returns_every_trustworthy_record():
    result = read_shine(SHINE_SAMPLE, require_images=False)
    assert sorted(r.relpath.replace(".png", ".json") for r in result.records) == sorted(EXPECTED)
    assert sorted(p.path for p in result.problems) == sorted(REPORTED)
