"""Checkpoint files: the typed contract between training and everything that rebuilds its model.

A `Checkpoint` holds what is needed to rebuild and use the model (its `ModelSpec`, as nanoGPT's `GPTConfig(**args)`
rebuilds a model), the preprocessing, the label schema, tuned thresholds and metrics, and, in `last.pt`, what a
resumed run needs. It is written and read only through `save_checkpoint` / `load_checkpoint`; its `format` carries a
version, and a file written by a newer skinserve is refused with a message naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, SEVERITY_LABELS, SKIN_TYPES
from skinserve.manifest import format_version
from skinserve.preprocess import Preprocessing

CHECKPOINT_KIND = "skinserve-checkpoint"
CHECKPOINT_VERSION = 2  # 2: temperatures
CHECKPOINT_FORMAT = f"{CHECKPOINT_KIND}/{CHECKPOINT_VERSION}"
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "run_state")  # last.pt only


class CheckpointError(SkinserveError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """The arguments that rebuild the network: `create_skin_model(**spec.arguments())`."""

    name: str  # a timm backbone
    img_size: int
    skin_type_head: bool = False
    drop_rate: float = 0.0
    num_features: int | None = None  # the backbone's, for readers that size heads or maps without building it


@dataclass(frozen=True)
class LabelSchema:
    conditions: tuple[str, ...] = CONDITIONS
    severities: tuple[str, ...] = SEVERITY_LABELS
    skin_types: tuple[str, ...] = SKIN_TYPES


@dataclass(frozen=True)
class Checkpoint:
    model: ModelSpec
    preprocessing: Preprocessing
    state_dict: dict[str, Any]
    labels: LabelSchema = LabelSchema()
    thresholds: dict[str, float] = field(default_factory=dict)
    # Per condition, the temperature its logit is divided by before the sigmoid (fitted on val; none: 1.0).
    temperatures: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # {"val": {...}, "test": {...}}
    config: dict[str, Any] = field(default_factory=dict)  # the training config, as run
    dataset_fingerprint: str | None = None
    split_seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    resume: dict[str, Any] | None = None  # optimizer, scheduler, scaler and run state: last.pt only

    def replace(self, **changes: Any) -> Checkpoint:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data and tensors, as `torch.load(weights_only=True)` reads them back."""
        labels = {name: list(values) for name, values in dataclasses.asdict(self.labels).items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "model": dataclasses.asdict(self.model),
            "preprocessing": self.preprocessing.as_dict(),
            "labels": labels,
            "thresholds": dict(self.thresholds),
            "temperatures": dict(self.temperatures),
            "metrics": self.metrics,
            "config": self.config,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split_seed": self.split_seed,
            "versions": self.versions,
            "epoch": self.epoch,
            "state_dict": self.state_dict,
        } | (self.resume or {})

    @classmethod
    def from_dict(cls, payload: Any, where: object = "checkpoint") -> Checkpoint:
        if not isinstance(payload, dict):
            raise CheckpointError(f"{where} is not a skinserve checkpoint")
        format_version(payload.get("format"), CHECKPOINT_KIND, CHECKPOINT_VERSION, where, CheckpointError)
        known = {"format", *RESUME_KEYS, *(f.name for f in dataclasses.fields(cls))} - {"resume"}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise CheckpointError(f"{where} has fields this skinserve does not know: {', '.join(unknown)}")
        try:
            resume = {k: payload[k] for k in RESUME_KEYS if k in payload}
            return cls(
                model=ModelSpec(**payload["model"]),
                preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
                state_dict=payload["state_dict"],
                labels=LabelSchema(**{k: tuple(v) for k, v in (payload.get("labels") or {}).items()}),
                thresholds={c: float(t) for c, t in (payload.get("thresholds") or {}).items()},
                temperatures={c: float(t) for c, t in (payload.get("temperatures") or {}).items()},
                metrics=payload.get("metrics") or {},
                config=payload.get("config") or {},
                dataset_fingerprint=payload.get("dataset_fingerprint"),
                split_seed=int(payload.get("split_seed", 0)),
                versions=payload.get("versions") or {},
                epoch=int(payload.get("epoch", 0)),
                resume=resume or None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{where} is not a valid skinserve checkpoint: {type(err).__name__}: {err}") from err


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write atomically: an interrupted save never leaves a truncated last.pt behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint.to_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read with weights_only: a checkpoint is plain data and tensors, never code to unpickle."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"no checkpoint at {path}") from err
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from err
    return Checkpoint.from_dict(payload, path)
