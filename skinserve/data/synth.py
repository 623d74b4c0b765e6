"""A procedurally drawn stand-in for the Shine selfie set, written in its folder layout and sidecar schema."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from skinserve.labels import CONDITIONS, HEALTHY, HEALTHY_WORDS, SHINE_SEVERITY_WORDS, Severity

RGB = tuple[int, int, int]
Region = tuple[float, float, float, float]  # ellipse in face units: centre u, centre v, half-width, half-height

GENERATOR = "skinserve.data.synth"
# Fitzpatrick I-VI in order, named with the Shine prompts' words.
SKIN_TONES: tuple[tuple[str, RGB], ...] = (
    ("very fair", (246, 224, 208)),
    ("fair", (236, 200, 172)),
    ("medium", (212, 166, 128)),
    ("olive", (184, 138, 98)),
    ("brown", (134, 92, 62)),
    ("dark", (88, 58, 40)),
)
_ROMAN = ("I", "II", "III", "IV", "V", "VI")
AGE_GROUPS: tuple[tuple[str, str, int, int], ...] = (
    ("young_adult", "18-25", 18, 25),
    ("adult", "26-40", 26, 40),
    ("middle_aged", "41-60", 41, 60),
    ("senior", "60+", 61, 82),
)
GENDERS: tuple[str, ...] = ("female", "male")
_GREY_CHANCE = (0.0, 0.08, 0.35, 0.8)  # per age group
_HAIR = ((28, 24, 22), (62, 42, 30), (104, 70, 44), (196, 164, 108), (136, 68, 38))
_SHIRTS = ((64, 88, 128), (120, 40, 50), (50, 100, 80), (90, 90, 96), (200, 190, 170), (40, 40, 48))

# Where cues land, in face units (u: -1 left edge .. 1 right edge, v: -1 crown .. 1 chin).
_CHEEKS: tuple[Region, ...] = ((-0.5, 0.22, 0.2, 0.16), (0.5, 0.22, 0.2, 0.16))
_FOREHEAD: tuple[Region, ...] = ((0.0, -0.42, 0.4, 0.1),)
_CHIN: tuple[Region, ...] = ((0.0, 0.8, 0.17, 0.07),)
_NOSE: tuple[Region, ...] = ((0.0, 0.12, 0.09, 0.2),)
_INNER_CHEEKS: tuple[Region, ...] = ((-0.37, 0.2, 0.21, 0.16), (0.37, 0.2, 0.21, 0.16))
_WIDE_CHEEKS: tuple[Region, ...] = ((-0.5, 0.26, 0.3, 0.25), (0.5, 0.26, 0.3, 0.25))

# Cue contrast is a share of the skin's own luma, but never of less than a medium tone's (Fitzpatrick III-IV):
# a fixed share of Fitzpatrick VI's luma (~65) is too few levels to survive the 2x downsample, and a mild cue
# a viewer cannot see is label noise. Darker tones therefore get a larger share of their luma.
_CONTRAST_FLOOR = 160.0
_LUMA = np.asarray((0.299, 0.587, 0.114), np.float32)
# Per-channel weights of a cue's contrast: brown darkens blue most, red lifts red and drops green and blue.
_GREY = (1.0, 1.0, 1.0)
_BROWN = (0.8, 1.0, 1.25)
_RED = (0.3, -0.3, -0.25)
_FLUSH = (0.16, -0.26, -0.2)
_PUS = (250, 242, 218)


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
        if self.fitzpatrick not in range(1, 7):
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
class _Canvas:
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
    return f"{SKIN_TONES[fitzpatrick - 1][0]} skin tone (Fitzpatrick {_ROMAN[fitzpatrick - 1]})"


def draw_face(spec: FaceSpec, size: int) -> Image.Image:
    """A head-and-shoulders selfie of `spec` with its conditions painted, `size` x `size` RGB."""
    return _render(spec, size)[0]


def _render(spec: FaceSpec, size: int) -> tuple[Image.Image, dict[str, CueStats]]:
    if size < 32:
        raise ValueError(f"image size must be at least 32 px, got {size}")
    side = 2 * size  # ImageDraw has no anti-aliasing: draw at 2x and let LANCZOS smooth the edges
    geo = face_geometry(spec, side)
    tone = np.clip(np.asarray(SKIN_TONES[spec.fitzpatrick - 1][1], np.float32) * (1.0 + spec.tone_shift), 0, 255)
    head = _ellipse_r2(geo, side) <= 1.0
    canvas = _Canvas(geo, tone, head, head & ~_hair_cap_mask(geo, side, _hairline(spec)), side)
    img = _draw_base(spec, canvas)
    stats: dict[str, CueStats] = {}
    for index, condition in enumerate(CONDITIONS):
        level = int(spec.conditions.get(condition, Severity.none))
        if level == 0:
            continue
        before = np.asarray(img, np.int16)
        img, count = _PAINTERS[condition](img, canvas, level, np.random.default_rng([spec.seed, index]))
        changed = np.abs(np.asarray(img, np.int16) - before).sum(axis=2) > 12
        stats[condition] = CueStats(count, round(float(changed[canvas.head].mean()), 3))
    return img.resize((size, size), Image.Resampling.LANCZOS), stats


def _ellipse_r2(geo: FaceGeometry, side: int) -> np.ndarray:
    ys, xs = np.ogrid[:side, :side]
    return ((xs + 0.5 - geo.cx) / geo.rx) ** 2 + ((ys + 0.5 - geo.cy) / geo.ry) ** 2


def _rgb(values: Any) -> RGB:
    r, g, b = (int(round(float(x))) for x in np.clip(values, 0, 255))
    return r, g, b


def _mix(a: Any, b: Any, t: float) -> RGB:
    return _rgb(np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t)


def _draw_base(spec: FaceSpec, canvas: _Canvas) -> Image.Image:
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
    draw.rectangle(geo.box(0, 1.05, 0.42, 0.55), fill=_rgb(tone * 0.88))
    draw.ellipse(geo.box(0, 1.3, 0.5, 0.2), fill=_rgb(tone * 0.88))
    for s in (-1, 1):
        draw.ellipse(geo.box(s * 0.98, 0.02, 0.12, 0.17), fill=_rgb(tone * 0.93))
    draw.ellipse(geo.box(0, 0, 1, 1), fill=_rgb(tone))
    _draw_hair_cap(draw, geo, _hairline(spec), hair, _rgb(tone))
    img = _shade_head(img, canvas)
    _draw_features(ImageDraw.Draw(img), spec, geo, tone, hair)
    return img


def _hairline(spec: FaceSpec) -> float:
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


def _hair_cap_mask(geo: FaceGeometry, side: int, hairline: float) -> np.ndarray:
    mask = Image.new("L", (side, side), 0)
    _draw_hair_cap(ImageDraw.Draw(mask), geo, hairline, 255, 0)
    return np.asarray(mask) > 0


def _hair_colour(spec: FaceSpec) -> RGB:
    """The spec's hair, greyed by the aging cue (greying is one of its visible signs, never the only one)."""
    level = int(spec.conditions.get("aging", Severity.none))
    if level == 0:
        return spec.hair
    return _mix(spec.hair, (196, 196, 196), (0.3, 0.55, 0.8)[level - 1])


