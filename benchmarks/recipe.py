"""The training recipe against trivial baselines and the simplest correct training loop, on unseen-seed data.

For each seed: a face set drawn with that seed trains, a set drawn with another seed (no mirrored twins) tests.
Rows: the trivial baselines (all negative; each condition's training prior; the majority severity), a plain loop
written here (AdamW at 2e-3 with a one-cycle schedule, horizontal flips only, threshold 0.5, every training
image: the loop a reader would write first), `skinserve train` with its defaults and with each config in
train/configs/, then (--ablation) the defaults with one recipe choice changed at a time. Each row: macro-F1,
severity accuracy, severity MAE and wall time, the mean and spread over seeds.

    python benchmarks/recipe.py --seeds 0 1 2 --epochs 15 --ablation --out runs/recipe

Every skinserve row is evaluated as `skinserve evaluate RUN/best.pt --data TEST --split all` evaluates it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
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
    "lr 5e-3": {"lr": 5e-3},
    "schedule per epoch (old)": {"schedule_per_batch": False},
    "no warm-up": {"warmup_epochs": 0},
    "weight decay 0.05 (old)": {"weight_decay": 0.05},
    "augment off (no flips)": {"augment": 0.0},
    "augment 0.5 flip, crop, light": {"augment_kinds": ("flip", "crop", "light")},
    "augment 1.0 flip, crop, rotate, light (old)": {
        "augment": 1.0,
        "augment_kinds": ("flip", "crop", "rotate", "light"),
    },
    "pos_weight on (old)": {"pos_weight": True},
    "severity class weights on (old)": {"severity_class_weights": True},
    "grad clip 1.0, dropout 0.1 (old)": {"grad_clip": 1.0, "drop_rate": 0.1},
    "batch size 16": {"batch_size": 16},
    "train fraction 0.70 (old)": {"split_ratios": (0.70, 0.15, 0.15)},
    "early stopping (patience 6), best epoch (old)": {"patience": 6, "select": "best"},
    "refit on train+val": {"refit": True},
    "all the old defaults": {
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


def plain_loop(train: Path, test: Path, model: str, img_size: int, epochs: int, seed: int, workers: int) -> dict:
    """The simplest correct loop: what `skinserve train` has to beat."""
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
    net = create_skin_model(model, img_size, False, 0.0)
    pre = preprocessing_for(net.backbone, img_size)
    to_array = eval_transform(pre)

    def flipped(image):
        array = to_array(image)
        return array.flip(-1) if torch.rand(()) < 0.5 else array

    records = read_dataset(train).records
    loader = DataLoader(SkinImageDataset(records, flipped, pre), batch_size=32, shuffle=True, num_workers=workers)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * len(loader))
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss(ignore_index=IGNORE)
    for _ in range(epochs):
        net.train()
        for batch in loader:
            conditions, severity = net(batch["image"])[:2]
            loss = bce(conditions, batch["conditions"]) + ce(severity.reshape(-1, 4), batch["severity"].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    tested = read_dataset(test).records
    logits = predict_logits(net, tested, pre, workers=workers)
    metrics = evaluate_outputs(logits[0], logits[1], target_arrays(tested), thresholds=None)
    return scores(metrics) | {"wall_s": time.monotonic() - started}


def skinserve_run(train: Path, test: Path, out: Path, config: str | None, overrides: dict[str, Any]) -> dict:
    from skinserve.modeling.evaluation import evaluate_checkpoint
    from train.config import load_config
    from train.loop import fit

    cfg = load_config(config, data=str(train), out=str(out), registry=False, device="cpu", **overrides)
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
    runs: dict[str, Callable[[Path, Path, Path, int], dict]] = {
        "plain loop (AdamW 2e-3 one-cycle, flips)": lambda tr, te, out, seed: plain_loop(
            tr, te, args.model, args.img_size, args.epochs, seed, args.workers
        ),
        "skinserve train (defaults)": lambda tr, te, out, seed: skinserve_run(tr, te, out, None, base | {"seed": seed}),
    }
    if args.ablation_only:
        runs.clear()
        configs = args.configs or []
    for name in configs:
        capped = {"epochs": args.config_epochs} if args.config_epochs else {}
        runs[f"skinserve train --config {name}"] = lambda tr, te, out, seed, name=name, capped=capped: skinserve_run(
            tr, te, out, name, capped | {"seed": seed, "workers": args.workers}
        )
    ablation: dict[str, Callable] = {}
    if args.ablation:
        for name, change in ABLATIONS.items():
            if args.only is None or name in args.only:
                ablation[f"defaults, {name}"] = lambda tr, te, out, seed, change=change: skinserve_run(
                    tr, te, out, None, base | {"seed": seed} | change
                )
    results: dict[str, list[dict[str, float]]] = {}
    ablated: dict[str, list[dict[str, float]]] = {}
    saved = args.out / "recipe.json"
    for seed in args.seeds:
        train = draw(args.out / f"data/train-{seed}", seed, args.per_class, args.size, flips=True)
        test = draw(args.out / f"data/test-{seed}", 10_000 + seed, args.per_class, args.size, flips=False)
        for name, row in baselines(train, test).items():
            results.setdefault(name, []).append(row)
        for group, target in ((runs, results), (ablation, ablated)):
            for name, run in group.items():
                slug = "".join(c if c.isalnum() else "-" for c in name)[:60]
                row = run(train, test, args.out / f"runs/{slug}-s{seed}", seed)
                target.setdefault(name, []).append(row | {"seed": seed})
                print(f"seed {seed} {name}: {json.dumps(row)}", flush=True)
                saved.write_text(json.dumps({"results": results, "ablation": ablated, "args": vars(args)}, default=str))
    print()
    title = f"Unseen-seed test sets, {args.model} {args.img_size} px, {args.epochs} epochs, seeds {args.seeds}"
    print(table(results, title))
    if ablated:
        print()
        print(table(results | ablated, "Ablation: the defaults with one choice changed"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
