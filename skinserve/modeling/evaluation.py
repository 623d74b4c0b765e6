"""Evaluation of a checkpoint on a dataset: the logits of every image, then the metrics of `modeling.metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from skinserve.data.records import ImageRecord
from skinserve.data.split import records_of_split, split_ratios_of
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.dataset import SkinImageDataset, eval_transform
from skinserve.modeling.metrics import evaluate_records
from skinserve.modeling.model import model_from_checkpoint
from skinserve.preprocess import Preprocessing


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    records: list[ImageRecord],
    pre: Preprocessing,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Condition [N, 7], severity [N, 7, 4] and skin-type [N, 5] logits (None without that head), in record order."""
    model.eval()
    loader = DataLoader(SkinImageDataset(records, eval_transform(pre), pre), batch_size=batch_size, num_workers=workers)
    chunks: list[list[np.ndarray]] = [[], [], []]
    for batch in loader:
        outputs = model(batch["image"].to(device))
        for i, output in enumerate(outputs):
            chunks[i].append(output.float().cpu().numpy())
    if not chunks[0]:
        return (
            np.zeros((0, len(CONDITIONS)), np.float32),
            np.zeros((0, len(CONDITIONS), len(SEVERITY_LABELS)), np.float32),
            None,
        )
    skin = np.concatenate(chunks[2]) if chunks[2] else None
    return np.concatenate(chunks[0]), np.concatenate(chunks[1]), skin


def evaluate_checkpoint(path: Path, data: Path, split: str = "test", fmt: str = "auto") -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    ratios = split_ratios_of(checkpoint.config)
    records = records_of_split(data, split, checkpoint.split_seed, checkpoint.dataset_fingerprint, fmt, ratios)
    model = model_from_checkpoint(checkpoint)
    conditions, severity, _ = predict_logits(model, records, checkpoint.preprocessing)
    metrics = evaluate_records(
        conditions, severity, records, checkpoint.thresholds, checkpoint.temperatures, checkpoint.metrics.get("priors")
    )
    return metrics | {"split": split, "checkpoint": str(path), "runtime": "pytorch"}
