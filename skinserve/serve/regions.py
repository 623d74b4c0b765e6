"""Face regions and heatmaps from the exported class activation maps: per-region condition scores placed on the face
box, and a PNG overlay. Torch-free: the maps come out of the model call (`condition_cam`, `severity_cam`).

A map cell holds the logit its features alone give (see export.formats.Logits), so a region's logit is the
area-weighted mean of the cells it covers: the heads applied to the region's pooled features, exactly so where the
backbone pools by plain average (the manifest's `cam.exact`). The maps cover the model input square, which is the
centre of the image (or of the face crop) that preprocessing keeps; `input_window` says where that lies.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from skinserve.faces import FaceBox
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.predictions import calibrated_probabilities, severity_levels, softmax, threshold_vector
from skinserve.preprocess import Preprocessing

# Shine's region names, in its order. left/right as Shine's /infer places them: the image's left and right (its
# left_cheek polygon is drawn on MediaPipe landmarks on the image's left side).
REGIONS: tuple[str, ...] = ("left_cheek", "right_cheek", "forehead", "t_zone", "chin")
# (left, top, right, bottom) in face-box units: u across the box from its left edge, v down from its top. OpenCV's
# frontal Haar box (alt2) runs from the top of the forehead to the chin and from cheek to cheek: the eyes sit near
# v 0.38, the mouth near 0.78. Checked by eye on grace_hopper and the synthetic faces (tests/test_regions.py draws it).
REGION_BOXES: dict[str, tuple[float, float, float, float]] = {
    "left_cheek": (0.10, 0.48, 0.36, 0.74),
    "right_cheek": (0.64, 0.48, 0.90, 0.74),
    "forehead": (0.25, 0.06, 0.75, 0.26),
    "t_zone": (0.40, 0.26, 0.60, 0.66),
    "chin": (0.34, 0.84, 0.66, 1.02),
}
Rect = tuple[float, float, float, float]  # left, top, right, bottom in image pixels


class RegionCondition(BaseModel):
    probability: float = Field(ge=0, le=1, description="sigmoid of the region's logit (the mean of its map cells)")
    present: bool = Field(description="probability >= the condition's threshold")
    severity: str = Field(description="none, or the most likely present level from the region's severity map")


class RegionScores(BaseModel):
    box: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h] in the uploaded image's pixels")
    coverage: float = Field(ge=0, le=1, description="share of the region the model input shows (the rest is cropped)")
    conditions: dict[str, RegionCondition] = Field(description="the 7 conditions in their fixed order")


class RegionsAnswer(BaseModel):
    placed_on: str = Field(description="face: the detected face box; image: the whole image (no face)")
    regions: dict[str, RegionScores | None] = Field(description=f"{', '.join(REGIONS)}; null: outside the input")


@dataclass(frozen=True)
class RegionMaps:
    """One image's maps: condition_cam [7, h, w], severity_cam [7, 4, h, w], and the image rectangle they cover."""

    condition: np.ndarray
    severity: np.ndarray
    window: Rect  # the model input square in the image's pixels

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], index: int, window: Rect) -> RegionMaps:
        return cls(outputs["condition_cam"][index], outputs["severity_cam"][index], window)


def input_window(size: tuple[int, int], pre: Preprocessing, crop: Rect | None = None) -> Rect:
    """The rectangle of an image of `size` that the model input shows: `skinserve.preprocess.resize_and_crop`'s
    centre square (its shorter side scaled to `resize_size`, then `input_size` kept), inside `crop` when the model
    was shown a crop (left, top, right, bottom, e.g. `skinserve.faces.crop_window`)."""
    left, top, right, bottom = crop if crop is not None else (0, 0, *size)
    width, height = right - left, bottom - top
    side = pre.input_size * min(width, height) / pre.resize_size
    return (
        left + (width - side) / 2,
        top + (height - side) / 2,
        left + (width + side) / 2,
        top + (height + side) / 2,
    )


def region_rects(face: FaceBox | None, size: tuple[int, int]) -> dict[str, Rect]:
    """Each region's rectangle in image pixels, placed on the face box, or on the whole image without one."""
    x, y, w, h = face.as_list() if face is not None else (0, 0, *size)
    return {name: (x + u0 * w, y + v0 * h, x + u1 * w, y + v1 * h) for name, (u0, v0, u1, v1) in REGION_BOXES.items()}


