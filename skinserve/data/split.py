"""A seeded, stratified, grouped train/val/test split, saved with the dataset's fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from skinserve.data.records import ImageRecord
from skinserve.errors import SkinserveError

SPLITS: tuple[str, ...] = ("train", "val", "test")
# 80/10/10: a small set needs its images for training more than a wide validation side (benchmarks/recipe.py).
DEFAULT_RATIOS: tuple[float, float, float] = (0.80, 0.10, 0.10)
# What every checkpoint and manifest written before the ratios were recorded in the training config was split with.
LEGACY_RATIOS: tuple[float, float, float] = (0.70, 0.15, 0.15)
RARE = "~rare"


class SplitMismatch(SkinserveError):
    """A saved split that belongs to another version of the dataset."""


@dataclass(frozen=True)
class DatasetSplit:
    fingerprint: str
    seed: int
    ratios: tuple[float, float, float]
    assignments: dict[str, str]  # relpath -> train | val | test

    def counts(self) -> dict[str, int]:
        counts = Counter(self.assignments.values())
        return {name: counts.get(name, 0) for name in SPLITS}

    def records(self, records: list[ImageRecord], split: str) -> list[ImageRecord]:
        return [r for r in records if self.assignments.get(r.relpath) == split]

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = asdict(self) | {"counts": self.counts()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: Path, records: list[ImageRecord] | None = None) -> DatasetSplit:
        """Read a saved split; given the records, refuse it if the dataset has changed since it was made."""
        data = json.loads(Path(path).read_text())
        split = cls(data["fingerprint"], data["seed"], tuple(data["ratios"]), data["assignments"])
        if records is not None and (now := dataset_fingerprint(records)) != split.fingerprint:
            raise SplitMismatch(f"{path} was made for dataset {split.fingerprint[:12]}, this one is {now[:12]}")
        return split


def dataset_fingerprint(records: list[ImageRecord]) -> str:
    """SHA-256 over every image's bytes, name and stratum: any change to files or labels changes it."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.relpath):
        content = hashlib.sha256(record.path.read_bytes()).hexdigest()
        digest.update(f"{record.relpath}\t{content}\t{record.targets.stratum()}\n".encode())
    return digest.hexdigest()


def split_dataset(
    records: list[ImageRecord], seed: int = 0, ratios: tuple[float, float, float] = DEFAULT_RATIOS
) -> DatasetSplit:
    """Assign whole groups to splits, stratum by stratum, so each condition x severity cell is spread as `ratios` say.

    A set the publisher ships already split (every record's `split` metadata set by its reader) keeps that split.
    Written by hand: scikit-learn's StratifiedGroupKFold makes k equal folds, which cannot express 80/10/10
    on cells of five groups; this allocates each cell by largest remainder and keeps a group on one side.
    """
    published = published_split(records, seed)
    if published is not None:
        return published
    if abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"split ratios must be non-negative and sum to 1, got {ratios}")
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.relpath):
        groups[record.group_id].append(record)
    strata: dict[str, list[str]] = defaultdict(list)
    for group_id, members in sorted(groups.items()):
        strata[_group_stratum(members)].append(group_id)
    # Cells too small to spread (rare condition combinations) share one pool, so they still reach val and test.
    rare = sorted(s for s, ids in strata.items() if len(ids) < len(SPLITS))
    if len(rare) > 1:
        strata[RARE] = sorted(g for s in rare for g in strata.pop(s))
    rng = np.random.default_rng(seed)
    assignments: dict[str, str] = {}
    for stratum in sorted(strata):
        group_ids = strata[stratum]
        order = rng.permutation(len(group_ids))
        sizes = _allocation(len(group_ids), ratios)
        bounds = np.cumsum(sizes)
        for rank, index in enumerate(order):
            split = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
            for record in groups[group_ids[index]]:
                assignments[record.relpath] = split
    return DatasetSplit(dataset_fingerprint(records), seed, tuple(ratios), assignments)


def published_split(records: list[ImageRecord], seed: int = 0) -> DatasetSplit | None:
    """The publisher's split, when every record carries one; a set shipped without `val` gets 15% of train as val."""
    marked = [r.metadata.get("split") for r in records]
    if not records or all(m is None for m in marked):
        return None
    if any(m is None for m in marked) or not set(marked) <= set(SPLITS):
        unmarked = sum(m is None for m in marked)
        raise ValueError(
            f"{unmarked} of {len(records)} records carry no published split (or an unknown one: "
            f"{sorted(set(marked) - set(SPLITS) - {None})}): a set is either split by its publisher or not at all"
        )
    assignments = {r.relpath: str(r.metadata["split"]) for r in records}
    if "val" not in assignments.values():
        train = [replace(r, metadata={k: v for k, v in r.metadata.items() if k != "split"}) for r in records]
        train = [r for r in train if assignments[r.relpath] == "train"]
        carved = split_dataset(train, seed=seed, ratios=(0.85, 0.15, 0.0))
        assignments |= carved.assignments
    counts = Counter(assignments.values())
    ratios = tuple(round(counts.get(name, 0) / len(records), 4) for name in SPLITS)
    return DatasetSplit(dataset_fingerprint(records), seed, ratios, assignments)  # type: ignore[arg-type]


def _group_stratum(members: list[ImageRecord]) -> str:
    return Counter(m.targets.stratum() for m in members).most_common(1)[0][0]


def _allocation(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Group counts per split: every split with a share gets one group when there are enough to go round."""
    wanted = [n * r for r in ratios]
    sizes = [int(w) for w in wanted]
    floor = 1 if n >= sum(1 for r in ratios if r > 0) else 0
    sizes = [max(s, floor) if r > 0 else 0 for s, r in zip(sizes, ratios, strict=True)]
    while sum(sizes) > n:
        reducible = [i for i in range(len(sizes)) if sizes[i] > floor]
        largest = max(reducible, key=lambda i: sizes[i] - wanted[i])
        sizes[largest] -= 1
    while sum(sizes) < n:
        neediest = max(range(len(sizes)), key=lambda i: wanted[i] - sizes[i])
        sizes[neediest] += 1
    return sizes


def split_ratios_of(config: dict) -> tuple[float, float, float]:
    """The split ratios a training config (a checkpoint's or a manifest's copy) ran with."""
    ratios = config.get("split_ratios")
    return tuple(float(r) for r in ratios) if ratios else LEGACY_RATIOS  # type: ignore[return-value]


def records_of_split(
    data: Path,
    split: str,
    seed: int,
    fingerprint: str | None,
    fmt: str = "auto",
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
) -> list[ImageRecord]:
    """The records of one side of the split a model was trained with (`seed`, `fingerprint` and `ratios` as its
    checkpoint or manifest recorded them), or all of them (`split="all"`)."""
    from skinserve.data.sources import read_dataset

    records = read_dataset(data, fmt).records  # type: ignore[arg-type]
    if split == "all":
        return records
    made = split_dataset(records, seed=seed, ratios=ratios)
    if made.fingerprint != fingerprint:
        raise SplitMismatch(
            f"{data} is not the dataset this model was trained on (fingerprint {made.fingerprint[:12]} != "
            f"{str(fingerprint)[:12]}): its '{split}' split is unknown; use --split all"
        )
    return made.records(records, split)
