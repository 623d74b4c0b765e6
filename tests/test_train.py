"""Training: a tiny timm model trains and its loss falls, masked losses, tuned thresholds, resume, registry row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from skinserve.db.engine import create_registry_engine
from skinserve.db.models import TrainingMetrics
from skinserve.labels import CONDITIONS
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.metrics import THRESHOLD_GRID, tune_thresholds
from skinserve.modeling.model import ModelError, create_backbone, create_skin_model
from skinserve.modeling.targets import IGNORE, TargetArrays
from train.config import TrainConfig, load_config
from train.loop import _Losses, fit

TINY = {
    "model": "test_convnext",
    "img_size": 64,
    "batch_size": 16,
    "workers": 0,
    "lr": 0.004,
    "weight_decay": 0.0,
    "augment": 0.0,
    "registry": False,
    "patience": 100,
}


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    return load_config(None, data=str(data), out=str(out), **(TINY | overrides))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synth_set: Path):
    out = tmp_path_factory.mktemp("run")
    result = fit(tiny_config(synth_set, out, epochs=4), progress=False)
    return result


@pytest.mark.slow
def test_the_loss_falls(tiny_run):
    history = json.loads((tiny_run.out / "history.json").read_text())
    assert len(history) == 4
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]


@pytest.mark.slow
def test_run_writes_checkpoints_metrics_and_report(tiny_run):
    out = tiny_run.out
    for name in ("best.pt", "last.pt", "metrics.json", "report.png", "split.json", "config.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"macro_f1", "micro_f1", "severity_accuracy", "severity_mae", "per_condition"} <= set(metrics)
    assert metrics["split"] == "test" and metrics["n_images"] > 0


@pytest.mark.slow
def test_checkpoint_holds_what_export_and_serving_need(tiny_run):
    best = load_checkpoint(tiny_run.out / "best.pt")
    assert best.labels.conditions == CONDITIONS
    assert best.preprocessing.input_size == 64
    assert len(best.preprocessing.mean) == 3 and best.preprocessing.interpolation
    assert set(best.thresholds) == set(CONDITIONS)
    assert all(t in THRESHOLD_GRID for t in best.thresholds.values())
    assert len(best.dataset_fingerprint) == 64
    assert {"val", "test"} <= set(best.metrics)
    assert best.config["model"] == "test_convnext"


def test_thresholds_are_tuned_to_the_best_f1():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 7)) < 0.3
    # Positives score in [0.55, 0.9), negatives in [0.1, 0.53): of the grid, only 0.55 separates them perfectly.
    probabilities = np.where(truth, 0.55 + 0.35 * rng.random((200, 7)), 0.1 + 0.43 * rng.random((200, 7)))
    targets = TargetArrays(
        truth.astype(np.float32), np.ones((200, 7), bool), np.zeros((200, 7), np.int64), np.full(200, IGNORE)
    )
    thresholds = tune_thresholds(probabilities, targets)
    assert thresholds == {c: 0.55 for c in CONDITIONS}


def _batch(conditions, mask, severity):
    return {
        "conditions": torch.tensor(conditions, dtype=torch.float32),
        "condition_mask": torch.tensor(mask),
        "severity": torch.tensor(severity),
        "skin_type": torch.full((len(conditions),), IGNORE),
    }


def test_masked_loss_ignores_what_is_unknown():
    losses = _Losses(torch.ones(7), TrainConfig(data="x", severity_on_absent=True))
    torch.manual_seed(0)
    outputs = (torch.randn(2, 7), torch.randn(2, 7, 4))
    mask = [[True] * 4 + [False] * 3] * 2
    severity = [[0, 1, 0, 0, IGNORE, IGNORE, IGNORE]] * 2
    base = losses(outputs, _batch([[0, 1, 0, 0, 0, 0, 0]] * 2, mask, severity))
    flipped_unknown = losses(outputs, _batch([[0, 1, 0, 0, 1, 1, 1]] * 2, mask, severity))
    assert torch.isclose(base, flipped_unknown)
    known_changed = losses(outputs, _batch([[1, 1, 0, 0, 0, 0, 0]] * 2, mask, severity))
    assert not torch.isclose(base, known_changed)
    moved = outputs[1].clone()
    moved[:, 4:] += 5.0  # severity logits where the level is unknown
    assert torch.isclose(losses((outputs[0], moved), _batch([[0, 1, 0, 0, 0, 0, 0]] * 2, mask, severity)), base)
    moved[:, 0, 2] += 5.0  # and where it is known
    assert not torch.isclose(losses((outputs[0], moved), _batch([[0, 1, 0, 0, 0, 0, 0]] * 2, mask, severity)), base)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_metrics(synth_set, tmp_path):
    whole = fit(tiny_config(synth_set, tmp_path / "whole", epochs=3), progress=False)
    part = fit(tiny_config(synth_set, tmp_path / "part", epochs=3), progress=False, stop_after=1)
    assert part.test_metrics == {} and part.epochs_run == 1
    resumed = fit(tiny_config(synth_set, tmp_path / "part", epochs=3), resume=True, progress=False)
    assert resumed.epochs_run == 3
    for key in ("macro_f1", "micro_f1", "severity_accuracy", "severity_mae"):
        assert resumed.test_metrics[key] == pytest.approx(whole.test_metrics[key], abs=1e-6), key
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    for name, tensor in a.state_dict.items():
        assert torch.allclose(tensor.float(), b.state_dict[name].float(), atol=1e-5), name


@pytest.mark.postgres
@pytest.mark.slow
def test_a_training_row_lands_in_postgres(synth_set, tmp_path, clean_postgres, monkeypatch):
    monkeypatch.setenv("SKINSERVE_DATABASE_URL", clean_postgres)
    result = fit(tiny_config(synth_set, tmp_path / "run", epochs=1, registry=True, version="t1"), progress=False)
    engine = create_registry_engine(clean_postgres)
    with Session(engine) as session:
        row = session.scalars(select(TrainingMetrics)).one()
    engine.dispose()
    assert (row.model_name, row.version) == ("test_convnext", "t1")
    assert row.f1_score == pytest.approx(result.test_metrics["macro_f1"])
    assert row.hyperparameters["lr"] == TINY["lr"] and row.dataset_size == len(list(synth_set.rglob("*.png")))
    assert row.training_duration_minutes >= 1


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny", "vit_tiny_patch16_224", "efficientnet_b0"])
def test_named_backbones_give_the_two_heads(name):
    model = create_skin_model(name, img_size=64).eval()
    with torch.no_grad():
        conditions, severity = model(torch.randn(2, 3, 64, 64))
    assert conditions.shape == (2, 7) and severity.shape == (2, 7, 4)


def test_skin_type_head_is_optional():
    model = create_skin_model("test_convnext", img_size=64, skin_type_head=True).eval()
    assert [o.shape for o in model(torch.randn(1, 3, 64, 64))][2] == (1, 5)


def test_local_weights_file_is_loaded(tmp_path):
    source = create_backbone("test_convnext", 64)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = create_backbone("test_convnext", 64, weights=tmp_path / "w.pth")
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_pretrained_offline_says_to_pass_a_weights_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="--weights"):
        create_backbone("test_convnext", 64, pretrained=True)


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, env=os.environ | (env or {})
    )


@pytest.mark.slow
def test_evaluate_json_has_the_documented_keys(tiny_run, synth_set):
    result = _cli(["skinserve", "evaluate", str(tiny_run.out / "best.pt"), "--data", str(synth_set), "--json"])
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {
        "macro_f1",
        "micro_f1",
        "severity_accuracy",
        "severity_mae",
        "per_condition",
        "exact_match",
        "severity_weighted_f1",
        "slices",
    } <= set(metrics)
    assert set(metrics["per_condition"]) == set(CONDITIONS)
    assert {"precision", "recall", "f1", "auc"} <= set(metrics["per_condition"]["acne"])
    assert set(metrics["slices"]) == {"skin_tone", "gender"}
    saved = json.loads((tiny_run.out / "metrics.json").read_text())
    assert metrics["macro_f1"] == pytest.approx(saved["macro_f1"], abs=1e-9)


@pytest.mark.slow
def test_evaluate_refuses_the_test_split_of_another_dataset(tiny_run, synth_copy):
    next(synth_copy.rglob("*.png")).write_bytes(b"changed")
    result = _cli(["skinserve", "evaluate", str(tiny_run.out / "best.pt"), "--data", str(synth_copy)])
    assert result.returncode == 2 and "--split all" in result.stderr


@pytest.mark.slow
def test_train_command_runs_from_the_command_line(synth_set, tmp_path):
    args = [
        "train",
        "--data",
        str(synth_set),
        "--out",
        str(tmp_path / "cli"),
        "--model",
        "test_convnext",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--no-registry",
        "--workers",
        "0",
        "--set",
        "augment=0.5",
    ]
    result = _cli(args)
    assert result.returncode == 0, result.stderr
    assert "macro-F1" in result.stdout and "95% CI" in result.stdout and "baseline" in result.stdout
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["augment"] == 0.5


@pytest.mark.slow
def test_explain_writes_a_heatmap_png(tiny_run, synth_set, tmp_path):
    image = next(synth_set.glob("acne/severe/*.png"))
    result = _cli(["skinserve", "explain", str(tiny_run.out / "best.pt"), str(image), "--out", str(tmp_path / "e.png")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cross_validation_reports_mean_and_spread(synth_set, tmp_path):
    from train.folds import cross_validate, fold_splits

    config = tiny_config(synth_set, tmp_path / "cv", epochs=1)
    splits = fold_splits(config, 3)
    for split in splits:
        sides = {}
        for relpath, side in split.assignments.items():
            group = Path(relpath).stem.removesuffix("_flipped")
            sides.setdefault(group, set()).add(side)
        assert all(len(s) == 1 for s in sides.values())
    report = cross_validate(config, 3, progress=False)
    assert len(report["runs"]) == 3 and {"mean", "std"} == set(report["summary"]["macro_f1"])


@pytest.mark.slow
def test_tune_searches_and_saves_the_best_parameters(synth_set, tmp_path):
    from train.tune import tune

    best = tune(tiny_config(synth_set, tmp_path / "t", epochs=1), tmp_path / "t", trials=2)
    assert best["trials"] == 2 and {"lr", "batch_size", "augment"} == set(best["best_params"])
    assert (tmp_path / "t" / "tune.json").is_file()
