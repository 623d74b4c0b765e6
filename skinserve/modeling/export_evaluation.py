"""Evaluation of an export directory: its artifact through `skinserve.runtime`, each image through the service's
own preparation (`skinserve.serve.uploads.prepare_upload`: the same decode, face crop when the model was trained on
them, resize and normalisation as a request), so the score is the served model's.

Torch-free: the metrics are `modeling.metrics.evaluate_outputs`, as for a checkpoint, so the two reports compare key
by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skinserve.data.records import ImageRecord
from skinserve.data.split import records_of_split, split_ratios_of
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.modeling.metrics import evaluate_records
from skinserve.preprocess import Preprocessing
from skinserve.runtime import ExportedModel, load_exported_model
from skinserve.serve.uploads import UploadLimits, prepare_upload


def predict_records(
    model: ExportedModel, records: list[ImageRecord], pre: Preprocessing, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Condition [N, 7] and severity [N, 7, 4] logits, in record order."""
    faces = _face_stage(pre)
    conditions = [np.zeros((0, len(CONDITIONS)), np.float32)]
    severity = [np.zeros((0, len(CONDITIONS), len(SEVERITY_LABELS)), np.float32)]
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        arrays = [prepare_upload(r.path.read_bytes(), pre, LIMITS, faces).array for r in chunk]
        batch_conditions, batch_severity = model.predict(np.stack(arrays))
        conditions.append(batch_conditions)
        severity.append(batch_severity)
    return np.concatenate(conditions), np.concatenate(severity)


# A dataset's own files are not uploads: no size cap beyond what PIL itself refuses as a bomb.
LIMITS = UploadLimits(max_bytes=2**40, max_pixels=2**31)


def _face_stage(pre: Preprocessing):
    """The service's face crop when the model was trained on crops (the stage's settings from the environment, as
    the service reads them); otherwise none, and the stage never changes the model's input."""
    if pre.face_crop_margin is None:
        return None
    from skinserve.serve.quality import FaceStage

    return FaceStage.cropping_only(pre.face_crop_margin)  # an image the service would refuse is still scored


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
    ratios = split_ratios_of(manifest.source.get("config") or {})
    records = records_of_split(data, split, manifest.split_seed, manifest.dataset_fingerprint, fmt, ratios)
    conditions, severity = predict_records(model, records, manifest.preprocess, batch_size)
    priors = manifest.source.get("metrics", {}).get("priors")
    metrics = evaluate_records(conditions, severity, records, manifest.thresholds, manifest.temperatures, priors)
    return metrics | {
        "split": split,
        "export": str(export_dir),
        "runtime": model.runtime,
        "artifact": model.artifact,
        "model": manifest.tag,
    }
