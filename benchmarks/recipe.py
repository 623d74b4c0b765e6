"""The training recipe against trivial baselines and the simplest correct training loop, on unseen-seed data.

For each seed: a face set drawn with that seed trains, a set drawn with another seed (no mirrored twins) tests.
Rows: the trivial baselines (all negative; each condition's training prior; the majority severity), a plain loop
written here (AdamW at 2e-3 with a one-cycle schedule, horizontal flips only, threshold 0.5, every training
image: the loop a reader would write first), `skinserve train` with its defaults and with each config in
train/configs/, then (--ablation) the defaults with one recipe choice changed at a time. Each row: macro-F1,
severity accuracy, severity MAE and wall time, the mean and spread over seeds.

    python benchmarks/recipe.py --seeds 0 1 2 --epochs 15 --ablation --out runs/recipe
    python benchmarks/recipe.py --device cuda --jobs 8 --ablation   # on a GPU box: rows in parallel, fp32

Every skinserve row is evaluated as `skinserve evaluate RUN/best.pt --data TEST --split all` evaluates it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

# One recipe choice changed at a time, from the defaults: what each one costs or buys.
# "(old)": the value the recipe had before benchmarks/recipe.py measured it.
ABLATIONS: dict[str, dict[str, Any]] = {
    "severity only where present": {"severity_on_absent": False},
    "lr 1e-3 (old)": {"lr": 1e-3},
    "lr 3e-3": {"lr": 3e-3},
    "lr 5e-3": {"lr": 5e-3},
    "schedule per epoch (old)": {"schedule_per_batch": False},
    "no warm-up": {"warmup_epochs": 0},
    "warm-up 1 epoch": {"warmup_epochs": 1.0},
    "weight decay 0.01": {"weight_decay": 0.01},
    "weight decay 0.1": {"weight_decay": 0.1},
    "batch size 8": {"batch_size": 8},
    "batch size 32 (old)": {"batch_size": 32},
    "batch size 32, weight decay 0.01": {"batch_size": 32, "weight_decay": 0.01},
    "whole image, no centre crop (crop_pct 1.0)": {"crop_pct": 1.0},
    "augment off (no flips)": {"augment": 0.0},
    "augment 0.5 flip, crop, light": {"augment_kinds": ("flip", "crop", "light")},
    "augment 0.5 flip, rotate (up to 5 degrees)": {"augment_kinds": ("flip", "rotate")},
    "augment 1.0 flip, crop, rotate, light (old)": {
        "augment": 1.0,
        "augment_kinds": ("flip", "crop", "rotate", "light"),
    },
    "pos_weight on (old)": {"pos_weight": True},
    "severity class weights on (old)": {"severity_class_weights": True},
    "severity weight 2": {"severity_weight": 2.0},
    "grad clip 1.0, dropout 0.1 (old)": {"grad_clip": 1.0, "drop_rate": 0.1},
    "train fraction 0.90": {"split_ratios": (0.90, 0.05, 0.05)},
    "train fraction 0.70 (old)": {"split_ratios": (0.70, 0.15, 0.15)},
    "early stopping (patience 6), best epoch (old)": {"patience": 6, "select": "best"},
    "refit on train+val": {"refit": True},
    "fp32 NCHW on the CPU (old)": {"amp": False, "channels_last": False},
    "all the old defaults": {
        "batch_size": 32,
        "warmup_epochs": 1.0,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "schedule_per_batch": False,
        "patience": 6,
        "select": "best",
        "augment": 1.0,
        "augment_kinds": ("flip", "crop", "rotate", "light"),
        "pos_weight": True,
        "severity_class_weights": True,
        "grad_clip": 1.0,
        "drop_rate": 0.1,
        "split_ratios": (0.70, 0.15, 0.15),
        "amp": False,
        "channels_last": False,
    },
}


def draw(out: Path, seed: int, per_class: int, size: int, flips: bool) -> Path:
    from skinserve.data.synth import SynthConfig, write_synthetic_set

    if not (out / ".done").is_file():
        write_synthetic_set(out, SynthConfig(per_class, size, seed, flip_fraction=0.25 if flips else 0.0))
        (out / ".done").write_text("")
    return out


def scores(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        "macro_f1": float(metrics["macro_f1"]),
        "severity_accuracy": float(metrics["severity_accuracy"]),
        "severity_mae": float(metrics["severity_mae"]),
    }


def baselines(train: Path, test: Path) -> dict[str, dict[str, float]]:
    from skinserve.data.sources import read_dataset
    from skinserve.modeling.metrics import training_priors, trivial_baselines
    from skinserve.modeling.targets import target_arrays

    priors = training_priors(target_arrays(read_dataset(train).records))
    tested = target_arrays(read_dataset(test).records)
    return {f"baseline: {name}": scores(m) | {"wall_s": 0.0} for name, m in trivial_baselines(priors, tested).items()}


class Flipped:
    """The plain loop's only augmentation: a horizontal flip half the time (a class, so loader workers pickle it)."""

    def __init__(self, to_array):
        self.to_array = to_array

    def __call__(self, image):
        import torch

        array = self.to_array(image)
        return array.flip(-1) if torch.rand(()) < 0.5 else array


