"""The record every reader returns: one image, what is known about it, and the records it must not be split from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinserve.images import DATASET_SUFFIXES
from skinserve.labels import Targets

IMAGE_SUFFIXES = DATASET_SUFFIXES  # PNG first: a Shine sidecar's image is looked for in this order


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    relpath: str  # posix path relative to the dataset root: the record's stable name
    targets: Targets
    group_id: str  # an image and its mirrored twin share it, so a split never separates them
    source_format: str  # shine | folder | csv
    confidence: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """A record that was reported instead of used: which file and why."""

    path: str
    reason: str


@dataclass
class ReadResult:
    root: Path
    records: list[ImageRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
