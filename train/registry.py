"""The training run's row in model_training_metrics, written through the registry of the data layer."""

from __future__ import annotations

import math
from typing import Any

from skinserve.config import Settings
from skinserve.db.engine import create_registry_engine
from skinserve.db.registry import add_training_metrics
from train.config import TrainConfig


def record_run(config: TrainConfig, metrics: dict[str, Any], dataset_size: int, duration_s: float) -> int:
    """accuracy = per-label accuracy over known labels; precision/recall = test macro; f1 = test macro-F1."""
    engine = create_registry_engine(Settings.from_env().database_url)
    try:
        return add_training_metrics(
            engine,
            model_name=config.model,
            version=config.version or f"{metrics['dataset_fingerprint'][:8]}-s{config.seed}",
            dataset_size=dataset_size,
            accuracy=metrics["label_accuracy"],
            precision_score=metrics["macro_precision"],
            recall=metrics["macro_recall"],
            f1_score=metrics["macro_f1"],
            training_duration_minutes=max(1, math.ceil(duration_s / 60)),
            hyperparameters=config.as_dict(),
            notes=run_notes(metrics),
        )
    finally:
        engine.dispose()


def run_notes(metrics: dict[str, Any]) -> str:
    """The row's notes: each score with its bootstrap 95% interval and the best trivial baseline beside it, the gap
    between the best and worst slice, the calibration and any warning (small slices)."""

    def scored(key: str) -> str:
        low, high = (metrics.get("intervals") or {}).get(key) or (math.nan, math.nan)
        baseline = max((b[key] for b in (metrics.get("baselines") or {}).values()), default=math.nan)
        return f"{metrics[key]:.4f} [95% CI {low:.4f}, {high:.4f}; best trivial baseline {baseline:.4f}]"

    parts = [
        f"test split: {metrics['n_images']} images",
        f"macro-F1 {scored('macro_f1')}",
        f"severity accuracy {scored('severity_accuracy')}, MAE {metrics['severity_mae']:.4f}",
        f"kept epoch {metrics['best_epoch']} of {metrics['epochs_run']} ({metrics.get('selected', 'best')})"
        + (" then refit on train+val" if metrics.get("refit") else ""),
    ]
    for field, gap in (metrics.get("slice_gaps") or {}).items():
        parts.append(f"{field} gap best-worst: macro-F1 {gap['macro_f1']:.4f}, severity {gap['severity_accuracy']:.4f}")
    test_calibration = (metrics.get("calibration") or {}).get("test") or {}
    if test_calibration.get("mean_ece_before") is not None:
        parts.append(
            f"mean ECE {test_calibration['mean_ece_before']:.4f} -> {test_calibration['mean_ece_after']:.4f} calibrated"
        )
    parts += metrics.get("warnings") or []
    return "; ".join(parts)
