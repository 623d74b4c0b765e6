"""The Shine app's `POST /infer` answer: concerns for the 7 conditions, region concerns, metadata, recommendations.

The shape is the Shine inference server's (`concerns`: name, severity, percentage, description; `region_concerns`
keyed left_cheek, right_cheek, forehead, t_zone, chin, or null) plus the integration guide's `metadata` and
`recommendations`. Names are Shine's display form of a condition ("Fine Lines Wrinkles"), severity words are the
Shine set's own per condition (skinserve.labels.SHINE_SEVERITY_WORDS; "none" when the condition is absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from skinserve.labels import CONDITIONS, SHINE_SEVERITY_WORDS, SKIN_TYPES, Severity
from skinserve.serve.quality import QualityAnswer
from skinserve.serve.regions import REGIONS, RegionsAnswer

ImageQuality = Literal["good", "fair", "poor"]
LightingCondition = Literal["good", "dark", "bright"]

# What the Shine app shows under each concern, per condition and level (none: the condition was not found).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "acne": {
        "none": "No active breakouts were found.",
        "mild": "A few small blemishes or clogged pores.",
        "moderate": "Several inflamed spots and blackheads across the face.",
        "severe": "Widespread inflamed breakouts; a dermatologist can help.",
    },
    "fine_lines_wrinkles": {
        "none": "No visible fine lines.",
        "mild": "Faint lines, mostly around the eyes.",
        "moderate": "Visible lines around the eyes, forehead or mouth.",
        "severe": "Deep, set-in lines across several areas.",
    },
    "aging": {
        "none": "No visible signs of aging.",
        "early_signs": "Early signs of aging: slight loss of firmness and first lines.",
        "moderate": "Noticeable loss of firmness and several set lines.",
        "advanced": "Marked loss of firmness and volume with deep lines.",
    },
    "hyperpigmentation": {
        "none": "Even skin tone.",
        "mild": "A few small dark spots.",
        "moderate": "Several dark spots or patches of uneven tone.",
        "severe": "Large areas of darker pigmentation.",
    },
    "textured_skin": {
        "none": "Smooth skin texture.",
        "slight": "Slightly uneven texture in places.",
        "moderate": "Visibly uneven, rough texture.",
        "severe": "Pronounced roughness and unevenness across the face.",
    },
    "redness": {
        "none": "No notable redness.",
        "mild": "Slight redness, mostly on the cheeks or nose.",
        "moderate": "Visible redness across the cheeks and nose.",
        "severe": "Intense, widespread redness; a dermatologist can help.",
    },
    "pore_size": {
        "none": "Pores are barely visible.",
        "mild": "Slightly visible pores, mostly on the nose.",
        "moderate": "Visibly enlarged pores on the nose and cheeks.",
        "severe": "Large pores across the T-zone and cheeks.",
    },
}


class Concern(BaseModel):
    name: str = Field(description='the condition in Shine\'s display form, e.g. "Fine Lines Wrinkles"')
    severity: str = Field(description="the Shine severity word for the condition, or none")
    percentage: float = Field(ge=0, le=100, description="probability x 100, one decimal")
    description: str


class RegionConcern(BaseModel):
    name: str
    severity: str
    percentage: float = Field(ge=0, le=100)


class RegionConcerns(BaseModel):
    left_cheek: list[RegionConcern]
    right_cheek: list[RegionConcern]
    forehead: list[RegionConcern]
    t_zone: list[RegionConcern]
    chin: list[RegionConcern]


class ShineMetadata(BaseModel):
    imageQuality: ImageQuality | None = Field(description="good: no warning; fair: light or sharpness; poor: the face")
    lightingCondition: LightingCondition | None = Field(description="from the quality stage's brightness")
    skinType: str | None = Field(description=f"one of {', '.join(SKIN_TYPES)}; null: the model has no skin-type head")


class ShineAnswer(BaseModel):
    concerns: list[Concern] = Field(description="one per condition, in the fixed order")
    region_concerns: RegionConcerns | None = Field(description="null when regions are off")
    metadata: ShineMetadata
    recommendations: list[dict[str, Any]] = Field(default_factory=list, description="filled by the catalog")


def display_name(condition: str) -> str:
    return condition.replace("_", " ").title()


def severity_word(condition: str, label: str) -> str:
    """The Shine word for a severity label (none, mild, moderate, severe) of `condition`."""
    level = Severity[label]
    return "none" if level is Severity.none else SHINE_SEVERITY_WORDS[condition][level - 1]


def percentage(probability: float) -> float:
    return round(float(probability) * 100.0, 1)


def concerns(conditions: Mapping[str, Mapping[str, Any]]) -> list[Concern]:
    """`conditions`: the decoded prediction's per-condition dicts (skinserve.predictions.decode: probability and
    severity.label), in any order; the answer follows CONDITIONS."""
    out = []
    for condition in CONDITIONS:
        row = conditions[condition]
        word = severity_word(condition, row["severity"]["label"])
        out.append(
            Concern(
                name=display_name(condition),
                severity=word,
                percentage=percentage(row["probability"]),
                description=DESCRIPTIONS[condition][word],
            )
        )
    return out


def region_concerns(regions: RegionsAnswer | None) -> RegionConcerns | None:
    """Shine's per-region lists; a region the model input did not show gets an empty list."""
    if regions is None:
        return None
    lists: dict[str, list[RegionConcern]] = {}
    for name in REGIONS:
        scores = regions.regions.get(name)
        lists[name] = (
            [
                RegionConcern(
                    name=display_name(c),
                    severity=severity_word(c, scores.conditions[c].severity),
                    percentage=percentage(scores.conditions[c].probability),
                )
                for c in CONDITIONS
            ]
            if scores is not None
            else []
        )
    return RegionConcerns(**lists)


def metadata(quality: QualityAnswer | None, skin_type: str | None) -> ShineMetadata:
    if quality is None:  # the quality stage is off
        return ShineMetadata(imageQuality=None, lightingCondition=None, skinType=skin_type)
    warnings = set(quality.warnings)
    if warnings & {"no_face", "multiple_faces", "face_too_small"}:
        image_quality = "poor"
    elif warnings & {"too_dark", "too_bright", "blurry"}:
        image_quality = "fair"
    else:
        image_quality = "good"
    lighting = "dark" if "too_dark" in warnings else "bright" if "too_bright" in warnings else "good"
    return ShineMetadata(imageQuality=image_quality, lightingCondition=lighting, skinType=skin_type)


def skin_type_label(probabilities: Sequence[float] | None) -> str | None:
    """The most likely skin type from the skin-type head's softmax (SKIN_TYPES order); None without the head."""
    if probabilities is None:
        return None
    return SKIN_TYPES[max(range(len(SKIN_TYPES)), key=lambda i: probabilities[i])]


def shine_answer(
    conditions: Mapping[str, Mapping[str, Any]],
    quality: QualityAnswer | None,
    skin_type: str | None,
    regions: RegionsAnswer | None = None,
    recommendations: Sequence[Mapping[str, Any]] = (),
) -> ShineAnswer:
    return ShineAnswer(
        concerns=concerns(conditions),
        region_concerns=region_concerns(regions),
        metadata=metadata(quality, skin_type),
        recommendations=[dict(r) for r in recommendations],
    )