def _shade_head(img: Image.Image, canvas: _Canvas) -> Image.Image:
    # Darkening toward the rim reads as a rounded head rather than a flat disc.
    r2 = _ellipse_r2(canvas.geo, canvas.side)
    factor = np.where(r2 <= 1.0, 1.0 - 0.12 * r2, 1.0).astype(np.float32)
    return Image.fromarray((np.asarray(img, np.float32) * factor[..., None]).astype(np.uint8))


def _draw_features(draw: ImageDraw.ImageDraw, spec: FaceSpec, geo: FaceGeometry, tone: np.ndarray, hair: RGB) -> None:
    line = geo.width(0.03)
    iris = (70, 100, 140) if spec.fitzpatrick <= 2 and spec.seed % 3 == 0 else (58, 38, 28)
    brow = _rgb(np.asarray(hair, np.float32) * 0.75)
    for s in (-1, 1):
        ex, ey = geo.at(0.36 * s, -0.1)
        ew, eh = 0.15 * geo.rx, 0.05 * geo.ry
        draw.ellipse((ex - ew, ey - eh, ex + ew, ey + eh), fill=(240, 238, 234), outline=(60, 45, 40), width=line)
        for radius, colour in ((eh * 0.9, iris), (eh * 0.45, (20, 16, 14))):
            draw.ellipse((ex - radius, ey - radius, ex + radius, ey + radius), fill=colour)
        brow_points = [geo.at(s * u, v) for u, v in ((0.16, -0.29), (0.36, -0.34), (0.56, -0.3))]
        draw.line(brow_points, fill=brow, width=geo.width(0.08 if spec.gender == "male" else 0.06), joint="curve")
        draw.ellipse(geo.box(s * 0.09, 0.3, 0.045, 0.025), fill=_rgb(tone * 0.55))
    draw.line([geo.at(-0.07, -0.05), geo.at(-0.1, 0.22)], fill=_rgb(tone * 0.86), width=line)
    draw.arc(geo.box(0, 0.26, 0.14, 0.07), 20, 160, fill=_rgb(tone * 0.75), width=line)
    lips = _mix(tone, (176, 74, 80), 0.6 if spec.gender == "female" else 0.4)
    draw.ellipse(geo.box(0, 0.54, 0.25, 0.06), fill=lips)
    draw.line([geo.at(-0.25, 0.54), geo.at(0.25, 0.54)], fill=_rgb(tone * 0.45), width=line)


