"""The training run: split, model, loop with early stopping, checkpoints, test metrics, report and registry row."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from skinserve.data.records import ImageRecord
from skinserve.data.sources import read_dataset
from skinserve.data.split import DatasetSplit, split_dataset
from skinserve.labels import SEVERITY_LABELS
from skinserve.modeling.checkpoint import Checkpoint, CheckpointError, ModelSpec, load_checkpoint, save_checkpoint
from skinserve.modeling.dataset import SkinImageDataset, train_transform
from skinserve.modeling.evaluation import predict_logits
from skinserve.modeling.metrics import evaluate_outputs, slice_values, tune_thresholds
from skinserve.modeling.model import SkinModel, create_skin_model, model_from_checkpoint, preprocessing_for
from skinserve.modeling.targets import IGNORE, positive_weights, severity_weights, target_arrays
from skinserve.predictions import sigmoid
from train.config import TrainConfig


@dataclass
class RunState:
    """What `last.pt` must hold for a resumed run to continue exactly where it stopped."""

    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    out: Path
    test_metrics: dict[str, Any]
    best_epoch: int
    best_score: float  # the monitored validation score at the best epoch
    epochs_run: int
    duration_s: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(
    config: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    split: DatasetSplit | None = None,
) -> RunResult:
    """Train as `config` says; with `resume`, continue from `out/last.pt`. `stop_after` ends after that many epochs
    of this invocation, leaving a resumable run (as an interruption would). `split` replaces the default
    70/15/15 split (cross-validation folds)."""
    config.validate()
    started = time.monotonic()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    records, split = _dataset(config, out, split)
    parts = {name: split.records(records, name) for name in ("train", "val", "test")}
    skin_types = config.skin_type_head
    if skin_types is None:
        skin_types = any(r.targets.skin_type for r in parts["train"])
    seed_everything(config.seed)
    model = create_skin_model(
        config.model,
        config.img_size,
        skin_types,
        config.drop_rate,
        config.pretrained,
        Path(config.weights) if config.weights else None,
    )
    pre = preprocessing_for(model.backbone, config.img_size, config.crop_pct)
    model.to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp)
    state = RunState()
    if resume and (out / "last.pt").is_file():
        state = _restore(out / "last.pt", model, optimizer, scheduler, scaler)
    (out / "config.json").write_text(json.dumps(config.as_dict(), indent=2) + "\n")
    train_targets = target_arrays(parts["train"])
    losses = _Losses(
        torch.from_numpy(positive_weights(train_targets)).to(device),
        config,
        torch.from_numpy(severity_weights(train_targets)).to(device),
    )
    train_data = SkinImageDataset(parts["train"], train_transform(pre, config.augment))
    base = _checkpoint_base(config, model, pre, split, skin_types)
    writer = _tensorboard(out)
    ran = 0
    while (
        state.epoch < config.epochs and state.bad_epochs < config.patience and (stop_after is None or ran < stop_after)
    ):
        epoch = state.epoch + 1
        seed_everything(config.seed * 1000 + epoch)  # each epoch's randomness depends only on (seed, epoch)
        loader = _loader(train_data, config, shuffle=True, seed=config.seed * 1000 + epoch)
        train_loss = _train_epoch(model, loader, losses, optimizer, scaler, config, device, epoch, progress)
        val = _evaluate(model, parts["val"], pre, config, device, losses)
        thresholds = tune_thresholds(val["probabilities"], val["targets"])
        val_metrics = evaluate_outputs(val["conditions"], val["severity"], val["targets"], thresholds)
        score = _monitored(val_metrics, config.monitor)
        _step_scheduler(scheduler, config, score)
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "score": score,
                "val_macro_f1": val_metrics["macro_f1"],
                "val_severity_accuracy": val_metrics["severity_accuracy"],
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        _log_epoch(writer, state.history[-1])
        if score > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            save_checkpoint(
                out / "best.pt",
                base.replace(
                    state_dict=model.state_dict(),
                    thresholds=thresholds,
                    metrics={"val": _summary(val_metrics)},
                    epoch=epoch,
                ),
            )
        else:
            state.bad_epochs += 1
        save_checkpoint(
            out / "last.pt",
            base.replace(
                state_dict=model.state_dict(),
                epoch=state.epoch,
                resume=_resume_payload(optimizer, scheduler, scaler, state),
                thresholds=thresholds,
                metrics={"val": _summary(val_metrics)},
            ),
        )
        ran += 1
    if writer is not None:
        writer.close()
    finished = state.epoch >= config.epochs or state.bad_epochs >= config.patience
    if not finished:
        return RunResult(out, {}, state.best_epoch, state.best_score, state.epoch, time.monotonic() - started)
    return _finish(out, config, parts, pre, device, losses, state, started)


def _dataset(config: TrainConfig, out: Path, split: DatasetSplit | None) -> tuple[list[ImageRecord], DatasetSplit]:
    read = read_dataset(Path(config.data), config.format)  # type: ignore[arg-type]
    if not read.records:
        raise ValueError(f"no usable images in {config.data} ({len(read.problems)} reported)")
    (out / "problems.json").write_text(json.dumps([p.__dict__ for p in read.problems], indent=2) + "\n")
    split = split or split_dataset(read.records, seed=config.seed)
    split.save(out / "split.json")
    return read.records, split


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    warmup, total = config.warmup_epochs, config.epochs

    def factor(epoch: int) -> float:  # epoch counts completed epochs; linear warm-up then cosine to 0
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step_scheduler(scheduler, config: TrainConfig, score: float) -> None:
    if config.scheduler == "plateau":
        scheduler.step(score)
    else:
        scheduler.step()


def _loader(dataset, config: TrainConfig, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        num_workers=config.workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


class _Losses:
    """BCE over known conditions (weighted by imbalance) + severity CE where the level is known (+ skin type)."""

    def __init__(self, pos_weight: torch.Tensor, config: TrainConfig, severity_weight: torch.Tensor | None = None):
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
        self.severity_ce = nn.CrossEntropyLoss(weight=severity_weight, ignore_index=IGNORE)
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE)
        self.severity_weight = config.severity_weight

    def __call__(self, outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        conditions, severity = outputs[0].float(), outputs[1].float()
        mask = batch["condition_mask"].float()
        condition_loss = (self.bce(conditions, batch["conditions"]) * mask).sum() / mask.sum().clamp(min=1)
        loss = condition_loss
        severity_targets = batch["severity"].reshape(-1)
        if (severity_targets != IGNORE).any():
            flat = severity.reshape(-1, len(SEVERITY_LABELS))
            loss = loss + self.severity_weight * self.severity_ce(flat, severity_targets)
        if len(outputs) > 2 and (batch["skin_type"] != IGNORE).any():
            loss = loss + self.ce(outputs[2].float(), batch["skin_type"])
        return loss


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def _train_epoch(model, loader, losses, optimizer, scaler, config, device, epoch, progress) -> float:
    model.train()
    cuda = device.type == "cuda"
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False)
    for batch in bar:
        batch = _to_device(batch, device, cuda and config.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=cuda and config.amp):
            loss = losses(model(batch["image"]), batch)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(batch["image"])
        count += len(batch["image"])
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _evaluate(model, records, pre, config, device, losses=None) -> dict[str, Any]:
    outputs = predict_logits(model, records, pre, config.batch_size, device, config.workers)
    targets = target_arrays(records)
    result = {
        "conditions": outputs[0],
        "severity": outputs[1],
        "targets": targets,
        "probabilities": sigmoid(outputs[0]),
    }
    if losses is not None:
        batch = {
            "conditions": torch.from_numpy(targets.conditions).to(device),
            "condition_mask": torch.from_numpy(targets.condition_mask).to(device),
            "severity": torch.from_numpy(targets.severity).to(device),
            "skin_type": torch.from_numpy(targets.skin_type).to(device),
        }
        tensors = tuple(torch.from_numpy(o).to(device) for o in outputs if o is not None)
        with torch.no_grad():
            result["loss"] = float(losses(tensors, batch))
    return result


def _monitored(metrics: dict[str, Any], monitor: str) -> float:
    if monitor == "score":
        return 0.5 * (metrics["macro_f1"] + metrics["severity_accuracy"])
    return float(metrics[monitor])


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("macro_f1", "micro_f1", "exact_match", "severity_accuracy", "severity_mae", "n_images")
    return {k: metrics[k] for k in keys}


def _checkpoint_base(config, model: SkinModel, pre, split: DatasetSplit, skin_types: bool) -> Checkpoint:
    """What every checkpoint of this run shares; each save adds the weights, thresholds and metrics of its epoch."""
    return Checkpoint(
        model=ModelSpec(
            name=config.model,
            img_size=config.img_size,
            skin_type_head=skin_types,
            drop_rate=config.drop_rate,
            num_features=int(model.backbone.num_features),
        ),
        preprocessing=pre,
        state_dict={},
        config=config.as_dict(),
        dataset_fingerprint=split.fingerprint,
        split_seed=split.seed,
        versions={"torch": str(torch.__version__), "timm": str(__import__("timm").__version__)},
    )


def _resume_payload(optimizer, scheduler, scaler, state: RunState) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "run_state": {
            "epoch": state.epoch,
            "best_score": state.best_score,
            "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs,
            "history": state.history,
        },
    }


def _restore(path: Path, model, optimizer, scheduler, scaler) -> RunState:
    checkpoint = load_checkpoint(path)
    if checkpoint.resume is None:
        raise CheckpointError(f"{path} holds no training state to resume from (a best.pt?)")
    model.load_state_dict(checkpoint.state_dict)
    optimizer.load_state_dict(checkpoint.resume["optimizer"])
    scheduler.load_state_dict(checkpoint.resume["scheduler"])
    scaler.load_state_dict(checkpoint.resume["scaler"])
    return RunState(**checkpoint.resume["run_state"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a trimmed install still trains
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _log_epoch(writer, row: dict[str, Any]) -> None:
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def _finish(out, config, parts, pre, device, losses, state: RunState, started: float) -> RunResult:
    """Test the best checkpoint with its validation-tuned thresholds; write metrics, report and registry row."""
    from train.registry import record_run
    from train.report import write_report

    best = load_checkpoint(out / "best.pt")
    model = model_from_checkpoint(best)
    model.to(device)
    test = _evaluate(model, parts["test"], pre, config, device)
    metrics = evaluate_outputs(
        test["conditions"], test["severity"], test["targets"], best.thresholds, slices=slice_values(parts["test"])
    )
    metrics |= {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "split": "test",
        "dataset_fingerprint": best.dataset_fingerprint,
    }
    duration = time.monotonic() - started
    save_checkpoint(out / "best.pt", best.replace(metrics=best.metrics | {"test": _summary(metrics)}))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (out / "history.json").write_text(json.dumps(state.history, indent=2) + "\n")
    write_report(out / "report.png", state.history, metrics)
    if config.registry:
        record_run(config, metrics, dataset_size=sum(len(p) for p in parts.values()), duration_s=duration)
    return RunResult(out, metrics, state.best_epoch, state.best_score, state.epoch, duration)
