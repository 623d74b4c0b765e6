"""The training configuration: plain typed data, loaded from YAML, every field overridable from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # dataset folder or CSV manifest
    out: str = "runs/latest"
    format: str = "auto"  # shine | folder | csv
    model: str = "efficientnet_b0"
    img_size: int = 224
    crop_pct: float | None = None  # None: the backbone's timm default
    pretrained: bool = False
    weights: str | None = None
    skin_type_head: bool | None = None  # None: on when the training split has skin types
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine (with warm-up) | plateau
    warmup_epochs: int = 1
    patience: int = 6
    monitor: str = "score"  # macro_f1 | severity_accuracy | score (their mean), on the validation split
    grad_clip: float = 1.0
    severity_weight: float = 1.0
    drop_rate: float = 0.1
    augment: float = 1.0  # augmentation strength, 0 turns it off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 2
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    registry: bool = True  # write a model_training_metrics row at the end
    version: str | None = None

    def replace(self, **changes: Any) -> TrainConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        checks = {
            "data": bool(self.data),
            "optimizer": self.optimizer in ("adamw", "sgd"),
            "scheduler": self.scheduler in ("cosine", "plateau"),
            "monitor": self.monitor in ("macro_f1", "severity_accuracy", "score"),
            "device": self.device in ("auto", "cpu", "cuda"),
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "img_size": self.img_size >= 32,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training option(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")
        return self


def load_config(path: Path | str | None, **overrides: Any) -> TrainConfig:
    """A config from YAML (a path, or a name under train/configs/), then the non-None overrides on top."""
    config = TrainConfig()
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            candidate = CONFIG_DIR / f"{path}.yaml"
        data = yaml.safe_load(candidate.read_text()) or {}
        config = config.replace(**data)
    return config.replace(**{k: v for k, v in overrides.items() if v is not None})
