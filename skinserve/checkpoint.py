"""Checkpoint files: what a run saves (weights, config, labels, preprocessing, thresholds, metrics) and reads back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "skinserve-checkpoint/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically: an interrupted save never leaves a truncated last.pt behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload | {"format": CHECKPOINT_FORMAT}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read with weights_only: a checkpoint is plain data and tensors, never code to unpickle."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"no checkpoint at {path}") from err
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a skinserve checkpoint (format {CHECKPOINT_FORMAT})")
    return payload
