"""The Shine-layout writer: plans a set of faces per (condition, severity word) cell and writes images and sidecars."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

from skinserve.data.synth.conditions import render
from skinserve.data.synth.face import AGE_GROUPS, GENDERS, CueStats, FaceSpec, age_group, rgb, skin_tone_words
from skinserve.labels import CONDITIONS, HEALTHY, HEALTHY_WORDS, SHINE_SEVERITY_WORDS, Severity

GENERATOR = "skinserve.data.synth"
_GREY_CHANCE = (0.0, 0.08, 0.35, 0.8)  # per age group
_HAIR = ((28, 24, 22), (62, 42, 30), (104, 70, 44), (196, 164, 108), (136, 68, 38))
_SHIRTS = ((64, 88, 128), (120, 40, 50), (50, 100, 80), (90, 90, 96), (200, 190, 170), (40, 40, 48))


@dataclass(frozen=True)
class SynthConfig:
    per_class: int = 5  # images per (condition, severity word) cell, and per healthy word
    size: int = 128  # square image side in px
    seed: int = 0
    flip_fraction: float = 0.25  # share of originals that also get a mirrored `<name>_flipped` twin
    multi_label_fraction: float = 0.2  # share of condition images that also show a second condition

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"SynthConfig.per_class must be at least 1, got {self.per_class}")
        if self.size < 32:
            raise ValueError(f"SynthConfig.size must be at least 32 px, got {self.size}")
        if self.seed < 0:
            raise ValueError(f"SynthConfig.seed must be non-negative, got {self.seed}")
        for name in ("flip_fraction", "multi_label_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthConfig.{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    images: int  # all images written, flips included
    originals: int
    flipped: int
    multi_label: int
    per_folder: dict[str, int]  # "acne/mild" -> images in that folder, flips included


@dataclass(frozen=True)
class _Plan:
    """One original image to write: where, under which name, and what to draw."""

    name: str
    condition: str  # the folder's condition, or "healthy"
    word: str
    counter: int
    index: int
    spec: FaceSpec
    flip: bool


def write_synthetic_set(out: Path, config: SynthConfig) -> SynthSummary:
    """Draw the set under `out` in the Shine layout; same-named files are overwritten, other files left alone."""
    root = Path(out)
    per_folder: dict[str, int] = {}
    originals = flipped = multi_label = 0
    for plan in _plans(config):
        folder = root / plan.condition / plan.word
        folder.mkdir(parents=True, exist_ok=True)
        _write_image(folder, plan, config)
        key = f"{plan.condition}/{plan.word}"
        per_folder[key] = per_folder.get(key, 0) + 1 + plan.flip
        originals += 1
        flipped += plan.flip
        multi_label += len(plan.spec.conditions) > 1
    return SynthSummary(root, originals + flipped, originals, flipped, multi_label, per_folder)


def _cells() -> list[tuple[int, int, str, str]]:
    """(condition index, word index, folder condition, word) for every folder; healthy comes last."""
    cells = [(i, j, c, w) for i, c in enumerate(CONDITIONS) for j, w in enumerate(SHINE_SEVERITY_WORDS[c])]
    return cells + [(len(CONDITIONS), j, HEALTHY, w) for j, w in enumerate(HEALTHY_WORDS)]


def _plans(config: SynthConfig) -> list[_Plan]:
    plans = []
    for i, j, condition, word in _cells():
        for k in range(config.per_class):
            # One generator per image keyed by its cell: any image can be redrawn alone, and per_class grows a
            # cell without changing the images already in it.
            rng = np.random.default_rng([config.seed, i, j, k])
            conditions = _sample_conditions(rng, config, condition, j)
            spec = _sample_face(rng, conditions)
            flip = bool(rng.random() < config.flip_fraction)
            name = f"{condition}_{word}_synth_s{config.seed}_{len(plans):04d}"
            plans.append(_Plan(name, condition, word, len(plans), k, spec, flip))
    return plans


def _sample_conditions(
    rng: np.random.Generator, config: SynthConfig, condition: str, word_index: int
) -> dict[str, Severity]:
    if condition == HEALTHY:
        return {}
    chosen = {condition: Severity(word_index + 1)}
    if rng.random() < config.multi_label_fraction:
        others = [c for c in CONDITIONS if c != condition]
        chosen[others[int(rng.integers(len(others)))]] = Severity(int(rng.integers(1, 4)))
    return chosen


def _sample_face(rng: np.random.Generator, conditions: Mapping[str, Severity]) -> FaceSpec:
    group = int(rng.integers(len(AGE_GROUPS)))
    age = int(rng.integers(AGE_GROUPS[group][2], AGE_GROUPS[group][3] + 1))
    fitzpatrick = int(rng.integers(1, 7))
    gender = GENDERS[int(rng.integers(len(GENDERS)))]
    palette = _HAIR if fitzpatrick <= 2 else _HAIR[:3]  # blond and auburn are rare on darker skin types
    natural = palette[int(rng.integers(len(palette)))]
    hair = rgb(np.full(3, rng.uniform(140, 215))) if rng.random() < _GREY_CHANCE[group] else natural
    long_hair = bool(rng.random() < (0.75 if gender == "female" else 0.1))
    background = rgb(rng.uniform(222, 246) + rng.uniform(-6, 6, 3))
    # Less vertical play than sideways: hair to chin fills ~75 % of the height, and more would crop the hair.
    offset = (float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03)))
    scale, tone_shift = float(rng.uniform(0.94, 1.06)), float(rng.uniform(-0.04, 0.04))
    shirt = _SHIRTS[int(rng.integers(len(_SHIRTS)))]
    return FaceSpec(
        fitzpatrick=fitzpatrick,
        age=age,
        gender=gender,
        offset=offset,
        scale=scale,
        tone_shift=tone_shift,
        hair=hair,
        long_hair=long_hair,
        background=background,
        shirt=shirt,
        conditions=conditions,
        seed=int(rng.integers(2**31)),
    )


def _write_image(folder: Path, plan: _Plan, config: SynthConfig) -> None:
    image, stats = render(plan.spec, config.size)
    record = _sidecar(plan, stats, config)
    image.save(folder / f"{plan.name}.png", format="PNG")  # Pillow writes no time chunk unless asked
    _write_json(folder / f"{plan.name}.json", record, indent=4)
    if plan.flip:
        ImageOps.mirror(image).save(folder / f"{plan.name}_flipped.png", format="PNG")
        twin = {
            **record,
            "image_filename": f"{plan.name}_flipped.png",
            "is_flipped": True,
            "original_filename": f"{plan.name}.png",
            "flip_timestamp": _timestamp(config),
        }
        _write_json(folder / f"{plan.name}_flipped.json", twin, indent=2)  # the real set's flips use 2 spaces


def _write_json(path: Path, record: dict[str, Any], indent: int) -> None:
    path.write_text(json.dumps(record, indent=indent) + "\n", encoding="utf-8")


def _timestamp(config: SynthConfig) -> str:
    # Fixed per seed, never the clock: the same config must write the same bytes.
    return f"synthetic_s{config.seed}"


def _severity_word(condition: str, severity: Severity) -> str:
    return "none" if severity is Severity.none else SHINE_SEVERITY_WORDS[condition][int(severity) - 1]


def _sidecar(plan: _Plan, stats: Mapping[str, CueStats], config: SynthConfig) -> dict[str, Any]:
    """The sidecar in the real set's "current" shape, keys in its order."""
    primary = stats.get(plan.condition)
    group, age_range = age_group(plan.spec.age)
    severities = {c: plan.spec.conditions.get(c, Severity.none) for c in CONDITIONS}
    record: dict[str, Any] = {
        "image_filename": f"{plan.name}.png",
        "skin_condition": plan.condition,
        "severity": plan.word,
        "generation_timestamp": _timestamp(config),
        "image_counter": plan.counter,
        "training_annotations": {
            "condition_detected": primary is not None,
            "severity_level": plan.word if primary is not None else "healthy",
            "confidence_score": 1.0,
            "affected_percentage": primary.affected if primary is not None else 0.0,
            "feature_count": primary.feature_count if primary is not None else 0,
        },
        "classification_targets": {c: s is not Severity.none for c, s in severities.items()},
        "severity_targets": {c: _severity_word(c, s) for c, s in severities.items()},
        "demographics": {
            "age_group": group,
            "age_range": age_range,
            "skin_tone": skin_tone_words(plan.spec.fitzpatrick),
            "gender": plan.spec.gender,
            "variation_index": plan.index,
        },
        "generation_details": {"generator": GENERATOR, "seed": config.seed, "size": config.size},
        "quality_metrics": {"image_resolution": f"{config.size}x{config.size}"},
    }
    if plan.condition == HEALTHY:
        record["dermatologist_notes"] = {"assessment": f"healthy_{plan.word}", "concerns": "none"}
    return record
