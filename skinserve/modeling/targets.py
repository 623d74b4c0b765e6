"""Records as arrays: condition targets with their masks, severity classes (-100 where unknown), skin type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skinserve.data.records import ImageRecord
from skinserve.labels import CONDITIONS, SEVERITY_LABELS, SKIN_TYPES

IGNORE = -100  # torch's cross-entropy ignore_index: a target that is not known


@dataclass(frozen=True)
class TargetArrays:
    conditions: np.ndarray  # [N, 7] float32, 1 present / 0 absent (0 where unknown)
    condition_mask: np.ndarray  # [N, 7] bool, True where known
    severity: np.ndarray  # [N, 7] int64, 0..3 or IGNORE
    skin_type: np.ndarray  # [N] int64, index into SKIN_TYPES or IGNORE

    def __len__(self) -> int:
        return len(self.skin_type)

    def present_with_known_severity(self) -> np.ndarray:
        return (self.conditions > 0.5) & self.condition_mask & (self.severity != IGNORE)


def record_targets(record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    conditions = np.zeros(len(CONDITIONS), dtype=np.float32)
    mask = np.zeros(len(CONDITIONS), dtype=bool)
    severity = np.full(len(CONDITIONS), IGNORE, dtype=np.int64)
    for j, name in enumerate(CONDITIONS):
        label = record.targets.conditions.get(name)
        if label is None:
            continue
        conditions[j], mask[j] = float(label.present), True
        if label.severity is not None:
            severity[j] = int(label.severity)
    skin_type = SKIN_TYPES.index(record.targets.skin_type) if record.targets.skin_type in SKIN_TYPES else IGNORE
    return conditions, mask, severity, skin_type


def target_arrays(records: list[ImageRecord]) -> TargetArrays:
    rows = [record_targets(r) for r in records]
    if not rows:
        empty = np.zeros((0, len(CONDITIONS)))
        return TargetArrays(empty.astype(np.float32), empty.astype(bool), empty.astype(np.int64), np.zeros(0, np.int64))
    return TargetArrays(
        np.stack([r[0] for r in rows]),
        np.stack([r[1] for r in rows]),
        np.stack([r[2] for r in rows]),
        np.asarray([r[3] for r in rows], dtype=np.int64),
    )


def present_severity(targets: TargetArrays) -> TargetArrays:
    """The severity targets kept only where the condition is present (IGNORE elsewhere): what the severity head
    learns by default, and what severity accuracy scores."""
    severity = np.where(targets.present_with_known_severity(), targets.severity, IGNORE)
    return TargetArrays(targets.conditions, targets.condition_mask, severity, targets.skin_type)


def severity_weights(targets: TargetArrays, cap: float = 20.0) -> np.ndarray:
    """Cross-entropy class weights for none/mild/moderate/severe: inverse frequency among known levels.

    Absent conditions make "none" about six times in seven; unweighted, the head learns the levels of present
    conditions (what severity accuracy measures) from a small share of its gradient.
    """
    known = targets.severity[targets.severity != IGNORE]
    levels = len(SEVERITY_LABELS)
    counts = np.bincount(known, minlength=levels).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (levels * np.maximum(counts, 1)), 1.0)
    weights = np.clip(weights, 1.0 / cap, cap)
    return (weights / weights.mean()).astype(np.float32)


def positive_weights(targets: TargetArrays, cap: float = 20.0) -> np.ndarray:
    """BCE pos_weight per condition: negatives over positives among known labels of the training split."""
    positives = ((targets.conditions > 0.5) & targets.condition_mask).sum(axis=0)
    negatives = ((targets.conditions < 0.5) & targets.condition_mask).sum(axis=0)
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return np.clip(weights, 1.0, cap).astype(np.float32)
