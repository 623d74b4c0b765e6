"""The training run: split, model, the loop (optionally early-stopped, optionally refit on train+val), calibration,
thresholds, checkpoints, test metrics with baselines and intervals, report and registry row."""

from __future__ import annotations

import dataclasses
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
from skinserve.modeling.calibration import calibration_report, fit_temperatures
from skinserve.modeling.checkpoint import Checkpoint, CheckpointError, ModelSpec, load_checkpoint, save_checkpoint
from skinserve.modeling.dataset import SkinImageDataset, train_transform
from skinserve.modeling.evaluation import predict_logits
from skinserve.modeling.metrics import evaluate_outputs, slice_values, training_priors, tune_thresholds
from skinserve.modeling.model import SkinModel, create_skin_model, model_from_checkpoint, preprocessing_for
from skinserve.modeling.targets import IGNORE, positive_weights, present_severity, severity_weights, target_arrays
from skinserve.predictions import calibrated_probabilities
from train.config import TrainConfig
from train.distributed import (
    Ranks,
    finish,
    gathered,
    launched_ranks,
    mean_over_ranks,
    shard,
    start,
    sync_buffers,
    weight_spread,
    wrapped,
)


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
    of this invocation, leaving a resumable run (as an interruption would). `split` replaces the default split
    (cross-validation folds). Under torchrun every rank runs this; rank 0 alone writes files (train.distributed)."""
    config.validate()
    ranks = launched_ranks()
    device = start(ranks, resolve_device(config.device))
    result = _Run(config, ranks, device, progress).fit(resume, stop_after, split)
    finish(ranks)
    return result


class _Run:
    """One training run: the selection phase (train, validate every epoch, keep the chosen weights with their
    validation-fitted temperatures and thresholds), the optional refit on train+val, then the test report."""

    def __init__(self, config: TrainConfig, ranks: Ranks, device: torch.device, progress: bool) -> None:
        self.config, self.ranks, self.device = config, ranks, device
        self.progress = progress and ranks.is_main
        self.out = Path(config.out)
        self.started = time.monotonic()

    def fit(self, resume: bool, stop_after: int | None, split: DatasetSplit | None) -> RunResult:
        config, out = self.config, self.out
        if self.ranks.is_main:
            out.mkdir(parents=True, exist_ok=True)
        records, split = _dataset(config, out, split, self.ranks.is_main)
        self.parts = {name: split.records(records, name) for name in ("train", "val", "test")}
        if not self.parts["val"]:
            raise ValueError("the validation split is empty: thresholds and temperatures are fitted on it")
        skin_types = config.skin_type_head
        if skin_types is None:
            skin_types = any(r.targets.skin_type for r in self.parts["train"])
        seed_everything(config.seed)
        model = self._new_model(skin_types)
        self.pre = preprocessing_for(model.backbone, config.img_size, config.crop_pct)
        if config.face_crop is not None:  # stored with the checkpoint: the service crops alike ("auto")
            self.pre = dataclasses.replace(self.pre, face_crop_margin=float(config.face_crop))
        self.base = _checkpoint_base(config, model, self.pre, split, skin_types)
        optimizer = _optimizer(model, config)
        train_data = SkinImageDataset(
            self.parts["train"], train_transform(self.pre, config.augment, config.augment_kinds), self.pre
        )
        steps = self._steps_per_epoch(len(train_data))
        scheduler = _scheduler(optimizer, config, steps, config.epochs)
        scaler = _scaler(self.device, config)
        state = RunState()
        if resume and (out / "last.pt").is_file():
            state = _restore(out / "last.pt", model, optimizer, scheduler, scaler)
        if self.ranks.is_main:
            (out / "config.json").write_text(json.dumps(config.as_dict(), indent=2) + "\n")
        losses = self._losses(self.parts["train"])
        writer = _tensorboard(out) if self.ranks.is_main else None
        trainer = wrapped(model, self.ranks, self.device)
        ran = 0
        while not self._stopped(state) and (stop_after is None or ran < stop_after):
            epoch = state.epoch + 1
            train_loss = self._train_epoch(trainer, train_data, losses, optimizer, scheduler, scaler, epoch)
            sync_buffers(model, self.ranks)
            val = self._evaluate(model, self.parts["val"], losses)
            temperatures = fit_temperatures(val["conditions"], val["targets"]) if config.calibrate else {}
            thresholds = tune_thresholds(calibrated_probabilities(val["conditions"], temperatures), val["targets"])
            val_metrics = evaluate_outputs(
                val["conditions"], val["severity"], val["targets"], thresholds, temperatures=temperatures
            )
            score = _monitored(val_metrics, config.monitor)
            if not config.steps_per_batch:
                _step_scheduler(scheduler, config, score)
            state.epoch = epoch
            state.history.append(
                {
                    "epoch": epoch,
                    "phase": "select",
                    "train_loss": train_loss,
                    "val_loss": val["loss"],
                    "score": score,
                    "val_macro_f1": val_metrics["macro_f1"],
                    "val_severity_accuracy": val_metrics["severity_accuracy"],
                    "lr": optimizer.param_groups[0]["lr"],
                }
            )
            if self.ranks.distributed:
                state.history[-1]["rank_weight_spread"] = weight_spread(model, self.ranks)
            _log_epoch(writer, state.history[-1])
            improved = score > state.best_score
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            else:
                state.bad_epochs += 1
            if self.ranks.is_main:
                epoch_checkpoint = self.base.replace(
                    state_dict=model.state_dict(),
                    thresholds=thresholds,
                    temperatures=temperatures,
                    metrics={
                        "val": _summary(val_metrics)
                        | {"calibration": calibration_report(val["conditions"], val["targets"], temperatures)}
                    },
                    epoch=epoch,
                )
                if config.select == "last" or improved:  # best.pt: the weights this run keeps
                    save_checkpoint(out / "best.pt", epoch_checkpoint)
                save_checkpoint(
                    out / "last.pt",
                    epoch_checkpoint.replace(resume=_resume_payload(optimizer, scheduler, scaler, state)),
                )
            ran += 1
        if writer is not None:
            writer.close()
        if not self._stopped(state):
            return RunResult(out, {}, state.best_epoch, state.best_score, state.epoch, time.monotonic() - self.started)
        _synchronise(self.ranks)
        chosen = load_checkpoint(out / "best.pt")
        trained_on = self.parts["train"]
        if config.refit:
            chosen = self._refit(chosen, skin_types, state)
            trained_on = self.parts["train"] + self.parts["val"]
        return self._finish(chosen, trained_on, state)

    def _new_model(self, skin_types: bool) -> SkinModel:
        config = self.config
        model = create_skin_model(
            config.model,
            config.img_size,
            skin_types,
            config.drop_rate,
            config.pretrained,
            Path(config.weights) if config.weights else None,
        )
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _stopped(self, state: RunState) -> bool:
        patience = self.config.patience
        return state.epoch >= self.config.epochs or (patience > 0 and state.bad_epochs >= patience)

    def _steps_per_epoch(self, images: int) -> int:
        per_rank = math.ceil(images / self.ranks.world_size)
        return max(1, math.ceil(per_rank / self.config.batch_size))

    def _losses(self, records: list[ImageRecord]) -> _Losses:
        config, targets = self.config, target_arrays(records)
        pos_weight = torch.from_numpy(positive_weights(targets)) if config.pos_weight else None
        if not config.severity_on_absent:
            targets = present_severity(targets)
        levels = torch.from_numpy(severity_weights(targets)) if config.severity_class_weights else None
        return _Losses(
            None if pos_weight is None else pos_weight.to(self.device),
            config,
            None if levels is None else levels.to(self.device),
        )

    def _loader(self, dataset, epoch: int) -> DataLoader:
        config, ranks = self.config, self.ranks
        if ranks.distributed:  # each rank its shard, reshuffled per epoch from the run's seed
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(
                dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True, seed=config.seed
            )
            sampler.set_epoch(epoch)
            return DataLoader(
                dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, drop_last=False
            )
        return _loader(dataset, config, shuffle=True, seed=config.seed * 1000 + epoch)

    def _train_epoch(self, trainer, dataset, losses, optimizer, scheduler, scaler, epoch: int) -> float:
        seed_everything(self.config.seed * 1000 + epoch)  # each epoch's randomness depends only on (seed, epoch)
        per_batch = scheduler if self.config.steps_per_batch else None
        loss = _train_epoch(
            trainer,
            self._loader(dataset, epoch),
            losses,
            optimizer,
            scaler,
            self.config,
            self.device,
            epoch,
            self.progress,
            per_batch,
        )
        return mean_over_ranks(loss, self.ranks)

    def _evaluate(self, model, records: list[ImageRecord], losses=None) -> dict[str, Any]:
        """Every rank predicts its shard; the outputs are gathered, so all ranks compute the same metrics."""
        mine = [records[i] for i in shard(len(records), self.ranks)]
        outputs = predict_logits(model, mine, self.pre, self.config.batch_size, self.device, self.config.workers)
        outputs = tuple(gathered(list(outputs), self.ranks, len(records)))
        return _scored(outputs, records, self.device, losses)

    def _refit(self, chosen: Checkpoint, skin_types: bool, state: RunState) -> Checkpoint:
        """Train again from the start on train+val for the chosen number of epochs; the thresholds and temperatures
        stay those fitted on val in the selection phase (a model cannot be calibrated on what it trained on)."""
        config = self.config
        epochs = chosen.epoch
        records = self.parts["train"] + self.parts["val"]
        seed_everything(config.seed)
        model = self._new_model(skin_types)
        optimizer = _optimizer(model, config)
        data = SkinImageDataset(records, train_transform(self.pre, config.augment, config.augment_kinds), self.pre)
        scheduler = _scheduler(optimizer, config, self._steps_per_epoch(len(data)), epochs)
        scaler = _scaler(self.device, config)
        losses = self._losses(records)
        trainer = wrapped(model, self.ranks, self.device)
        for epoch in range(1, epochs + 1):
            loss = self._train_epoch(trainer, data, losses, optimizer, scheduler, scaler, epoch)
            if not config.steps_per_batch and config.scheduler != "plateau":  # plateau: no val score in a refit
                scheduler.step()
            state.history.append(
                {"epoch": epoch, "phase": "refit", "train_loss": loss, "lr": optimizer.param_groups[0]["lr"]}
            )
        sync_buffers(model, self.ranks)
        refit = chosen.replace(
            state_dict=model.state_dict(),
            metrics=chosen.metrics | {"refit": {"epochs": epochs, "images": len(records)}},
        )
        if self.ranks.is_main:
            save_checkpoint(self.out / "best.pt", refit)
        return refit

    def _finish(self, chosen: Checkpoint, trained_on: list[ImageRecord], state: RunState) -> RunResult:
        """Test the kept weights with their validation-fitted temperatures and thresholds; write metrics, report and
        registry row (rank 0)."""
        from train.registry import record_run
        from train.report import write_report

        config, out = self.config, self.out
        model = model_from_checkpoint(chosen)
        model.to(self.device)
        test = self._evaluate(model, self.parts["test"])
        priors = training_priors(target_arrays(trained_on))
        metrics = evaluate_outputs(
            test["conditions"],
            test["severity"],
            test["targets"],
            chosen.thresholds,
            slices=slice_values(self.parts["test"]),
            temperatures=chosen.temperatures,
            priors=priors,
        )
        metrics |= {
            "calibration": {
                "val": chosen.metrics.get("val", {}).get("calibration"),
                "test": calibration_report(test["conditions"], test["targets"], chosen.temperatures),
            },
            "best_epoch": chosen.epoch,
            "selected": config.select,
            "refit": chosen.metrics.get("refit"),
            "epochs_run": state.epoch,
            "split": "test",
            "dataset_fingerprint": chosen.dataset_fingerprint,
        }
        duration = time.monotonic() - self.started
        if self.ranks.is_main:
            summary = _summary(metrics) | {"intervals": metrics["intervals"], "baselines": metrics["baselines"]}
            kept = chosen.replace(metrics=chosen.metrics | {"test": summary, "priors": priors})
            save_checkpoint(out / "best.pt", kept)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            (out / "history.json").write_text(json.dumps(state.history, indent=2) + "\n")
            write_report(out / "report.png", state.history, metrics)
            if config.registry:
                total = sum(len(p) for p in self.parts.values())
                record_run(config, metrics, dataset_size=total, duration_s=duration)
        return RunResult(out, metrics, state.best_epoch, state.best_score, state.epoch, duration)


def _synchronise(ranks: Ranks) -> None:
    """Rank 0 has written best.pt before the others read it."""
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def _dataset(
    config: TrainConfig, out: Path, split: DatasetSplit | None, main: bool = True
) -> tuple[list[ImageRecord], DatasetSplit]:
    read = read_dataset(Path(config.data), config.format)  # type: ignore[arg-type]
    if not read.records:
        raise ValueError(f"no usable images in {config.data} ({len(read.problems)} reported)")
    split = split or split_dataset(read.records, seed=config.seed, ratios=tuple(config.split_ratios))
    if main:
        (out / "problems.json").write_text(json.dumps([p.__dict__ for p in read.problems], indent=2) + "\n")
        split.save(out / "split.json")
    return read.records, split


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


WARMUP_SHARE = 0.3  # of the run's steps, when the config names no warm-up in epochs (OneCycleLR's default share)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int):
    """Linear warm-up, then cosine to 0 over `epochs`; advanced every step (schedule_per_batch) or every epoch. A
    per-epoch cosine over few epochs holds the rate high for whole epochs, then drops it in steps."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    unit = steps_per_epoch if config.schedule_per_batch else 1
    total = max(1, epochs * unit)
    warmup = WARMUP_SHARE * total if config.warmup_epochs is None else config.warmup_epochs * unit
    warmup = min(warmup, total / 2)  # a short run still anneals for half of it

    def factor(step: int) -> float:  # step counts completed steps
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1.0, total - warmup)
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
    """BCE over known conditions + severity CE where the level is known (+ skin type).

    The severity head learns "none" where a condition is absent as well (`severity_on_absent`): it is scored only
    where the condition is present, but the absent rows are a second, four-level supervision of every condition
    that the backbone learns much faster from (benchmarks/recipe.py: without them, macro-F1 0.54 against 0.88).
    `pos_weight` and the severity level weights are options, off by default (the benchmark measures both)."""

    def __init__(
        self, pos_weight: torch.Tensor | None, config: TrainConfig, severity_weight: torch.Tensor | None = None
    ):
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
        self.severity_ce = nn.CrossEntropyLoss(weight=severity_weight, ignore_index=IGNORE)
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE)
        self.severity_weight = config.severity_weight
        self.severity_on_absent = config.severity_on_absent

    def __call__(self, outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        conditions, severity = outputs[0].float(), outputs[1].float()
        mask = batch["condition_mask"].float()
        condition_loss = (self.bce(conditions, batch["conditions"]) * mask).sum() / mask.sum().clamp(min=1)
        loss = condition_loss
        severity_targets = batch["severity"]
        if not self.severity_on_absent:
            present = (batch["conditions"] > 0.5) & batch["condition_mask"]
            severity_targets = torch.where(present, severity_targets, torch.full_like(severity_targets, IGNORE))
        severity_targets = severity_targets.reshape(-1)
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


def autocast_dtype(device: torch.device, config: TrainConfig) -> torch.dtype | None:
    """The dtype training steps autocast to on `device`, or None for fp32: fp16 on CUDA (with the loss scaler);
    bf16 on a CPU whose oneDNN runs it natively (emulated bf16 is slower than fp32). Evaluation always runs in fp32,
    as the exported model does, so thresholds and temperatures are fitted on the logits a server computes."""
    if not config.amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def _scaler(device: torch.device, config: TrainConfig) -> torch.amp.GradScaler:
    """The loss scaler fp16 needs (its narrow exponent underflows small gradients); a no-op for bf16 and fp32."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device, config) == torch.float16)


def _train_epoch(model, loader, losses, optimizer, scaler, config, device, epoch, progress, scheduler=None) -> float:
    """One pass over `loader`; `scheduler`, when given, advances after every step."""
    model.train()
    dtype = autocast_dtype(device, config)
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False)
    for batch in bar:
        batch = _to_device(batch, device, config.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = losses(model(batch["image"]), batch)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * len(batch["image"])
        count += len(batch["image"])
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _scored(outputs, records: list[ImageRecord], device: torch.device, losses=None) -> dict[str, Any]:
    """The logits of `records` with their targets, and the loss on them when `losses` is given."""
    targets = target_arrays(records)
    result = {"conditions": outputs[0], "severity": outputs[1], "targets": targets}
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
        if key != "epoch" and isinstance(value, (int, float)):
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()
