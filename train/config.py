"""The training configuration: plain typed data, loaded from YAML, every field overridable from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from skinserve.data.split import DEFAULT_RATIOS

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # dataset folder or CSV manifest
    out: str = "runs/latest"
    format: str = "auto"  # shine | folder | csv
    model: str = "efficientnet_b0"
    img_size: int = 224
    crop_pct: float | None = None  # None: the backbone's timm default
    # Train on face crops with this margin (a share of the face box side), as the service then crops (manifest's
    # preprocessing.face_crop_margin); None: whole images. `skinserve train --face-crop` sets the service's default.
    face_crop: float | None = None
    pretrained: bool = False
    weights: str | None = None
    skin_type_head: bool | None = None  # None: on when the training split has skin types
    epochs: int = 30
    # The recipe's defaults, each measured against the plain loop in benchmarks/recipe.py (README, training):
    batch_size: int = 16  # twice the steps of 32 for the same images: severity +0.01 to +0.05 on small sets
    lr: float = 2e-3
    weight_decay: float = 0.05  # with batch 16; with batch 32, 0.01 did as well
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine (linear warm-up, then cosine to 0) | plateau
    schedule_per_batch: bool = True  # the cosine advances every step, not every epoch
    # None: a linear warm-up over the first 30% of the steps (one-cycle's share; measured against 1 epoch on 3 seeds:
    # severity accuracy up, macro-F1 level); a number: that many epochs. Capped at half the run either way.
    warmup_epochs: float | None = None
    patience: int = 0  # epochs without improvement before stopping; 0: train every epoch
    select: str = "last"  # last | best: the weights kept (best: the epoch with the best monitored val score)
    monitor: str = "score"  # macro_f1 | severity_accuracy | score (their mean), on the validation split
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping (AdamW normalises its steps already)
    severity_weight: float = 1.0
    severity_on_absent: bool = True  # the severity head learns "none" where a condition is absent too
    severity_class_weights: bool = False  # inverse-frequency weights on the severity levels
    pos_weight: bool = False  # BCE pos_weight from the imbalance (thresholds tuned on val already balance it)
    drop_rate: float = 0.0  # dropout before the heads
    augment: float = 0.5  # augmentation strength (crop, rotate, light), 0 turns augmentation off
    # Of flip, crop, rotate, light (modeling.dataset.train_transform says what each may do to a label). Flips only:
    # a zoom changes how large the lesions look, light how strong a redness or a pigment looks, and both measured
    # lower severity accuracy (benchmarks/recipe.py).
    augment_kinds: tuple[str, ...] = ("flip",)
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS  # train, val, test of the dataset
    refit: bool = False  # after choosing epochs and thresholds on val, train again on train+val with those choices
    calibrate: bool = True  # per-condition temperatures fitted on val (stored; applied by evaluation and serving)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 2
    # Mixed precision: fp16 autocast with a loss scaler on CUDA; bf16 autocast on a CPU with native bf16 (AVX-512
    # BF16 or AMX: about 1.8x a step of a small convnet here), fp32 on other CPUs. Weights stay fp32 either way.
    amp: bool = True
    channels_last: bool = True  # oneDNN and cuDNN both run convolutions faster on NHWC (CPU: about 1.3x a step)
    registry: bool = True  # write a model_training_metrics row at the end
    version: str | None = None

    @property
    def steps_per_batch(self) -> bool:
        """Whether the scheduler advances after every optimiser step (the cosine, `schedule_per_batch`) rather than
        once an epoch (plateau, which needs the epoch's validation score, or a per-epoch cosine)."""
        return self.schedule_per_batch and self.scheduler != "plateau"

    def replace(self, **changes: Any) -> TrainConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        for name in ("augment_kinds", "split_ratios"):  # YAML and JSON give lists; the config keeps tuples
            if isinstance(changes.get(name), list):
                changes[name] = tuple(changes[name])
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        checks = {
            "data": bool(self.data),
            "optimizer": self.optimizer in ("adamw", "sgd"),
            "scheduler": self.scheduler in ("cosine", "plateau"),
            "select": self.select in ("last", "best"),
            "augment_kinds": set(self.augment_kinds) <= {"flip", "crop", "rotate", "light"},
            "split_ratios": len(self.split_ratios) == 3
            and min(self.split_ratios) >= 0
            and self.split_ratios[1] > 0
            and abs(sum(self.split_ratios) - 1.0) < 1e-6,
            "patience": self.patience >= 0,
            "face_crop": self.face_crop is None or 0 <= self.face_crop <= 2,
            "warmup_epochs": self.warmup_epochs is None or self.warmup_epochs >= 0,
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
