"""Synthetic faces: a head-and-shoulders drawing of a `FaceSpec`, its geometry, and the demographic words."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from skinserve.labels import CONDITIONS, FITZPATRICK_TYPES, ROMAN_NUMERALS, Severity

RGB = tuple[int, int, int]
Region = tuple[float, float, float, float]  # ellipse in face units: centre u, centre v, half-width, half-height
# Fitzpatrick I-VI in order, named with the Shine prompts' words.
SKIN_TONES: tuple[tuple[str, RGB], ...] = (
    ("very fair", (246, 224, 208)),
    ("fair", (236, 200, 172)),
    ("medium", (212, 166, 128)),
    ("olive", (184, 138, 98)),
    ("brown", (134, 92, 62)),
    ("dark", (88, 58, 40)),
)
AGE_GROUPS: tuple[tuple[str, str, int, int], ...] = (
    ("young_adult", "18-25", 18, 25),
    ("adult", "26-40", 26, 40),
    ("middle_aged", "41-60", 41, 60),
    ("senior", "60+", 61, 82),
)
GENDERS: tuple[str, ...] = ("female", "male")
# Cue contrast is a share of the skin's own luma, but never of less than a medium tone's (Fitzpatrick III-IV):
# a fixed share of Fitzpatrick VI's luma (~65) is too few levels to survive the 2x downsample, and a mild cue
# a viewer cannot see is label noise. Darker tones therefore get a larger share of their luma.
_CONTRAST_FLOOR = 160.0
_LUMA = np.asarray((0.299, 0.587, 0.114), np.float32)


@dataclass(frozen=True)
class FaceSpec:
    """Everything that decides one face; draw_face is a pure function of it and the size."""

    fitzpatrick: int = 3
    age: int = 30
    gender: str = "female"
    offset: tuple[float, float] = (0.0, 0.0)  # face centre shift, as a fraction of the image side
    scale: float = 1.0
    tone_shift: float = 0.0  # brightness jitter within the Fitzpatrick type, e.g. +-0.04
    hair: RGB = (62, 42, 30)
    long_hair: bool = False
    background: RGB = (234, 234, 230)
    shirt: RGB = (64, 88, 128)
    conditions: Mapping[str, Severity] = field(default_factory=dict, hash=False)
    # Places spots and lines; each condition draws from its own stream, so adding one moves no other.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fitzpatrick not in FITZPATRICK_TYPES:
            raise ValueError(f"FaceSpec.fitzpatrick must be 1-6, got {self.fitzpatrick}")
        if self.seed < 0:
            raise ValueError(f"FaceSpec.seed must be non-negative, got {self.seed}")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"FaceSpec.conditions has unknown names {unknown} (expected some of: {CONDITIONS})")
        frozen = MappingProxyType({c: Severity(s) for c, s in self.conditions.items()})
        object.__setattr__(self, "conditions", frozen)


@dataclass(frozen=True)
class FaceGeometry:
    """The head ellipse on a canvas; cue regions are given in its units so they follow framing jitter."""

    cx: float
    cy: float
    rx: float
    ry: float

    def at(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.rx, self.cy + v * self.ry

    def box(self, u: float, v: float, ru: float, rv: float) -> tuple[float, float, float, float]:
        return (
            self.cx + (u - ru) * self.rx,
            self.cy + (v - rv) * self.ry,
            self.cx + (u + ru) * self.rx,
            self.cy + (v + rv) * self.ry,
        )

    def width(self, fraction: float) -> int:
        """A stroke width as a fraction of the head's half-width, never thinner than one pixel."""
        return max(1, round(fraction * self.rx))


@dataclass(frozen=True)
class CueStats:
    feature_count: int
    affected: float  # share of the head's pixels the cue changed


