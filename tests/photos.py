"""Real photos that installed packages ship, for the face and quality tests: one face, and two without."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image


def package_file(package: str, *parts: str) -> Path:
    return Path(importlib.util.find_spec(package).origin).parent.joinpath(*parts)


GRACE_HOPPER = package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")  # one face
CHINA = package_file("sklearn", "datasets", "images", "china.jpg")  # a temple, no face
FLOWER = package_file("sklearn", "datasets", "images", "flower.jpg")  # no face


def open_photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
