"""K-fold cross-validation: grouped and stratified folds (scikit-learn), one full run per fold, mean and spread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from skinserve.data.sources import read_dataset
from skinserve.data.split import DatasetSplit, dataset_fingerprint
from train.config import TrainConfig
from train.loop import fit

REPORTED = ("macro_f1", "micro_f1", "exact_match", "severity_accuracy", "severity_mae")


def fold_splits(config: TrainConfig, folds: int) -> list[DatasetSplit]:
    """Fold k is the test side, fold k+1 the validation side, the rest trains; groups never straddle folds."""
    records = read_dataset(Path(config.data), config.format).records  # type: ignore[arg-type]
    strata = [r.targets.stratum() for r in records]
    groups = [r.group_id for r in records]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    fold_of = np.zeros(len(records), dtype=int)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(records)), strata, groups)):
        fold_of[held_out] = k
    fingerprint = dataset_fingerprint(records)
    splits = []
    for k in range(folds):
        names = np.where(fold_of == k, "test", np.where(fold_of == (k + 1) % folds, "val", "train"))
        assignments = {r.relpath: str(n) for r, n in zip(records, names, strict=True)}
        splits.append(DatasetSplit(fingerprint, config.seed, (0.0, 0.0, 0.0), assignments))
    return splits


def cross_validate(config: TrainConfig, folds: int, progress: bool = True) -> dict[str, Any]:
    if folds < 3:
        raise ValueError("--folds needs at least 3 (one fold tests, one validates, the rest train)")
    out = Path(config.out)
    runs = []
    for k, split in enumerate(fold_splits(config, folds)):
        result = fit(config.replace(out=str(out / f"fold{k}"), registry=False), progress=progress, split=split)
        runs.append({key: result.test_metrics[key] for key in REPORTED})
    summary = {
        key: {"mean": float(np.mean([r[key] for r in runs])), "std": float(np.std([r[key] for r in runs]))}
        for key in REPORTED
    }
    report = {"folds": folds, "runs": runs, "summary": summary}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
