"""The load tests' image corpus: synthetic faces re-encoded as JPEG and PNG at mixed sizes, or a folder of photos.

numpy, PIL and skinserve.data.synth only (no torch, no locust), so the Locust process, the runner and the benchmark
can all build or read it.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skinserve.errors import SkinserveError

DEFAULT_SIZES: tuple[int, ...] = (256, 512, 1024)
DEFAULT_FORMATS: tuple[str, ...] = ("jpeg", "png")
_FORMATS = {"jpeg": ("JPEG", ".jpg", "image/jpeg"), "png": ("PNG", ".png", "image/png")}
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# Photos carry sensor noise; drawn faces do not, and without it a 1024 px JPEG is 48 KB instead of ~150 KB and a
# PNG decodes faster than a photo's. Grain of this strength brings sizes and decode costs to a phone photo's.
_GRAIN_SIGMA = 3.0


class CorpusError(SkinserveError):
    """No usable images where the load test was told to find them."""


@dataclass(frozen=True)
class CorpusImage:
    name: str
    data: bytes
    content_type: str


def encoded_image(image: Image.Image, fmt: str) -> bytes:
    pil_format = _FORMATS[fmt][0]
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **({"quality": 90} if pil_format == "JPEG" else {}))
    return buffer.getvalue()


def write_corpus(
    out: Path,
    sizes: Sequence[int] = DEFAULT_SIZES,
    formats: Sequence[str] = DEFAULT_FORMATS,
    faces: int = 6,
    seed: int = 0,
) -> list[Path]:
    """`faces` synthetic faces, each written at every size in every format (faces x sizes x formats files)."""
    from skinserve.data.synth import SynthConfig, write_synthetic_set

    unknown = sorted(set(formats) - set(_FORMATS))
    if unknown:
        raise CorpusError(f"unknown image format(s) {unknown}; expected some of {sorted(_FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="skinserve-corpus-") as scratch:
        # Drawn at 256 px (1.2 s a face at 1024) and resized: the sizes and byte counts matter here, not the detail.
        write_synthetic_set(Path(scratch), SynthConfig(per_class=1, size=256, seed=seed, flip_fraction=0.0))
        drawn = sorted(p for p in Path(scratch).rglob("*") if p.suffix.lower() in (".png", ".jpg"))
        step = max(1, len(drawn) // faces)
        written = []
        for index, path in enumerate(drawn[::step][:faces]):
            with Image.open(path) as face:
                face = face.convert("RGB")
                for size in sizes:
                    image = _with_grain(face.resize((size, size), Image.Resampling.LANCZOS), rng)
                    for fmt in formats:
                        target = out / f"face{index:02d}_{size}{_FORMATS[fmt][1]}"
                        target.write_bytes(encoded_image(image, fmt))
                        written.append(target)
    return written


def _with_grain(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, _GRAIN_SIGMA, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def load_corpus(folder: Path) -> list[CorpusImage]:
    """Every JPEG, PNG or WebP file under `folder`, read into memory once (the load test must not wait on disk)."""
    if not folder.is_dir():
        raise CorpusError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _CONTENT_TYPES)
    if not paths:
        raise CorpusError(f"no .jpg, .jpeg, .png or .webp files under {folder}")
    return [CorpusImage(p.name, p.read_bytes(), _CONTENT_TYPES[p.suffix.lower()]) for p in paths]
