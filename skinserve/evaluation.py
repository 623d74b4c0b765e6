"""Evaluation of a checkpoint on a dataset: the logits of every image, then the metrics of `skinserve.metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from skinserve.checkpoint import CheckpointError, load_checkpoint
from skinserve.data.records import ImageRecord
from skinserve.data.sources import read_dataset
from skinserve.data.split import split_dataset
from skinserve.dataset import SkinImageDataset, eval_transform
from skinserve.metrics import evaluate_outputs
from skinserve.model import model_from_checkpoint
from skinserve.preprocess import Preprocessing
from skinserve.targets import target_arrays

SLICE_FIELDS = ("skin_tone", "gender")


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
    loader = DataLoader(SkinImageDataset(records, eval_transform(pre)), batch_size=batch_size, num_workers=workers)
    chunks: list[list[np.ndarray]] = [[], [], []]
    for batch in loader:
        outputs = model(batch["image"].to(device))
        for i, output in enumerate(outputs):
            chunks[i].append(output.float().cpu().numpy())
    if not chunks[0]:
        return np.zeros((0, 7), np.float32), np.zeros((0, 7, 4), np.float32), None
    skin = np.concatenate(chunks[2]) if chunks[2] else None
    return np.concatenate(chunks[0]), np.concatenate(chunks[1]), skin


def slice_values(records: list[ImageRecord]) -> dict[str, list[str | None]]:
    """Per fairness field, each record's value (None where unknown)."""
    return {name: [getattr(r.targets.demographics, name) for r in records] for name in SLICE_FIELDS}


def records_for_split(data: Path, split: str, checkpoint: dict[str, Any], fmt: str = "auto") -> list[ImageRecord]:
    """The records to score: all of them, or one side of the split the checkpoint was trained with."""
    records = read_dataset(data, fmt).records  # type: ignore[arg-type]
    if split == "all":
        return records
    made = split_dataset(records, seed=int(checkpoint.get("split_seed", 0)))
    if made.fingerprint != checkpoint.get("dataset_fingerprint"):
        raise CheckpointError(
            f"{data} is not the dataset this checkpoint was trained on (fingerprint {made.fingerprint[:12]} != "
            f"{str(checkpoint.get('dataset_fingerprint'))[:12]}): its '{split}' split is unknown; use --split all"
        )
    return made.records(records, split)


def evaluate_checkpoint(path: Path, data: Path, split: str = "test", fmt: str = "auto") -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    records = records_for_split(data, split, checkpoint, fmt)
    model = model_from_checkpoint(checkpoint)
    pre = Preprocessing.from_dict(checkpoint["preprocessing"])
    conditions, severity, _ = predict_logits(model, records, pre)
    metrics = evaluate_outputs(
        conditions, severity, target_arrays(records), checkpoint.get("thresholds"), slices=slice_values(records)
    )
    return metrics | {"split": split, "checkpoint": str(path), "runtime": "pytorch"}
