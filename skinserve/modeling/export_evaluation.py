"""Evaluation of an export directory: its artifact through `skinserve.runtime`, its manifest's preprocessing alone.

Torch-free: the metrics are `modeling.metrics.evaluate_outputs`, as for a checkpoint, so the two reports compare key
by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skinserve.data.records import ImageRecord
from skinserve.data.split import records_of_split
from skinserve.images import open_rgb
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.modeling.metrics import evaluate_outputs, slice_values
from skinserve.modeling.targets import target_arrays
from skinserve.preprocess import Preprocessing, model_batch
from skinserve.runtime import ExportedModel, load_exported_model


def predict_records(
    model: ExportedModel, records: list[ImageRecord], pre: Preprocessing, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Condition [N, 7] and severity [N, 7, 4] logits, in record order."""
    conditions = [np.zeros((0, len(CONDITIONS)), np.float32)]
    severity = [np.zeros((0, len(CONDITIONS), len(SEVERITY_LABELS)), np.float32)]
    for start in range(0, len(records), batch_size):
        images = [open_rgb(record.path) for record in records[start : start + batch_size]]
        batch_conditions, batch_severity = model.predict(model_batch(images, pre))
        conditions.append(batch_conditions)
        severity.append(batch_severity)
    return np.concatenate(conditions), np.concatenate(severity)


def evaluate_export(
    export_dir: Path,
    data: Path,
    split: str = "test",
    runtime: str = "auto",
    fmt: str = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """`fmt` is the dataset's format (auto, shine, folder, csv); `runtime` as in `load_exported_model`."""
    model = load_exported_model(export_dir, runtime)
    manifest = model.manifest
    records = records_of_split(data, split, manifest.split_seed, manifest.dataset_fingerprint, fmt)
    conditions, severity = predict_records(model, records, manifest.preprocess, batch_size)
    metrics = evaluate_outputs(
        conditions, severity, target_arrays(records), manifest.thresholds, slices=slice_values(records)
    )
    return metrics | {
        "split": split,
        "export": str(export_dir),
        "runtime": model.runtime,
        "artifact": model.artifact,
        "model": manifest.tag,
    }
