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
            notes=f"test split: {metrics['n_images']} images; severity accuracy {metrics['severity_accuracy']:.4f}, "
            f"MAE {metrics['severity_mae']:.4f}; best epoch {metrics['best_epoch']} of {metrics['epochs_run']}",
        )
    finally:
        engine.dispose()