@dataclass(frozen=True)
class Canvas:
    geo: FaceGeometry
    tone: np.ndarray  # float32 RGB of the bare skin
    head: np.ndarray  # bool mask of the head ellipse
    skin: np.ndarray  # bool mask of the head's bare skin: the ellipse less the hair over the crown
    side: int

    @property
    def levels(self) -> float:
        """Levels one unit of cue contrast moves on this skin (see _CONTRAST_FLOOR)."""
        return max(float(self.tone @ _LUMA), _CONTRAST_FLOOR)

    @property
    def gain(self) -> float:
        """How much more than its own luma a cue darkens this skin: 1 from a medium tone up."""
        return self.levels / max(float(self.tone @ _LUMA), 1.0)


def face_geometry(spec: FaceSpec, side: int) -> FaceGeometry:
    """Where the head ellipse of `spec` sits on a square canvas of `side` px."""
    # The head spans ~56-59 % of the width, as in the Shine prompt's head-and-shoulders framing; at 128 px that
    # leaves ~70 px of face, so pores and fine lines are a few pixels wide rather than one.
    half_width = 0.295 if spec.gender == "male" else 0.28
    return FaceGeometry(
        cx=side * (0.5 + spec.offset[0]),
        cy=side * (0.45 + spec.offset[1]),
        rx=side * half_width * spec.scale,
        ry=side * 0.36 * spec.scale,
    )


def age_group(age: int) -> tuple[str, str]:
    """The Shine age group and range of an age."""
    for group, age_range, _, high in AGE_GROUPS:
        if age <= high:
            return group, age_range
    return AGE_GROUPS[-1][0], AGE_GROUPS[-1][1]


def skin_tone_words(fitzpatrick: int) -> str:
    return f"{SKIN_TONES[fitzpatrick - 1][0]} skin tone (Fitzpatrick {ROMAN_NUMERALS[fitzpatrick - 1]})"


def ellipse_r2(geo: FaceGeometry, side: int) -> np.ndarray:
    ys, xs = np.ogrid[:side, :side]
    return ((xs + 0.5 - geo.cx) / geo.rx) ** 2 + ((ys + 0.5 - geo.cy) / geo.ry) ** 2


def rgb(values: Any) -> RGB:
    r, g, b = (int(round(float(x))) for x in np.clip(values, 0, 255))
    return r, g, b


def mix(a: Any, b: Any, t: float) -> RGB:
    return rgb(np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t)