def _points_in(rng: np.random.Generator, regions: tuple[Region, ...], n: int) -> np.ndarray:
    """`n` (u, v) points spread uniformly over the regions, each region weighted by its area."""
    table = np.asarray(regions, np.float64)
    areas = table[:, 2] * table[:, 3]
    rows = table[rng.choice(len(table), size=n, p=areas / areas.sum())]
    radius, angle = np.sqrt(rng.random(n)), rng.random(n) * 2 * math.pi
    us = rows[:, 0] + rows[:, 2] * radius * np.cos(angle)
    vs = rows[:, 1] + rows[:, 3] * radius * np.sin(angle)
    return np.stack([us, vs], 1)


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float, fill: RGB | int = 255) -> None:
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)


def _stencil(canvas: _Canvas) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A blank mask to draw a cue's shapes into, in white, before `_weights` turns it into blend weights."""
    mask = Image.new("L", (canvas.side, canvas.side), 0)
    return mask, ImageDraw.Draw(mask)


def _weights(mask: Image.Image, canvas: _Canvas, blur: float = 0.0) -> np.ndarray:
    """A 0-1 weight from a stencil, cut to bare skin so no cue spills onto hair or background."""
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask, np.float32) / 255.0 * canvas.skin


def _region_weights(canvas: _Canvas, regions: tuple[Region, ...], blur: float) -> np.ndarray:
    mask, draw = _stencil(canvas)
    for region in regions:
        draw.ellipse(canvas.geo.box(*region), fill=255)
    return _weights(mask, canvas, blur)


def _to_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))


def _darken(
    img: Image.Image, weight: np.ndarray, depth: float, canvas: _Canvas, tint: tuple[float, ...] = _GREY
) -> Image.Image:
    """Scale the pixels under `weight` by exp(-depth x gain): a share of the local luma, deeper on dark skin."""
    # exp, not 1 - depth: dark skin's gain pushes depth past 1, and exp keeps severe darker than moderate there.
    factor = np.exp(-depth * canvas.gain * weight[..., None] * np.asarray(tint, np.float32))
    return _to_image(np.asarray(img, np.float32) * factor)


def _shift(img: Image.Image, weight: np.ndarray, direction: tuple[float, ...], canvas: _Canvas) -> Image.Image:
    """Move the pixels under `weight` along `direction` by the skin's contrast levels: redder or lighter cues."""
    step = weight[..., None] * (np.asarray(direction, np.float32) * canvas.levels)
    return _to_image(np.asarray(img, np.float32) + step)


def _blend(img: Image.Image, weight: np.ndarray, colour: Any) -> Image.Image:
    base = np.asarray(img, np.float32)
    return _to_image(base + (np.asarray(colour, np.float32) - base) * weight[..., None])


