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
        cfg = load_config(
            config,
            data=str(data) if data else None,
            out=str(out) if out else None,
            model=model,
            img_size=img_size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            workers=workers,
            optimizer=optimizer,
            scheduler=scheduler,
            patience=patience,
            pretrained=pretrained,
            weights=str(weights) if weights else None,
            registry=registry,
            **extra,
        ).validate()
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
    typer.echo(
        f"run {result.out}: {result.epochs_run} epochs (best {result.best_epoch}) in {result.duration_s / 60:.1f} min; "
        f"test macro-F1 {m['macro_f1']:.4f}, micro-F1 {m['micro_f1']:.4f}, severity accuracy "
        f"{m['severity_accuracy']:.4f}, severity MAE {m['severity_mae']:.4f}"
    )


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