def cell_weights(rect: Rect, window: Rect, grid: tuple[int, int]) -> np.ndarray:
    """[h, w] area of `rect` inside each map cell, as a share of `rect`'s area (the sum is the share shown)."""
    rows, cols = grid
    wl, wt, wr, wb = window
    cell_w, cell_h = (wr - wl) / cols, (wb - wt) / rows
    x_edges, y_edges = wl + cell_w * np.arange(cols + 1), wt + cell_h * np.arange(rows + 1)
    left, top, right, bottom = rect
    overlap_x = np.clip(np.minimum(x_edges[1:], right) - np.maximum(x_edges[:-1], left), 0, None)
    overlap_y = np.clip(np.minimum(y_edges[1:], bottom) - np.maximum(y_edges[:-1], top), 0, None)
    area = max((right - left) * (bottom - top), 1e-9)
    return np.outer(overlap_y, overlap_x) / area


def region_scores(
    maps: RegionMaps,
    face: FaceBox | None,
    size: tuple[int, int],
    thresholds: Mapping[str, float] | None,
    scale: tuple[float, float] = (1.0, 1.0),
    temperatures: Mapping[str, float] | None = None,
) -> RegionsAnswer:
    """Per region and condition: probability, present, severity. `face` and `size` are in the pixels `maps.window`
    is in (the decoded image); `scale` takes them to the uploaded image's pixels for the answer's boxes."""
    limits = threshold_vector(thresholds)
    regions: dict[str, RegionScores | None] = {}
    for name, rect in region_rects(face, size).items():
        weights = cell_weights(rect, maps.window, maps.condition.shape[1:])
        shown = float(weights.sum())
        if shown < 1e-3:  # the region lies outside what the model saw
            regions[name] = None
            continue
        weights = weights / shown
        logits = np.einsum("chw,hw->c", maps.condition.astype(np.float64), weights)
        levels = softmax(np.einsum("cshw,hw->cs", maps.severity.astype(np.float64), weights))
        probability = calibrated_probabilities(logits, temperatures)
        present = probability >= limits
        level = np.where(present, severity_levels(levels), 0)
        box = [round(rect[0] * scale[0]), round(rect[1] * scale[1])]
        box += [round((rect[2] - rect[0]) * scale[0]), round((rect[3] - rect[1]) * scale[1])]
        regions[name] = RegionScores(
            box=box,
            coverage=round(min(shown, 1.0), 4),
            conditions={
                c: RegionCondition(
                    probability=round(float(probability[i]), 6),
                    present=bool(present[i]),
                    severity=SEVERITY_LABELS[int(level[i])],
                )
                for i, c in enumerate(CONDITIONS)
            },
        )
    return RegionsAnswer(placed_on="face" if face is not None else "image", regions=regions)


# --- The overlay -----------------------------------------------------------------------------------------------


@cache
def _colormap(name: str) -> np.ndarray:
    """A [256, 3] uint8 lookup table from matplotlib's colormap (matplotlib.colors only: no pyplot, ~30 ms once)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap_overlay(
    image: Image.Image,
    cam: np.ndarray,
    window: Rect,
    boxes: Sequence[Rect] = (),
    alpha: float = 0.45,
    max_side: int = 512,
    colormap: str = "turbo",
) -> Image.Image:
    """`image` with one condition's map [h, w] over the window it covers: bilinear upsampling, min-max scaled (the
    map's own range, as CAM and Grad-CAM show it), coloured, blended; outside the window the image is dimmed (the
    model did not see it). `boxes` (image pixels) are outlined, e.g. the face box and the regions."""
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (min(max(round(v * scale), 0), side - 1) for v, side in zip(window[:2], size, strict=True))
    # At least one pixel, inside the picture: a 20,000 x 2 strip's input window scales to less than one.
    right = min(max(round(window[2] * scale), left + 1), size[0])
    bottom = min(max(round(window[3] * scale), top + 1), size[1])
    span = float(cam.max() - cam.min())
    normed = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam, dtype=np.float64)
    heat = Image.fromarray(normed.astype(np.float32), mode="F").resize(
        (right - left, bottom - top), Image.Resampling.BILINEAR
    )
    colours = Image.fromarray(_colormap(colormap)[np.clip(np.asarray(heat) * 255, 0, 255).astype(np.uint8)])
    out = Image.blend(base, Image.new("RGB", size, (0, 0, 0)), 0.5)  # dimmed outside the window
    region = base.crop((left, top, right, bottom))
    out.paste(Image.blend(region, colours, alpha), (left, top))
    draw = ImageDraw.Draw(out)
    for box in boxes:
        draw.rectangle([round(v * scale) for v in box], outline=(255, 255, 255), width=max(1, round(2 * scale)))
    return out


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)  # level 3: a third of the default's CPU
    return buffer.getvalue()
