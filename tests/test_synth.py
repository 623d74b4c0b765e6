"""The synthetic Shine stand-in: its layout, sidecars, determinism, flips and severity-graded cues."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from skinserve.data.synth import (
    FaceSpec,
    SynthConfig,
    SynthSummary,
    draw_face,
    face_geometry,
    write_synthetic_set,
)
from skinserve.labels import CONDITIONS, HEALTHY, HEALTHY_WORDS, SHINE_SEVERITY_WORDS, Severity

SMALL = SynthConfig(per_class=2, size=64, seed=3, flip_fraction=0.5, multi_label_fraction=0.3)
SIDECAR_KEYS = [
    "image_filename",
    "skin_condition",
    "severity",
    "generation_timestamp",
    "image_counter",
    "training_annotations",
    "classification_targets",
    "severity_targets",
    "demographics",
    "generation_details",
    "quality_metrics",
]
FACE = FaceSpec(fitzpatrick=3, age=34, gender="female", long_hair=True, seed=11)
CUE_SIZE = 96
VIEW_SIZE = 128  # the size the model trains on: visibility is judged there
# A pixel moved by >= 16 levels in some channel is a mark a viewer sees: ~3x the smallest step 8-bit sRGB shows
# between flat patches, and ~0.3 of ImageNet's per-channel std, so it also survives the model's normalisation.
VISIBLE_LEVELS = 16
# A mild cue must move >= 2.5 % of the bare skin (~90 px at 128 px: a dozen 2x3 px pores, or two forehead lines
# and the crow's feet) by that much. The generator whose mild pores, fine lines, texture and redness looked
# healthy at 128 px moved at most 1.2 % of the skin for those cues, and 0.0-0.2 % on Fitzpatrick VI.
MILD_VISIBLE_SHARE = 0.025


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return write_synthetic_set(tmp_path_factory.mktemp("synth") / "set", SMALL)


def all_folders() -> list[tuple[str, str]]:
    cells = [(c, w) for c in CONDITIONS for w in SHINE_SEVERITY_WORDS[c]]
    return cells + [(HEALTHY, w) for w in HEALTHY_WORDS]


def read_sidecar(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def originals(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if not p.stem.endswith("_flipped"))


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def with_conditions(**levels: Severity) -> FaceSpec:
    return dataclasses.replace(FACE, conditions=levels)


def pixels(spec: FaceSpec) -> np.ndarray:
    return np.asarray(draw_face(spec, CUE_SIZE), np.float32)


def head_mask(spec: FaceSpec) -> np.ndarray:
    geo = face_geometry(spec, CUE_SIZE)
    ys, xs = np.ogrid[:CUE_SIZE, :CUE_SIZE]
    return ((xs + 0.5 - geo.cx) / geo.rx) ** 2 + ((ys + 0.5 - geo.cy) / geo.ry) ** 2 <= 1.0


def background_mask(spec: FaceSpec) -> np.ndarray:
    """Pixels only background can hold: above the hair, and beside long hair down to the shoulders."""
    geo = face_geometry(spec, CUE_SIZE)
    ys, xs = np.ogrid[:CUE_SIZE, :CUE_SIZE]
    u, v = (xs + 0.5 - geo.cx) / geo.rx, (ys + 0.5 - geo.cy) / geo.ry
    return (v < -1.25) | ((np.abs(u) > 1.4) & (v < 1.2))


def bare_skin_mask(spec: FaceSpec, size: int) -> np.ndarray:
    """The head ellipse less every pixel that follows the hair colour (crown, brows): where skin cues must show."""
    geo = face_geometry(spec, size)
    ys, xs = np.ogrid[:size, :size]
    head = ((xs + 0.5 - geo.cx) / geo.rx) ** 2 + ((ys + 0.5 - geo.cy) / geo.ry) ** 2 <= 1.0
    magenta = np.asarray(draw_face(dataclasses.replace(spec, hair=(255, 0, 255)), size), np.int16)
    green = np.asarray(draw_face(dataclasses.replace(spec, hair=(0, 255, 0)), size), np.int16)
    return head & (np.abs(magenta - green).max(axis=2) == 0)


def skin_changes(condition: str, fitzpatrick: int) -> list[np.ndarray]:
    """Per bare-skin pixel, the largest channel change from the healthy face, for mild, moderate and severe."""
    spec = dataclasses.replace(FACE, fitzpatrick=fitzpatrick)
    skin = bare_skin_mask(spec, VIEW_SIZE)
    clear = np.asarray(draw_face(spec, VIEW_SIZE), np.float32)
    changes = []
    for level in (Severity.mild, Severity.moderate, Severity.severe):
        painted = np.asarray(draw_face(dataclasses.replace(spec, conditions={condition: level}), VIEW_SIZE), np.float32)
        changes.append(np.abs(painted - clear).max(axis=2)[skin])
    return changes


def cheek_slices(spec: FaceSpec) -> list[tuple[slice, slice]]:
    geo = face_geometry(spec, CUE_SIZE)
    boxes = [geo.box(s * 0.45, 0.2, 0.15, 0.1) for s in (-1, 1)]
    return [(slice(round(y0), round(y1)), slice(round(x0), round(x1))) for x0, y0, x1, y1 in boxes]


def cheek_red_minus_green(spec: FaceSpec) -> float:
    img = pixels(spec)
    return float(np.mean([np.mean(img[rows, cols, 0] - img[rows, cols, 1]) for rows, cols in cheek_slices(spec)]))


def red_spot_share(spec: FaceSpec) -> float:
    """Share of head pixels whose red-minus-green rose well above the same face drawn healthy."""
    flush = pixels(spec)
    clear = pixels(FACE)
    rise = (flush[..., 0] - flush[..., 1]) - (clear[..., 0] - clear[..., 1])
    return float((rise[head_mask(spec)] > 25).mean())


def fine_detail_energy(spec: FaceSpec) -> float:
    """Mean high-pass magnitude over the cheeks: what small dark dots add and smooth skin lacks."""
    grey = draw_face(spec, CUE_SIZE).convert("L")
    detail = np.abs(np.asarray(grey, np.float32) - np.asarray(grey.filter(ImageFilter.GaussianBlur(2)), np.float32))
    return float(np.mean([detail[rows, cols].mean() for rows, cols in cheek_slices(spec)]))


def test_every_condition_word_and_healthy_folder_holds_per_class_originals(small_set: SynthSummary) -> None:
    for condition, word in all_folders():
        folder = small_set.root / condition / word
        assert folder.is_dir(), folder
        assert len(originals(folder)) == SMALL.per_class, folder
    assert small_set.originals == SMALL.per_class * len(all_folders())


def test_every_png_has_a_sidecar_naming_it_and_every_sidecar_has_its_png(small_set: SynthSummary) -> None:
    pngs = sorted(small_set.root.rglob("*.png"))
    sidecars = sorted(small_set.root.rglob("*.json"))
    assert [p.with_suffix("") for p in pngs] == [p.with_suffix("") for p in sidecars]
    for png in pngs:
        assert read_sidecar(png.with_suffix(".json"))["image_filename"] == png.name


def test_summary_counts_agree_with_the_files_on_disk(small_set: SynthSummary) -> None:
    pngs = list(small_set.root.rglob("*.png"))
    flipped = [p for p in pngs if p.stem.endswith("_flipped")]
    assert small_set.images == len(pngs) == small_set.originals + small_set.flipped
    assert small_set.flipped == len(flipped) > 0
    for key, count in small_set.per_folder.items():
        assert len(list((small_set.root / key).glob("*.png"))) == count
    multi = [
        p
        for p in originals(small_set.root)
        if sum(read_sidecar(p.with_suffix(".json"))["classification_targets"].values()) == 2
    ]
    assert small_set.multi_label == len(multi)


def test_names_follow_the_pattern_and_counters_are_unique(small_set: SynthSummary) -> None:
    counters = []
    for png in originals(small_set.root):
        record = read_sidecar(png.with_suffix(".json"))
        counter = record["image_counter"]
        assert png.stem == f"{record['skin_condition']}_{record['severity']}_synth_s{SMALL.seed}_{counter:04d}"
        counters.append(counter)
    assert sorted(counters) == list(range(len(counters)))


def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    config = SynthConfig(per_class=1, size=48, seed=7, flip_fraction=0.5, multi_label_fraction=0.5)
    first = digests(write_synthetic_set(tmp_path / "a", config).root)
    second = digests(write_synthetic_set(tmp_path / "b", config).root)
    other = digests(write_synthetic_set(tmp_path / "c", dataclasses.replace(config, seed=8)).root)
    assert first == second
    png_bytes = {d for name, d in first.items() if name.endswith(".png")}
    assert png_bytes.isdisjoint(d for name, d in other.items() if name.endswith(".png"))


def test_flipped_twin_is_the_mirror_of_its_original_and_keeps_its_targets(small_set: SynthSummary) -> None:
    twins = sorted(small_set.root.rglob("*_flipped.png"))
    assert twins
    for twin in twins:
        original = twin.with_name(twin.name.replace("_flipped", ""))
        with Image.open(original) as a, Image.open(twin) as b:
            assert np.array_equal(np.asarray(ImageOps.mirror(a)), np.asarray(b))
        record, twin_record = read_sidecar(original.with_suffix(".json")), read_sidecar(twin.with_suffix(".json"))
        assert twin_record["is_flipped"] is True
        assert twin_record["original_filename"] == original.name
        assert isinstance(twin_record["flip_timestamp"], str)
        for key in ("classification_targets", "severity_targets", "demographics", "skin_condition", "severity"):
            assert twin_record[key] == record[key]
        # The real set's flips are 2-space indented, its originals 4-space.
        assert twin.with_suffix(".json").read_text().splitlines()[1].startswith('  "')
        assert original.with_suffix(".json").read_text().splitlines()[1].startswith('    "')


def test_flip_fraction_bounds_give_no_twins_or_a_twin_for_every_original(tmp_path: Path) -> None:
    none = write_synthetic_set(tmp_path / "none", SynthConfig(per_class=1, size=32, flip_fraction=0.0))
    every = write_synthetic_set(tmp_path / "all", SynthConfig(per_class=1, size=32, flip_fraction=1.0))
    assert none.flipped == 0 and not list(none.root.rglob("*_flipped.png"))
    assert every.flipped == every.originals


def test_sidecar_targets_agree_with_the_folder(small_set: SynthSummary) -> None:
    for png in originals(small_set.root):
        condition, word = png.parent.parent.name, png.parent.name
        record = read_sidecar(png.with_suffix(".json"))
        assert list(record)[: len(SIDECAR_KEYS)] == SIDECAR_KEYS
        assert (record["skin_condition"], record["severity"]) == (condition, word)
        assert list(record["classification_targets"]) == list(CONDITIONS) == list(record["severity_targets"])
        if condition == HEALTHY:
            assert not any(record["classification_targets"].values())
            assert set(record["severity_targets"].values()) == {"none"}
            assert record["training_annotations"]["severity_level"] == "healthy"
            assert record["dermatologist_notes"] == {"assessment": f"healthy_{word}", "concerns": "none"}
            continue
        assert record["classification_targets"][condition] is True
        assert record["severity_targets"][condition] == word
        assert record["training_annotations"]["severity_level"] == word
        assert 0.0 < record["training_annotations"]["affected_percentage"] <= 1.0
        assert record["training_annotations"]["feature_count"] > 0
        for other, present in record["classification_targets"].items():
            own_words = SHINE_SEVERITY_WORDS[other]
            assert record["severity_targets"][other] in (own_words if present else ("none",))


def test_multi_label_fraction_one_gives_every_condition_image_a_second_condition(tmp_path: Path) -> None:
    config = SynthConfig(per_class=1, size=32, flip_fraction=0.0, multi_label_fraction=1.0)
    summary = write_synthetic_set(tmp_path / "multi", config)
    for png in originals(summary.root):
        record = read_sidecar(png.with_suffix(".json"))
        present = [c for c, on in record["classification_targets"].items() if on]
        if record["skin_condition"] == HEALTHY:
            assert present == []
        else:
            assert len(present) == 2 and record["skin_condition"] in present
    assert summary.multi_label == summary.originals - len(HEALTHY_WORDS)


def test_sidecar_demographics_use_the_shine_words(small_set: SynthSummary) -> None:
    for png in originals(small_set.root):
        demographics = read_sidecar(png.with_suffix(".json"))["demographics"]
        assert demographics["age_group"] in {"young_adult", "adult", "middle_aged", "senior"}
        assert demographics["gender"] in {"female", "male"}
        assert "skin tone (Fitzpatrick " in demographics["skin_tone"]


def test_images_decode_as_rgb_at_the_configured_size(small_set: SynthSummary) -> None:
    for png in small_set.root.rglob("*.png"):
        with Image.open(png) as img:
            img.load()
            assert img.mode == "RGB"
            assert img.size == (SMALL.size, SMALL.size)


@pytest.mark.parametrize(
    "field, value",
    [("per_class", 0), ("size", 31), ("flip_fraction", -0.1), ("flip_fraction", 1.5), ("multi_label_fraction", 2.0)],
)
def test_out_of_range_config_is_refused_with_the_field_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**{field: value})


def test_redness_grows_faster_from_mild_to_severe_than_from_healthy_to_mild() -> None:
    healthy, mild, severe = (
        cheek_red_minus_green(spec)
        for spec in (FACE, with_conditions(redness=Severity.mild), with_conditions(redness=Severity.severe))
    )
    assert severe - mild > mild - healthy > 0


def test_acne_spots_grow_faster_from_mild_to_severe_than_from_healthy_to_mild() -> None:
    healthy, mild, severe = (
        red_spot_share(spec)
        for spec in (FACE, with_conditions(acne=Severity.mild), with_conditions(acne=Severity.severe))
    )
    assert healthy == 0.0
    assert severe - mild > mild - healthy > 0


def test_pore_detail_grows_faster_from_mild_to_severe_than_from_healthy_to_mild() -> None:
    healthy, mild, severe = (
        fine_detail_energy(spec)
        for spec in (FACE, with_conditions(pore_size=Severity.mild), with_conditions(pore_size=Severity.severe))
    )
    assert severe - mild > mild - healthy > 0


@pytest.mark.parametrize("condition", CONDITIONS)
def test_each_cue_changes_the_face_more_at_each_severity_and_leaves_the_background(condition: str) -> None:
    clear = pixels(FACE)
    head = head_mask(FACE)
    changes = []
    for level in (Severity.mild, Severity.moderate, Severity.severe):
        painted = pixels(with_conditions(**{condition: level}))
        changes.append(float(np.abs(painted - clear).sum(axis=2)[head].mean()))
        background = background_mask(FACE)
        assert np.array_equal(painted[background], clear[background])
    assert 0 < changes[0] < changes[1] < changes[2]


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("fitzpatrick", [1, 2, 3, 4, 5, 6])
def test_mild_cue_is_visible_on_every_skin_tone_and_each_level_shows_more(condition: str, fitzpatrick: int) -> None:
    # Bare skin only: aging also greys the hair, but the face must show it on its own (healthy seniors go grey).
    mild, moderate, severe = skin_changes(condition, fitzpatrick)
    shares = [float((change >= VISIBLE_LEVELS).mean()) for change in (mild, moderate, severe)]
    means = [float(change.mean()) for change in (mild, moderate, severe)]
    assert shares[0] >= MILD_VISIBLE_SHARE, shares
    assert shares[0] < shares[1] < shares[2], shares
    # Each level is a clear step in total change, not a nudge: at least 1.3x the one below.
    assert means[1] >= 1.3 * means[0] and means[2] >= 1.3 * means[1], means


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("fitzpatrick", [1, 6])
def test_marks_grow_in_contrast_with_severity_not_only_in_number(condition: str, fitzpatrick: int) -> None:
    # The level must show in any crop of the face, so the visible marks themselves get stronger, not just more.
    contrasts = [float(np.percentile(c[c >= VISIBLE_LEVELS], 75)) for c in skin_changes(condition, fitzpatrick)]
    assert contrasts[0] < contrasts[1] < contrasts[2], contrasts


@pytest.mark.parametrize("gender", ["female", "male"])
def test_head_spans_over_half_the_width_with_hair_and_shoulders_in_frame(gender: str) -> None:
    spec = FaceSpec(fitzpatrick=2, age=30, gender=gender, long_hair=gender == "female", seed=4)
    geo = face_geometry(spec, VIEW_SIZE)
    # The Shine prompt frames head and shoulders with the face filling ~40-60 % of the frame.
    assert 0.55 <= 2 * geo.rx / VIEW_SIZE <= 0.65
    img = np.asarray(draw_face(spec, VIEW_SIZE), np.float32)
    background = np.asarray(spec.background, np.float32)
    assert np.abs(img[0] - background).max() <= 2  # a margin above the hair
    shirt = np.abs(img[-1] - np.asarray(spec.shirt, np.float32)).max(axis=1) <= 2
    assert shirt.mean() > 0.3  # shoulders across the bottom row


@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("gender, age", [("female", 30), ("male", 45), ("male", 58)])
def test_short_hair_stays_on_the_head_beside_the_jaw_only_background_shows(size: int, gender: str, age: int) -> None:
    # Guards against Pillow's chord fill, which once painted a hair-coloured bar across the jaw at some sizes.
    spec = FaceSpec(fitzpatrick=4, age=age, gender=gender, seed=21)
    img = np.asarray(draw_face(spec, size), np.float32)
    geo = face_geometry(spec, size)
    # Down to just below the chin: the larger head leaves the shoulders starting at ~1.3 head half-heights.
    rows = np.arange(round(geo.cy + 0.6 * geo.ry), round(geo.cy + 1.15 * geo.ry))
    # The background is a vertical ramp from the spec's colour down to 90 % of it.
    ramp = 1.0 - 0.1 * (rows + 0.25) / size
    expected = np.asarray(spec.background, np.float32) * ramp[:, None, None]
    for cols in (slice(0, round(geo.cx - 1.2 * geo.rx)), slice(round(geo.cx + 1.2 * geo.rx), size)):
        assert np.abs(img[rows, cols] - expected).max() <= 2
