"""Evaluation metrics over masked multi-label targets (scikit-learn does the arithmetic).

Every metric counts only what is known: a condition a record does not name is left out of that condition's
figures, and severity is scored only on images where the condition is present and its level is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from skinserve.data.records import ImageRecord
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.modeling.targets import TargetArrays
from skinserve.predictions import severity_levels, sigmoid, softmax, threshold_vector

THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)


SLICE_FIELDS = ("skin_tone", "gender")


def slice_values(records: list[ImageRecord]) -> dict[str, list[str | None]]:
    """Per fairness field, each record's value (None where unknown)."""
    return {name: [getattr(r.targets.demographics, name) for r in records] for name in SLICE_FIELDS}


def tune_thresholds(probabilities: np.ndarray, targets: TargetArrays) -> dict[str, float]:
    """Per condition, the threshold on the grid with the best F1 on these (validation) images; 0.5 if no positives."""
    thresholds = {}
    for j, name in enumerate(CONDITIONS):
        known = targets.condition_mask[:, j]
        truth = targets.conditions[known, j] > 0.5
        if not truth.any():
            thresholds[name] = 0.5
            continue
        scores = [f1_score(truth, probabilities[known, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        thresholds[name] = float(THRESHOLD_GRID[int(np.argmax(scores))])
    return thresholds


def evaluate_outputs(
    condition_logits: np.ndarray,
    severity_logits: np.ndarray,
    targets: TargetArrays,
    thresholds: Mapping[str, float] | None = None,
    slices: Mapping[str, list[str | None]] | None = None,
) -> dict[str, Any]:
    """All metrics of the evaluation report; `slices` maps a field (skin_tone, gender) to each image's value."""
    probabilities = sigmoid(condition_logits)
    predicted_levels = severity_levels(softmax(severity_logits))
    report = _core_metrics(probabilities, predicted_levels, targets, thresholds)
    report["thresholds"] = {c: float(t) for c, t in zip(CONDITIONS, threshold_vector(thresholds), strict=True)}
    report["slices"] = {}
    for field, values in (slices or {}).items():
        groups: dict[str, Any] = {}
        for value in sorted({v for v in values if v is not None}):
            rows = np.asarray([v == value for v in values])
            part = _core_metrics(probabilities[rows], predicted_levels[rows], _subset(targets, rows), thresholds)
            groups[value] = {k: part[k] for k in ("n_images", "macro_f1", "micro_f1", "severity_accuracy")}
        report["slices"][field] = groups
    return report


def _subset(targets: TargetArrays, rows: np.ndarray) -> TargetArrays:
    return TargetArrays(
        targets.conditions[rows], targets.condition_mask[rows], targets.severity[rows], targets.skin_type[rows]
    )


def _core_metrics(probabilities, predicted_levels, targets: TargetArrays, thresholds) -> dict[str, Any]:
    predicted = probabilities >= threshold_vector(thresholds)
    truth = targets.conditions > 0.5
    known = targets.condition_mask
    per_condition = {}
    for j, name in enumerate(CONDITIONS):
        per_condition[name] = _condition_metrics(
            truth[known[:, j], j], predicted[known[:, j], j], probabilities[known[:, j], j]
        )
    scored = [m for m in per_condition.values() if m["support"] > 0]
    all_known = known.all(axis=1)
    return {
        "n_images": int(len(targets)),
        "macro_f1": float(np.mean([m["f1"] for m in scored])) if scored else 0.0,
        "macro_precision": float(np.mean([m["precision"] for m in scored])) if scored else 0.0,
        "macro_recall": float(np.mean([m["recall"] for m in scored])) if scored else 0.0,
        "micro_f1": float(f1_score(truth[known], predicted[known], zero_division=0)) if known.any() else 0.0,
        "label_accuracy": float((truth[known] == predicted[known]).mean()) if known.any() else 0.0,
        "exact_match": float((truth[all_known] == predicted[all_known]).all(axis=1).mean()) if all_known.any() else 0.0,
        "per_condition": per_condition,
        **_severity_metrics(predicted_levels, targets),
    }


def _condition_metrics(truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    if truth.size == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "auc": None, "support": 0, "known": 0}
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0)
    auc = float(roc_auc_score(truth, probabilities)) if 0 < truth.sum() < truth.size else None
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": auc,
        "support": int(truth.sum()),
        "known": int(truth.size),
    }


def _severity_metrics(predicted_levels: np.ndarray, targets: TargetArrays) -> dict[str, Any]:
    scored = targets.present_with_known_severity()
    if not scored.any():
        return {
            "severity_accuracy": 0.0,
            "severity_weighted_f1": 0.0,
            "severity_mae": 0.0,
            "severity_support": 0,
            "severity_confusion": [],
        }
    truth = targets.severity[scored]
    guess = predicted_levels[scored]
    confusion = np.zeros((len(SEVERITY_LABELS), len(SEVERITY_LABELS)), dtype=int)
    np.add.at(confusion, (truth, guess), 1)
    return {
        "severity_accuracy": float((truth == guess).mean()),
        "severity_weighted_f1": float(f1_score(truth, guess, average="weighted", zero_division=0)),
        "severity_mae": float(np.abs(truth - guess).mean()),
        "severity_support": int(scored.sum()),
        "severity_confusion": confusion.tolist(),  # rows: truth none..severe, columns: predicted
    }