def plain_records(train: Path, seed: int, train_split_only: bool = False) -> list:
    """The plain loop's training images: all of them, or the train side of `skinserve train`'s default split."""
    from skinserve.data.sources import read_dataset
    from skinserve.data.split import split_dataset

    records = read_dataset(train).records
    return split_dataset(records, seed=seed).records(records, "train") if train_split_only else records


def plain_loop(
    train: Path,
    test: Path,
    model: str,
    img_size: int,
    epochs: int,
    seed: int,
    workers: int,
    device: str = "cpu",
    train_split_only: bool = False,
) -> dict:
    """The simplest correct loop: what `skinserve train` has to beat. With `train_split_only` it trains on the
    images `skinserve train`'s default split keeps for training (80%; the rest fit thresholds and temperatures and
    test), so the two recipes are compared on the same images."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from skinserve.data.sources import read_dataset
    from skinserve.modeling.dataset import SkinImageDataset, eval_transform
    from skinserve.modeling.evaluation import predict_logits
    from skinserve.modeling.metrics import evaluate_outputs
    from skinserve.modeling.model import create_skin_model, preprocessing_for
    from skinserve.modeling.targets import IGNORE, target_arrays

    started = time.monotonic()
    torch.manual_seed(seed)
    net = create_skin_model(model, img_size, False, 0.0).to(device)
    pre = preprocessing_for(net.backbone, img_size)
    records = plain_records(train, seed, train_split_only)
    loader = DataLoader(
        SkinImageDataset(records, Flipped(eval_transform(pre)), pre), batch_size=32, shuffle=True, num_workers=workers
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * len(loader))
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss(ignore_index=IGNORE)
    for _ in range(epochs):
        net.train()
        for batch in loader:
            conditions, severity = net(batch["image"].to(device))[:2]
            targets, levels = batch["conditions"].to(device), batch["severity"].to(device)
            loss = bce(conditions, targets) + ce(severity.reshape(-1, 4), levels.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    tested = read_dataset(test).records
    logits = predict_logits(net, tested, pre, workers=workers, device=device)
    metrics = evaluate_outputs(logits[0], logits[1], target_arrays(tested), thresholds=None)
    return scores(metrics) | {"wall_s": time.monotonic() - started}


def skinserve_run(
    train: Path, test: Path, out: Path, config: str | None, overrides: dict[str, Any], device: str = "cpu"
) -> dict:
    from skinserve.modeling.evaluation import evaluate_checkpoint
    from train.config import load_config
    from train.loop import fit

    # fp32 everywhere, as the plain loop runs: the rows compare recipes, not AMP.
    precision = {"amp": False, "channels_last": False} if device != "cpu" else {}
    cfg = load_config(config, data=str(train), out=str(out), registry=False, device=device, **precision | overrides)
    started = time.monotonic()
    result = fit(cfg, progress=False)
    wall = time.monotonic() - started
    metrics = evaluate_checkpoint(result.out / "best.pt", test, split="all")
    return scores(metrics) | {"wall_s": wall, "val_epochs": result.epochs_run}


def summarise(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    keys = ("macro_f1", "severity_accuracy", "severity_mae", "wall_s")
    return {
        k: (statistics.fmean(r[k] for r in rows), statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0)
        for k in keys
    }


def table(results: dict[str, list[dict[str, float]]], title: str) -> str:
    lines = [
        title,
        f"{'recipe':44s} {'macro-F1':>15s} {'severity acc':>15s} {'severity MAE':>15s} {'wall s':>12s} {'n':>3s}",
    ]
    for name, rows in results.items():
        if not rows:
            continue
        s = summarise(rows)
        cells = " ".join(f"{s[k][0]:8.3f} ±{s[k][1]:5.3f}" for k in ("macro_f1", "severity_accuracy", "severity_mae"))
        lines.append(f"{name:44s} {cells} {s['wall_s'][0]:7.0f} ±{s['wall_s'][1]:3.0f} {len(rows):3d}")
    return "\n".join(lines)


PLAIN = "plain loop (AdamW 2e-3 one-cycle, flips)"
PLAIN_SPLIT = "plain loop on the defaults' train split (80%)"
DEFAULTS = "skinserve train (defaults)"


def run_row(row: tuple[str, str | None, dict[str, Any]], seed: int, data: tuple[Path, Path], out: Path, args) -> dict:
    """One row on one seed: the plain loop (`config` "plain", `overrides` its keyword options) or `skinserve train`
    with a config and overrides. A module-level function, so a process pool can run it."""
    name, config, overrides = row
    train, test = data
    if config == "plain":
        return plain_loop(
            train, test, args.model, args.img_size, args.epochs, seed, args.workers, args.device, **overrides
        )
    return skinserve_run(train, test, out, config, overrides | {"seed": seed}, args.device)


def _pooled(row, seed, data, out, args) -> dict:
    import multiprocessing

    import torch

    # A spawned child would spawn its loader workers too, and the transforms are closures: fork them, as a
    # training run started from a shell does (they touch no CUDA).
    multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(args.threads)  # rows share the machine's cores
    return run_row(row, seed, data, out, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="Side of the drawn images.")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every row trains (fp32 on both).")
    parser.add_argument(
        "--jobs", type=int, default=1, help="Rows run at once (a GPU box); wall times are then not comparable."
    )
    parser.add_argument("--threads", type=int, default=2, help="Torch threads of each row when --jobs > 1.")
    parser.add_argument("--configs", nargs="*", default=None, help="Configs under train/configs/ (default: all).")
    parser.add_argument("--config-epochs", type=int, default=None, help="Cap the configs' own epochs (time).")
    parser.add_argument("--ablation", action="store_true", help="Also the defaults with one choice changed each.")
    parser.add_argument("--only", nargs="*", default=None, help="Ablation rows to run (names as in the table).")
    parser.add_argument(
        "--ablation-only",
        action="store_true",
        help="Only the baselines and the ablation rows (the defaults' row is the main run's: training is seeded).",
    )
    args = parser.parse_args(argv)

    from train.config import CONFIG_DIR

    args.out.mkdir(parents=True, exist_ok=True)
    configs = args.configs if args.configs is not None else sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    base = {"model": args.model, "img_size": args.img_size, "epochs": args.epochs, "workers": args.workers}
    rows: list[tuple[str, str | None, dict[str, Any]]] = [(PLAIN, "plain", {}), (DEFAULTS, None, base)]
    if args.ablation_only:
        rows.clear()
        configs = args.configs or []
    for name in configs:
        capped = {"epochs": args.config_epochs} if args.config_epochs else {}
        rows.append((f"skinserve train --config {name}", name, capped | {"workers": args.workers}))
    ablation: list[tuple[str, str | None, dict[str, Any]]] = []
    if args.ablation:
        if args.only is None or PLAIN_SPLIT in args.only:
            ablation.append((PLAIN_SPLIT, "plain", {"train_split_only": True}))
        for name, change in ABLATIONS.items():
            if args.only is None or name in args.only:
                ablation.append((f"defaults, {name}", None, base | change))
    data = {}
    for seed in args.seeds:
        train = draw(args.out / f"data/train-{seed}", seed, args.per_class, args.size, flips=True)
        test = draw(args.out / f"data/test-{seed}", 10_000 + seed, args.per_class, args.size, flips=False)
        data[seed] = (train, test)
    results: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        for name, row in baselines(*data[seed]).items():
            results.setdefault(name, []).append(row)
    for name, *_ in rows:
        results.setdefault(name, [])
    ablated: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in ablation}
    saved = args.out / "recipe.json"
    tasks = [
        (row, seed, target)
        for seed in args.seeds
        for group, target in ((rows, results), (ablation, ablated))
        for row in group
    ]

    def done(row, seed: int, target: dict, scored: dict) -> None:
        target[row[0]].append(scored | {"seed": seed})
        print(f"seed {seed} {row[0]}: {json.dumps(scored)}", flush=True)
        saved.write_text(json.dumps({"results": results, "ablation": ablated, "args": vars(args)}, default=str))

    def out_of(row, seed: int) -> Path:
        return args.out / f"runs/{''.join(c if c.isalnum() else '-' for c in row[0])[:60]}-s{seed}"

    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {
                pool.submit(_pooled, row, seed, data[seed], out_of(row, seed), args): (row, seed, target)
                for row, seed, target in tasks
            }
            for future in futures:
                done(*futures[future], future.result())
    else:
        for row, seed, target in tasks:
            done(row, seed, target, run_row(row, seed, data[seed], out_of(row, seed), args))
    print()
    title = f"Unseen-seed test sets, {args.model} {args.img_size} px, {args.epochs} epochs, seeds {args.seeds}"
    title += f", {args.device}" + (f", {args.jobs} rows at once" if args.jobs > 1 else "")
    print(table(results, title))
    if ablated:
        print()
        print(table(results | ablated, "Ablation: the defaults with one choice changed"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
