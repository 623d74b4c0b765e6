"""The seven condition painters: each draws its cue onto a face at a severity, growing count, size and contrast."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skinserve.data.synth.face import (
    RGB,
    SKIN_TONES,
    Canvas,
    CueStats,
    FaceSpec,
    Region,
    draw_base,
    ellipse_r2,
    face_geometry,
    hair_cap_mask,
    hairline,
)
from skinserve.labels import CONDITIONS, Severity

# Where cues land, in face units (u: -1 left edge .. 1 right edge, v: -1 crown .. 1 chin).
_CHEEKS: tuple[Region, ...] = ((-0.5, 0.22, 0.2, 0.16), (0.5, 0.22, 0.2, 0.16))
_FOREHEAD: tuple[Region, ...] = ((0.0, -0.42, 0.4, 0.1),)
_CHIN: tuple[Region, ...] = ((0.0, 0.8, 0.17, 0.07),)
_NOSE: tuple[Region, ...] = ((0.0, 0.12, 0.09, 0.2),)
_INNER_CHEEKS: tuple[Region, ...] = ((-0.37, 0.2, 0.21, 0.16), (0.37, 0.2, 0.21, 0.16))
_WIDE_CHEEKS: tuple[Region, ...] = ((-0.5, 0.26, 0.3, 0.25), (0.5, 0.26, 0.3, 0.25))
# Per-channel weights of a cue's contrast: brown darkens blue most, red lifts red and drops green and blue.
_GREY = (1.0, 1.0, 1.0)
_BROWN = (0.8, 1.0, 1.25)
_RED = (0.3, -0.3, -0.25)
_FLUSH = (0.16, -0.26, -0.2)
_PUS = (250, 242, 218)


def draw_face(spec: FaceSpec, size: int) -> Image.Image:
    """A head-and-shoulders selfie of `spec` with its conditions painted, `size` x `size` RGB."""
    return render(spec, size)[0]


def render(spec: FaceSpec, size: int) -> tuple[Image.Image, dict[str, CueStats]]:
    if size < 32:
        raise ValueError(f"image size must be at least 32 px, got {size}")
    side = 2 * size  # ImageDraw has no anti-aliasing: draw at 2x and let LANCZOS smooth the edges
    geo = face_geometry(spec, side)
    tone = np.clip(np.asarray(SKIN_TONES[spec.fitzpatrick - 1][1], np.float32) * (1.0 + spec.tone_shift), 0, 255)
    head = ellipse_r2(geo, side) <= 1.0
    canvas = Canvas(geo, tone, head, head & ~hair_cap_mask(geo, side, hairline(spec)), side)
    img = draw_base(spec, canvas)
    stats: dict[str, CueStats] = {}
    for index, condition in enumerate(CONDITIONS):
        level = int(spec.conditions.get(condition, Severity.none))
        if level == 0:
            continue
        before = np.asarray(img, np.int16)
        img, count = PAINTERS[condition](img, canvas, level, np.random.default_rng([spec.seed, index]))
        changed = np.abs(np.asarray(img, np.int16) - before).sum(axis=2) > 12
        stats[condition] = CueStats(count, round(float(changed[canvas.head].mean()), 3))
    return img.resize((size, size), Image.Resampling.LANCZOS), stats


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


def _stencil(canvas: Canvas) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A blank mask to draw a cue's shapes into, in white, before `_weights` turns it into blend weights."""
    mask = Image.new("L", (canvas.side, canvas.side), 0)
    return mask, ImageDraw.Draw(mask)


def _weights(mask: Image.Image, canvas: Canvas, blur: float = 0.0) -> np.ndarray:
    """A 0-1 weight from a stencil, cut to bare skin so no cue spills onto hair or background."""
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask, np.float32) / 255.0 * canvas.skin


def _region_weights(canvas: Canvas, regions: tuple[Region, ...], blur: float) -> np.ndarray:
    mask, draw = _stencil(canvas)
    for region in regions:
        draw.ellipse(canvas.geo.box(*region), fill=255)
    return _weights(mask, canvas, blur)


def _to_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))


def _darken(
    img: Image.Image, weight: np.ndarray, depth: float, canvas: Canvas, tint: tuple[float, ...] = _GREY
) -> Image.Image:
    """Scale the pixels under `weight` by exp(-depth x gain): a share of the local luma, deeper on dark skin."""
    # exp, not 1 - depth: dark skin's gain pushes depth past 1, and exp keeps severe darker than moderate there.
    factor = np.exp(-depth * canvas.gain * weight[..., None] * np.asarray(tint, np.float32))
    return _to_image(np.asarray(img, np.float32) * factor)


def _shift(img: Image.Image, weight: np.ndarray, direction: tuple[float, ...], canvas: Canvas) -> Image.Image:
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


def _paint_acne(img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
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


def _paint_wrinkles(img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
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


def _paint_aging(img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
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
    img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator
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
    img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator
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


def _paint_redness(img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    i, grow = level - 1, (0.95, 1.05, 1.15)[level - 1]
    jitter = rng.uniform(-0.03, 0.03, 2)
    regions = tuple((s * 0.45 + jitter[0], 0.2 + jitter[1], 0.26 * grow, 0.2 * grow) for s in (-1, 1)) + (
        (0.0, 0.12, 0.1 * grow, 0.2),
    )
    weight = _region_weights(canvas, regions, canvas.geo.rx * 0.12) * (0.6, 0.85, 1.15)[i]
    return _shift(img, weight, _FLUSH, canvas), len(regions)


def _paint_pore_size(img: Image.Image, canvas: Canvas, level: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
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


PAINTERS: dict[str, Callable[[Image.Image, Canvas, int, np.random.Generator], tuple[Image.Image, int]]] = {
    "acne": _paint_acne,
    "fine_lines_wrinkles": _paint_wrinkles,
    "aging": _paint_aging,
    "hyperpigmentation": _paint_hyperpigmentation,
    "textured_skin": _paint_textured_skin,
    "redness": _paint_redness,
    "pore_size": _paint_pore_size,
}
