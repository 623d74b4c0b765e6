"""Calibrated condition probabilities: per-condition temperature scaling fitted on the validation split, and the
expected calibration error that says whether it helped (Guo et al., 2017, "On Calibration of Modern Neural
Networks"). Numpy and SciPy: evaluation of an export uses it without torch."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from skinserve.labels import CONDITIONS
from skinserve.modeling.targets import TargetArrays
from skinserve.predictions import calibrated_probabilities

ECE_BINS = 10
TEMPERATURE_RANGE = (0.05, 20.0)
MIN_PER_CLASS = 5  # fewer positives (or negatives) than this on val: a fitted temperature would be noise, keep 1.0


def fit_temperatures(condition_logits: np.ndarray, targets: TargetArrays) -> dict[str, float]:
    """Per condition, the T > 0 that minimises the binary log loss of sigmoid(logit / T) on these (validation)
    images; 1.0 where either class has fewer than MIN_PER_CLASS images here (too few to fit). Dividing by T keeps
    every ranking, so AUC is unchanged; thresholds are tuned afterwards on the calibrated probabilities."""
    temperatures = {}
    for j, name in enumerate(CONDITIONS):
        known = targets.condition_mask[:, j]
        truth = targets.conditions[known, j] > 0.5
        logits = condition_logits[known, j].astype(np.float64)
        if min(truth.sum(), (~truth).sum()) < MIN_PER_CLASS:
            temperatures[name] = 1.0
            continue
        signs = np.where(truth, 1.0, -1.0)

        def loss(log_t: float, signs=signs, logits=logits) -> float:  # mean -log sigmoid(sign * logit / T)
            return float(np.logaddexp(0.0, -signs * logits / np.exp(log_t)).mean())

        low, high = np.log(TEMPERATURE_RANGE)
        best = minimize_scalar(loss, bounds=(low, high), method="bounded")
        temperatures[name] = round(float(np.exp(best.x)), 4)
    return temperatures


def expected_calibration_error(
    condition_logits: np.ndarray, targets: TargetArrays, temperatures: Mapping[str, float] | None = None
) -> dict[str, float | None]:
    """Per condition, ECE over equal-width probability bins: sum over bins of (share of images) x |mean
    probability - share present|; None where no label is known."""
    probabilities = calibrated_probabilities(condition_logits, temperatures)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    report: dict[str, float | None] = {}
    for j, name in enumerate(CONDITIONS):
        known = targets.condition_mask[:, j]
        if not known.any():
            report[name] = None
            continue
        p, truth = probabilities[known, j], (targets.conditions[known, j] > 0.5).astype(np.float64)
        bins = np.clip(np.digitize(p, edges[1:-1]), 0, ECE_BINS - 1)
        error = 0.0
        for b in range(ECE_BINS):
            inside = bins == b
            if inside.any():
                error += inside.mean() * abs(p[inside].mean() - truth[inside].mean())
        report[name] = round(float(error), 4)
    return report


def calibration_report(
    condition_logits: np.ndarray, targets: TargetArrays, temperatures: Mapping[str, float] | None
) -> dict[str, object]:
    """ECE before and after the temperatures, per condition and their mean, for a metrics report."""
    before = expected_calibration_error(condition_logits, targets)
    after = expected_calibration_error(condition_logits, targets, temperatures)

    def mean(values: dict[str, float | None]) -> float | None:
        known = [v for v in values.values() if v is not None]
        return round(float(np.mean(known)), 4) if known else None

    return {
        "temperatures": dict(temperatures or {}),
        "ece_before": before,
        "ece_after": after,
        "mean_ece_before": mean(before),
        "mean_ece_after": mean(after),
    }