def draw_base(spec: FaceSpec, canvas: Canvas) -> Image.Image:
    """Background, shoulders, neck, hair, head and features: the face with no condition."""
    geo, tone, side = canvas.geo, canvas.tone, canvas.side
    top = np.asarray(spec.background, np.float32)
    ramp = np.linspace(1.0, 0.9, side, dtype=np.float32)[:, None, None]
    img = Image.fromarray(np.broadcast_to(top * ramp, (side, side, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    hair = _hair_colour(spec)
    if spec.long_hair:
        draw.ellipse(geo.box(0, 0.05, 1.3, 1.2), fill=hair)
        draw.rectangle(geo.box(0, 0.8, 1.22, 0.6), fill=hair)
    # Shoulders high and flat: the larger head leaves only the bottom ~10 % of the frame for them.
    draw.ellipse(geo.box(0, 2.05, 2.6, 0.8), fill=spec.shirt)
    draw.rectangle(geo.box(0, 1.05, 0.42, 0.55), fill=rgb(tone * 0.88))
    draw.ellipse(geo.box(0, 1.3, 0.5, 0.2), fill=rgb(tone * 0.88))
    for s in (-1, 1):
        draw.ellipse(geo.box(s * 0.98, 0.02, 0.12, 0.17), fill=rgb(tone * 0.93))
    draw.ellipse(geo.box(0, 0, 1, 1), fill=rgb(tone))
    _draw_hair_cap(draw, geo, hairline(spec), hair, rgb(tone))
    img = _shade_head(img, canvas)
    _draw_features(ImageDraw.Draw(img), spec, geo, tone, hair)
    return img


def hairline(spec: FaceSpec) -> float:
    return -0.74 if spec.gender == "male" and spec.age >= 50 else -0.6


def _draw_hair_cap(
    draw: ImageDraw.ImageDraw, geo: FaceGeometry, hairline: float, hair: RGB | int, skin: RGB | int
) -> None:
    """Hair over the crown: a band of a slightly larger head ellipse, cut by a rounded forehead."""
    centre, half_height = -0.03, 1.08
    # The band reaches a little below the hairline at the temples, as real hair does.
    angle = math.asin((hairline + 0.12 - centre) / half_height)
    # A polygon, not ImageDraw.chord: Pillow 13's chord fills stray rows below the chord for some float angles.
    thetas = np.linspace(math.pi - angle, 2 * math.pi + angle, 48)
    draw.polygon([geo.at(1.06 * math.cos(t), centre + half_height * math.sin(t)) for t in thetas], fill=hair)
    draw.ellipse(geo.box(0, hairline + 0.3, 0.72, 0.3), fill=skin)


def hair_cap_mask(geo: FaceGeometry, side: int, hairline: float) -> np.ndarray:
    mask = Image.new("L", (side, side), 0)
    _draw_hair_cap(ImageDraw.Draw(mask), geo, hairline, 255, 0)
    return np.asarray(mask) > 0


def _hair_colour(spec: FaceSpec) -> RGB:
    """The spec's hair, greyed by the aging cue (greying is one of its visible signs, never the only one)."""
    level = int(spec.conditions.get("aging", Severity.none))
    if level == 0:
        return spec.hair
    return mix(spec.hair, (196, 196, 196), (0.3, 0.55, 0.8)[level - 1])


def _shade_head(img: Image.Image, canvas: Canvas) -> Image.Image:
    # Darkening toward the rim reads as a rounded head rather than a flat disc.
    r2 = ellipse_r2(canvas.geo, canvas.side)
    factor = np.where(r2 <= 1.0, 1.0 - 0.12 * r2, 1.0).astype(np.float32)
    return Image.fromarray((np.asarray(img, np.float32) * factor[..., None]).astype(np.uint8))


def _draw_features(draw: ImageDraw.ImageDraw, spec: FaceSpec, geo: FaceGeometry, tone: np.ndarray, hair: RGB) -> None:
    line = geo.width(0.03)
    iris = (70, 100, 140) if spec.fitzpatrick <= 2 and spec.seed % 3 == 0 else (58, 38, 28)
    brow = rgb(np.asarray(hair, np.float32) * 0.75)
    for s in (-1, 1):
        ex, ey = geo.at(0.36 * s, -0.1)
        ew, eh = 0.15 * geo.rx, 0.05 * geo.ry
        draw.ellipse((ex - ew, ey - eh, ex + ew, ey + eh), fill=(240, 238, 234), outline=(60, 45, 40), width=line)
        for radius, colour in ((eh * 0.9, iris), (eh * 0.45, (20, 16, 14))):
            draw.ellipse((ex - radius, ey - radius, ex + radius, ey + radius), fill=colour)
        brow_points = [geo.at(s * u, v) for u, v in ((0.16, -0.29), (0.36, -0.34), (0.56, -0.3))]
        draw.line(brow_points, fill=brow, width=geo.width(0.08 if spec.gender == "male" else 0.06), joint="curve")
        draw.ellipse(geo.box(s * 0.09, 0.3, 0.045, 0.025), fill=rgb(tone * 0.55))
    draw.line([geo.at(-0.07, -0.05), geo.at(-0.1, 0.22)], fill=rgb(tone * 0.86), width=line)
    draw.arc(geo.box(0, 0.26, 0.14, 0.07), 20, 160, fill=rgb(tone * 0.75), width=line)
    lips = mix(tone, (176, 74, 80), 0.6 if spec.gender == "female" else 0.4)
    draw.ellipse(geo.box(0, 0.54, 0.25, 0.06), fill=lips)
    draw.line([geo.at(-0.25, 0.54), geo.at(0.25, 0.54)], fill=rgb(tone * 0.45), width=line)
