"""Decoding raw logits into predictions: sigmoid, per-condition thresholds, severity. Numpy only, shared by
evaluation and the service, so both read the model's outputs the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from skinserve.labels import CONDITIONS, SEVERITY_LABELS

DEFAULT_THRESHOLD = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def threshold_vector(thresholds: Mapping[str, float] | None) -> np.ndarray:
    thresholds = thresholds or {}
    return np.asarray([float(thresholds.get(c, DEFAULT_THRESHOLD)) for c in CONDITIONS], dtype=np.float64)


def severity_levels(severity_probabilities: np.ndarray) -> np.ndarray:
    """The present level (1..3) per condition: the median of the level distribution given that the condition is there.

    The levels are ordered (mild < moderate < severe), and the median is the ordinal decision: the level that
    minimises the expected distance to the truth. The argmax ignores the order: with mild 0.40, moderate 0.25,
    severe 0.35 it says mild, though moderate is on the side of 60% of the mass. Measured against the argmax on
    benchmarks/recipe.py's unseen-seed test sets: severity accuracy +0.01 to +0.03 on every run compared."""
    present = severity_probabilities[..., 1:]
    cumulative = np.cumsum(present, axis=-1)
    half = 0.5 * cumulative[..., -1:]  # the levels' share of the mass, whatever "none" takes
    return (cumulative >= half).argmax(axis=-1) + 1


def temperature_vector(temperatures: Mapping[str, float] | None) -> np.ndarray:
    """Per condition, the temperature its logit is divided by (1.0, no change, where none was fitted)."""
    temperatures = temperatures or {}
    return np.asarray([float(temperatures.get(c, 1.0)) for c in CONDITIONS], dtype=np.float64)


def calibrated_probabilities(condition_logits: np.ndarray, temperatures: Mapping[str, float] | None) -> np.ndarray:
    """sigmoid(logit / T) per condition: the probabilities a client reads, with the temperatures fitted on the
    validation split (`skinserve.modeling.calibration`); thresholds are tuned on these."""
    return sigmoid(np.asarray(condition_logits, dtype=np.float64) / temperature_vector(temperatures))


def decode(
    condition_logits: np.ndarray,
    severity_logits: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
    temperatures: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One dict per image: per condition probability (calibrated with `temperatures`), present, severity label and
    probabilities; summary fields."""
    probabilities = calibrated_probabilities(condition_logits, temperatures)
    severity_probs = softmax(np.asarray(severity_logits, dtype=np.float64))
    present = probabilities >= threshold_vector(thresholds)
    levels = np.where(present, severity_levels(severity_probs), 0)
    results = []
    for i in range(probabilities.shape[0]):
        conditions = {
            name: {
                "probability": round(float(probabilities[i, j]), 6),
                "present": bool(present[i, j]),
                "severity": {
                    "label": SEVERITY_LABELS[int(levels[i, j])],
                    "probabilities": {
                        s: round(float(severity_probs[i, j, k]), 6) for k, s in enumerate(SEVERITY_LABELS)
                    },
                },
            }
            for j, name in enumerate(CONDITIONS)
        }
        found = [j for j in range(len(CONDITIONS)) if present[i, j]]
        primary = CONDITIONS[max(found, key=lambda j: probabilities[i, j])] if found else None
        results.append({"conditions": conditions, "primary_concern": primary, "healthy": not found})
    return results