def _curve(
    draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], bow: float, width: int, fill: RGB | int = 255
) -> None:
    """A quadratic curve from the first to the last point, its middle pushed `bow` px sideways (down for +)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    cx, cy = (x0 + x1) / 2 - bow * (y1 - y0) / length, (y0 + y1) / 2 + bow * (x1 - x0) / length
    ts = np.linspace(0, 1, 8)
    xs = (1 - ts) ** 2 * x0 + 2 * (1 - ts) * ts * cx + ts**2 * x1
    ys = (1 - ts) ** 2 * y0 + 2 * (1 - ts) * ts * cy + ts**2 * y1
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=fill, width=width, joint="curve")


# Every painter grows count (or area), size and contrast together, roughly x1 / x2 / x3.5 in their product, so the
# level shows in any crop of the face, not only in how many marks the whole face carries.


def _paint_acne(img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    i, geo = level - 1, canvas.geo
    count, grow = (8, 15, 24)[i], (1.0, 1.12, 1.25)[i]
    (halo, halo_draw), (core, core_draw), (heads, heads_draw) = _stencil(canvas), _stencil(canvas), _stencil(canvas)
    for u, v in _points_in(rng, _CHEEKS + _FOREHEAD + _CHIN, count):
        x, y = geo.at(u, v)
        radius = geo.rx * rng.uniform(0.045, 0.065) * grow
        _dot(halo_draw, x, y, radius * 1.7)
        _dot(core_draw, x, y, radius)
        if rng.random() < 0.5:  # a whitehead on some spots: raised pustules, not flat marks
            _dot(heads_draw, x - radius * 0.2, y - radius * 0.2, radius * 0.45)
    inflamed = 0.4 * _weights(halo, canvas, geo.rx * 0.03) + 0.6 * _weights(core, canvas)
    img = _shift(img, inflamed * (0.9, 1.1, 1.3)[i], _RED, canvas)
    return _blend(img, _weights(heads, canvas) * (0.6, 0.72, 0.85)[i], _PUS), count


def _paint_wrinkles(img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    i, geo = level - 1, canvas.geo
    mask, draw = _stencil(canvas)
    width, lines, feet = geo.width((0.04, 0.05, 0.06)[i]), (2, 3, 4)[i], (2, 3, 4)[i]
    for k in range(lines):  # spaced wider than the widest stroke, so severe lines stay lines, not a band
        v, half = -0.41 - 0.065 * k + rng.uniform(-0.01, 0.01), (0.3, 0.38, 0.46)[i] * rng.uniform(0.85, 1.1)
        _curve(draw, [geo.at(-half, v), geo.at(half, v)], -0.03 * geo.rx, width)
    for s in (-1, 1):  # crow's feet fanning out from the outer eye corners
        x0, y0 = geo.at(0.55 * s, -0.1)
        spread = (0.35, 0.45, 0.55)[i]
        for angle in np.linspace(-spread, spread, feet) + rng.uniform(-0.06, 0.06, feet):
            # Each line starts a little off the corner: a shared start point fills in as a dark wedge.
            start, end = geo.rx * 0.04, geo.rx * (0.15, 0.19, 0.24)[i] * rng.uniform(0.85, 1.15)
            ends = [(x0 + s * r * math.cos(angle), y0 + r * math.sin(angle)) for r in (start, end)]
            draw.line(ends, 255, width)
    return _darken(img, _weights(mask, canvas), (0.45, 0.62, 0.82)[i], canvas), lines + 2 * feet


def _paint_aging(img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    # Sagging and folds carry the cue; greyer hair only adds to it, since healthy seniors are often grey.
    i, geo = level - 1, canvas.geo
    jowls = tuple((s * 0.6, 0.78, (0.22, 0.27, 0.32)[i], 0.16) for s in (-1, 1))
    img = _darken(img, _region_weights(canvas, jowls, geo.rx * 0.08), (0.25, 0.38, 0.52)[i], canvas)
    bags = tuple((s * 0.36, 0.01, 0.15, (0.04, 0.05, 0.06)[i]) for s in (-1, 1))
    img = _darken(img, _region_weights(canvas, bags, geo.rx * 0.03), (0.1, 0.16, 0.24)[i], canvas)
    mask, draw = _stencil(canvas)
    width = geo.width((0.03, 0.04, 0.05)[i])
    for s in (-1, 1):
        # The nasolabial fold ends beside the mouth corner, not on it: ending on it reads as a moustache.
        _curve(draw, [geo.at(s * 0.18, 0.27), geo.at(s * 0.37, 0.6)], -s * 0.04 * geo.rx, width)
        _curve(draw, [geo.at(s * 0.22, 0.06), geo.at(s * 0.5, 0.05)], 0.04 * geo.ry, width)  # the eye bag's rim
        if level >= 2:  # marionette lines down from the mouth corners
            _curve(draw, [geo.at(s * 0.3, 0.62), geo.at(s * 0.34, 0.82)], s * 0.02 * geo.rx, width)
    if level >= 2:  # a sagging line under the chin
        draw.arc(geo.box(0, 0.9, 0.38, 0.14), 30, 150, fill=255, width=width)
    img = _darken(img, _weights(mask, canvas, geo.rx * 0.02), (0.35, 0.5, 0.68)[i], canvas)
    spots, (stain, stain_draw) = (2, 4, 7)[i], _stencil(canvas)
    for u, v in _points_in(rng, _CHEEKS + _FOREHEAD, spots):
        _dot(stain_draw, *geo.at(u, v), geo.rx * rng.uniform(0.035, 0.055))
    img = _darken(img, _weights(stain, canvas), 0.45, canvas, _BROWN)
    return img, 4 + spots + 3 * (level >= 2)


def _paint_hyperpigmentation(
    img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator
) -> tuple[Image.Image, int]:
    i, geo = level - 1, canvas.geo
    centres = _points_in(rng, _CHEEKS + _FOREHEAD, (3, 4, 6)[i])
    grow = (0.9, 1.1, 1.3)[i]
    patches = tuple((u, v, rng.uniform(0.1, 0.15) * grow, rng.uniform(0.07, 0.11) * grow) for u, v in centres)
    weight = _region_weights(canvas, patches, geo.rx * 0.04)
    img = _darken(img, weight, (0.35, 0.47, 0.62)[i], canvas, _BROWN)
    (mask, draw), freckles = _stencil(canvas), (12, 21, 33)[i]
    for u, v in _points_in(rng, _CHEEKS + _NOSE + _FOREHEAD, freckles):
        _dot(draw, *geo.at(u, v), geo.rx * rng.uniform(0.028, 0.042))
    return _darken(img, _weights(mask, canvas), (0.4, 0.52, 0.66)[i], canvas, _BROWN), len(patches) + freckles


def _paint_textured_skin(
    img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator
) -> tuple[Image.Image, int]:
    i, geo = level - 1, canvas.geo
    regions = (_WIDE_CHEEKS + _FOREHEAD, _WIDE_CHEEKS + _FOREHEAD + _CHIN, _WIDE_CHEEKS + _FOREHEAD + _CHIN + _NOSE)[i]
    (mask, draw), bumps = _stencil(canvas), (60, 120, 200)[i]
    for u, v in _points_in(rng, regions, bumps):  # skin-coloured papules ~2-3 px across at 128 px
        _dot(draw, *geo.at(u, v), geo.rx * rng.uniform(0.025, 0.045))
    height = np.asarray(mask.filter(ImageFilter.GaussianBlur(geo.rx * 0.015)), np.float32) / 255.0
    shift = max(1, round(geo.rx * 0.02))
    relief = height - np.roll(height, (shift, shift), axis=(0, 1))  # emboss: each bump gets a lit and a shaded side
    relief *= (0.4, 0.56, 0.78)[i] * canvas.levels * canvas.skin
    return _to_image(np.asarray(img, np.float32) + relief[..., None]), bumps


def _paint_redness(img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    i, grow = level - 1, (0.95, 1.05, 1.15)[level - 1]
    jitter = rng.uniform(-0.03, 0.03, 2)
    regions = tuple((s * 0.45 + jitter[0], 0.2 + jitter[1], 0.26 * grow, 0.2 * grow) for s in (-1, 1)) + (
        (0.0, 0.12, 0.1 * grow, 0.2),
    )
    weight = _region_weights(canvas, regions, canvas.geo.rx * 0.12) * (0.6, 0.85, 1.15)[i]
    return _shift(img, weight, _FLUSH, canvas), len(regions)


def _paint_pore_size(
    img: Image.Image, canvas: _Canvas, level: int, rng: np.random.Generator
) -> tuple[Image.Image, int]:
    i, geo = level - 1, canvas.geo
    (mask, draw), count = _stencil(canvas), 0
    step, radius = geo.rx * (0.125, 0.105, 0.092)[i], max(0.8, geo.rx * (0.025, 0.028, 0.032)[i])
    for u0, v0, ru, rv in _NOSE + _INNER_CHEEKS:
        x0, y0, x1, y1 = geo.box(u0, v0, ru, rv)
        xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
        cx, cy = geo.at(u0, v0)
        inside = ((xs - cx) / (ru * geo.rx)) ** 2 + ((ys - cy) / (rv * geo.ry)) ** 2 <= 1.0
        for x, y in zip(xs[inside], ys[inside], strict=True):  # a jittered grid: pores are regular but not a lattice
            _dot(draw, x + rng.uniform(-0.2, 0.2) * step, y + rng.uniform(-0.2, 0.2) * step, radius)
            count += 1
    return _darken(img, _weights(mask, canvas), (0.45, 0.62, 0.9)[i], canvas), count


_PAINTERS: dict[str, Callable[[Image.Image, _Canvas, int, np.random.Generator], tuple[Image.Image, int]]] = {
    "acne": _paint_acne,
    "fine_lines_wrinkles": _paint_wrinkles,
    "aging": _paint_aging,
    "hyperpigmentation": _paint_hyperpigmentation,
    "textured_skin": _paint_textured_skin,
    "redness": _paint_redness,
    "pore_size": _paint_pore_size,
}


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
    hair = _rgb(np.full(3, rng.uniform(140, 215))) if rng.random() < _GREY_CHANCE[group] else natural
    long_hair = bool(rng.random() < (0.75 if gender == "female" else 0.1))
    background = _rgb(rng.uniform(222, 246) + rng.uniform(-6, 6, 3))
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
    image, stats = _render(plan.spec, config.size)
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
