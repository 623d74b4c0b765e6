"""Command-line entry points of the training stage; `skinserve train` and `python -m train` both land here.

Heavy imports (torch, timm) happen inside the commands so `skinserve --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinserve.console import fail
from skinserve.errors import SkinserveError

Opt = typer.Option


def train_command(
    data: Annotated[Path | None, Opt(help="Dataset folder or CSV manifest.")] = None,
    out: Annotated[Path | None, Opt(help="Run directory: best.pt, last.pt, metrics.json, report.png.")] = None,
    config: Annotated[str | None, Opt(help="YAML file, or a name under train/configs/.")] = None,
    model: Annotated[str | None, Opt(help="Any timm backbone name.")] = None,
    img_size: Annotated[int | None, Opt(help="Input side in pixels.")] = None,
    epochs: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    lr: Annotated[float | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="auto, cpu or cuda.")] = None,
    workers: Annotated[int | None, Opt(help="DataLoader workers.")] = None,
    optimizer: Annotated[str | None, Opt(help="adamw or sgd.")] = None,
    scheduler: Annotated[str | None, Opt(help="cosine or plateau.")] = None,
    patience: Annotated[int | None, Opt(help="Epochs without improvement before stopping.")] = None,
    pretrained: Annotated[bool | None, Opt("--pretrained/--scratch", help="timm hub weights.")] = None,
    weights: Annotated[Path | None, Opt(help="Local backbone weights file.")] = None,
    registry: Annotated[bool | None, Opt("--registry/--no-registry", help="Write model_training_metrics.")] = None,
    face_crop: Annotated[
        bool | None,
        Opt("--face-crop/--whole-image", help="Train on face crops (the service's margin), as served then."),
    ] = None,
    refit: Annotated[
        bool | None,
        Opt("--refit/--no-refit", help="After epochs and thresholds are chosen on val, train again on train+val."),
    ] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any other field: --set key=value (YAML value).")] = None,
    resume: Annotated[bool, Opt(help="Continue from RUNDIR/last.pt.")] = False,
    folds: Annotated[int | None, Opt(help="K-fold cross-validation instead of one run.")] = None,
    progress: Annotated[bool, Opt(help="Progress bar per epoch.")] = True,
) -> None:
    """Train the multi-task model; writes RUNDIR/best.pt, last.pt, metrics.json and report.png."""
    import yaml

    from train.config import load_config

    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in set_ or [])}
    try:
        named = {
            "data": str(data) if data else None,
            "out": str(out) if out else None,
            "model": model,
            "img_size": img_size,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": device,
            "workers": workers,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "patience": patience,
            "pretrained": pretrained,
            "weights": str(weights) if weights else None,
            "registry": registry,
            "refit": refit,
            "face_crop": _face_crop_margin(face_crop),
        }
        twice = sorted(k for k in extra if named.get(k) is not None)
        if twice:
            raise ValueError(f"given both as an option and with --set: {', '.join(twice)}")
        cfg = load_config(config, **(named | {k: v for k, v in extra.items()})).validate()
    except (ValueError, OSError, SkinserveError) as err:
        raise fail(str(err)) from err
    if cfg.registry:
        _require_registry()
    try:
        if folds:
            from train.folds import cross_validate

            summary = cross_validate(cfg, folds, progress=progress)
            typer.echo(json.dumps(summary["summary"], indent=2))
            return
        from train.loop import fit

        result = fit(cfg, resume=resume, progress=progress)
    except (SkinserveError, ValueError) as err:
        raise fail(str(err)) from err
    m = result.test_metrics
    from train.distributed import launched_ranks
    from train.registry import run_notes

    if not launched_ranks().is_main:  # under torchrun, rank 0 reports for the run
        return
    typer.echo(f"run {result.out}: {result.epochs_run} epochs in {result.duration_s / 60:.1f} min; {run_notes(m)}")


def _face_crop_margin(face_crop: bool | None) -> float | None:
    if not face_crop:
        return None  # --whole-image is the default already (a config or --set face_crop=M may still set one)
    from skinserve.faces import DEFAULT_FACE_MARGIN

    return DEFAULT_FACE_MARGIN


def tune_command(
    data: Annotated[Path, Opt(help="Dataset folder or CSV manifest.")],
    out: Annotated[Path, Opt(help="Folder for the trials' runs and the study summary.")],
    trials: Annotated[int, Opt(help="Number of Optuna trials.")] = 8,
    config: Annotated[str | None, Opt(help="Base YAML config.")] = None,
    epochs: Annotated[int | None, Opt(help="Epochs per trial.")] = None,
    model: Annotated[str | None, Opt()] = None,
    img_size: Annotated[int | None, Opt()] = None,
    seed: Annotated[int, Opt()] = 0,
) -> None:
    """A small TPE search (Optuna) over learning rate, batch size and augmentation strength."""
    from train.config import load_config
    from train.tune import tune

    base = load_config(config, data=str(data), model=model, img_size=img_size, epochs=epochs, registry=False)
    best = tune(base, out, trials=trials, seed=seed)
    typer.echo(json.dumps(best, indent=2))


def _require_registry() -> None:
    """Fail before training, not after, when the metrics row would have nowhere to go."""
    from skinserve.config import Settings
    from skinserve.db.migrate import SchemaNotCurrent, require_head

    try:
        require_head(Settings.from_env().database_url)
    except SchemaNotCurrent as err:
        raise fail(f"{err}, or pass --no-registry") from err


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command(name="train")(train_command)
    app(prog_name="python -m train")
