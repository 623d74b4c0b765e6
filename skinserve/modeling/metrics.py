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
from skinserve.modeling.targets import TargetArrays, target_arrays
from skinserve.predictions import (
    calibrated_probabilities,
    severity_levels,
    softmax,
    temperature_vector,
    threshold_vector,
)

THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)


SLICE_FIELDS = ("skin_tone", "gender")


def slice_values(records: list[ImageRecord]) -> dict[str, list[str | None]]:
    """Per fairness field, each record's value (None where unknown)."""
    return {name: [getattr(r.targets.demographics, name) for r in records] for name in SLICE_FIELDS}


def tune_thresholds(probabilities: np.ndarray, targets: TargetArrays) -> dict[str, float]:
    """Per condition, the threshold on the grid with the best F1 on these (validation) images; 0.5 if no positives.

    Where several thresholds tie for the best F1, the middle one: on a small validation split that the model
    separates, every threshold between the highest negative and the lowest positive ties, and the lowest of them
    (what a plain argmax takes) sits against the negatives, so unseen negatives cross it. Measured on seed 0 of
    benchmarks/recipe.py: the lowest tied threshold was 0.05-0.25 for every condition, and test macro-F1 lower than
    at 0.5."""
    thresholds = {}
    for j, name in enumerate(CONDITIONS):
        known = targets.condition_mask[:, j]
        truth = targets.conditions[known, j] > 0.5
        if not truth.any():
            thresholds[name] = 0.5
            continue
        scores = np.asarray([f1_score(truth, probabilities[known, j] >= t, zero_division=0) for t in THRESHOLD_GRID])
        tied = THRESHOLD_GRID[np.isclose(scores, scores.max())]
        thresholds[name] = float(tied[(len(tied) - 1) // 2])
    return thresholds


SMALL_SLICE = 20  # fewer images than this in a slice: its scores are noise, and the report says so
BOOTSTRAP_RESAMPLES = 1000


def evaluate_outputs(
    condition_logits: np.ndarray,
    severity_logits: np.ndarray,
    targets: TargetArrays,
    thresholds: Mapping[str, float] | None = None,
    slices: Mapping[str, list[str | None]] | None = None,
    temperatures: Mapping[str, float] | None = None,
    priors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """All metrics of the evaluation report; `slices` maps a field (skin_tone, gender) to each image's value.

    Probabilities are calibrated with `temperatures` before the thresholds apply, as the service does. Beside the
    scores: bootstrap 95% intervals of macro-F1 and severity accuracy, per-slice scores with intervals and the gap
    between the best and worst slice, and, given the training set's `priors`, what the trivial baselines score on
    the same images."""
    probabilities = calibrated_probabilities(condition_logits, temperatures)
    predicted_levels = severity_levels(softmax(severity_logits))
    report = _core_metrics(probabilities, predicted_levels, targets, thresholds)
    report["intervals"] = bootstrap_intervals(probabilities, predicted_levels, targets, thresholds)
    report["thresholds"] = {c: float(t) for c, t in zip(CONDITIONS, threshold_vector(thresholds), strict=True)}
    if temperatures:
        vector = temperature_vector(temperatures)
        report["temperatures"] = {c: float(t) for c, t in zip(CONDITIONS, vector, strict=True)}
    report["slices"], report["slice_gaps"], report["warnings"] = {}, {}, []
    for field, values in (slices or {}).items():
        groups: dict[str, Any] = {}
        for value in sorted({v for v in values if v is not None}):
            rows = np.asarray([v == value for v in values])
            part = _core_metrics(probabilities[rows], predicted_levels[rows], _subset(targets, rows), thresholds)
            groups[value] = {k: part[k] for k in ("n_images", "macro_f1", "micro_f1", "severity_accuracy")}
            groups[value]["intervals"] = bootstrap_intervals(
                probabilities[rows], predicted_levels[rows], _subset(targets, rows), thresholds
            )
            if part["n_images"] < SMALL_SLICE:
                report["warnings"].append(
                    f"{field}={value!r} holds {part['n_images']} images (fewer than {SMALL_SLICE}): "
                    "its scores are too noisy to compare"
                )
        report["slices"][field] = groups
        if len(groups) > 1:
            report["slice_gaps"][field] = {
                key: round(max(g[key] for g in groups.values()) - min(g[key] for g in groups.values()), 4)
                for key in ("macro_f1", "severity_accuracy")
            }
    if priors:
        report["baselines"] = {
            name: {k: m[k] for k in ("macro_f1", "severity_accuracy", "severity_mae")}
            for name, m in trivial_baselines(priors, targets).items()
        }
    return report


def evaluate_records(
    condition_logits: np.ndarray,
    severity_logits: np.ndarray,
    records: list[ImageRecord],
    thresholds: Mapping[str, float] | None,
    temperatures: Mapping[str, float] | None,
    priors: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`evaluate_outputs` on these records' targets and slices: a checkpoint's and an export's evaluation alike."""
    return evaluate_outputs(
        condition_logits,
        severity_logits,
        target_arrays(records),
        thresholds,
        slices=slice_values(records),
        temperatures=temperatures,
        priors=priors,
    )


def bootstrap_intervals(
    probabilities: np.ndarray,
    predicted_levels: np.ndarray,
    targets: TargetArrays,
    thresholds: Mapping[str, float] | None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap 95% intervals of macro-F1 and severity accuracy over images resampled with replacement.

    Each resample is a weight per image (how often it was drawn), so a thousand resamples are a few matrix products:
    F1 per condition from weighted true/false positive and negative counts (0 where a condition has no positive in
    a resample, as scikit-learn's zero_division=0), macro over the conditions with positives in the full set.
    """
    n = len(targets)
    if n == 0:
        return {"macro_f1": None, "severity_accuracy": None}
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # [B, N]
    truth = (targets.conditions > 0.5) & targets.condition_mask
    predicted = (probabilities >= threshold_vector(thresholds)) & targets.condition_mask
    tp = weights @ (truth & predicted)
    fp = weights @ (~truth & predicted)
    fn = weights @ (truth & ~predicted)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    scored = truth.any(axis=0)
    intervals: dict[str, list[float] | None] = {"macro_f1": None, "severity_accuracy": None}
    if scored.any():
        intervals["macro_f1"] = _percentiles(f1[:, scored].mean(axis=1))
    rows = targets.present_with_known_severity()
    if rows.any():
        correct = (targets.severity == predicted_levels) & rows
        counted = weights @ rows
        accuracy = np.divide(
            (weights @ correct).sum(axis=1),
            counted.sum(axis=1),
            out=np.zeros(resamples),
            where=counted.sum(axis=1) > 0,
        )
        intervals["severity_accuracy"] = _percentiles(accuracy)
    return intervals


def _percentiles(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def training_priors(train: TargetArrays) -> dict[str, Any]:
    """What the trivial baselines know of the training set: each condition's share of images where it is present,
    and the most frequent present severity level. Stored in a checkpoint's metrics, so any evaluation can print the
    baselines beside its scores."""
    known = train.condition_mask
    prior = ((train.conditions > 0.5) & known).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    levels = train.severity[train.present_with_known_severity()]
    counts = np.bincount(levels, minlength=len(SEVERITY_LABELS))
    majority = int(counts[1:].argmax() + 1) if levels.size else 1
    return {
        "condition_prior": {c: round(float(p), 4) for c, p in zip(CONDITIONS, prior, strict=True)},
        "majority_severity": SEVERITY_LABELS[majority],
    }


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


def trivial_baselines(priors: Mapping[str, Any], test: TargetArrays) -> dict[str, dict[str, Any]]:
    """What a model that never looks at the image scores on `test`, its guesses from the training `priors`
    (`training_priors`): all negative; each condition called present at random with its training prior (seeded);
    and with both, every present condition at the majority severity level. A score means something only by how far
    it stands above these."""
    n = len(test)
    prior = np.asarray([float(priors["condition_prior"].get(c, 0.0)) for c in CONDITIONS])
    majority = SEVERITY_LABELS.index(priors["majority_severity"])
    levels = np.full((n, len(CONDITIONS)), majority, dtype=np.int64)
    rng = np.random.default_rng(0)
    guesses = {
        "all negative": np.zeros((n, len(CONDITIONS))),
        "per-condition prior": (rng.random((n, len(CONDITIONS))) < prior).astype(np.float64),
    }
    return {f"{name}, majority severity": _core_metrics(guess, levels, test, None) for name, guess in guesses.items()}
