"""A small hyper-parameter search (Optuna's TPE sampler) over learning rate, batch size and augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train.config import TrainConfig
from train.loop import fit


def tune(base: TrainConfig, out: Path, trials: int = 8, seed: int = 0) -> dict[str, Any]:
    """Maximise the monitored validation score; the test split is never looked at while searching."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        config = base.replace(
            out=str(out / f"trial{trial.number}"),
            lr=trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            batch_size=trial.suggest_categorical("batch_size", [16, 32, 64]),
            augment=trial.suggest_float("augment", 0.0, 1.5),
            registry=False,
        )
        return fit(config, progress=False).best_score

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = {"best_value": study.best_value, "best_params": study.best_params, "trials": len(study.trials)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(best, indent=2) + "\n")
    return best
