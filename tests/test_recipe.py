"""The training recipe's contracts: one image path from file to model input, calibrated probabilities stored and
applied, baselines and intervals beside every score, --refit recorded, severity learnt where it is scored."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skinserve.data.records import ImageRecord
from skinserve.labels import CONDITIONS, Targets
from skinserve.modeling.calibration import expected_calibration_error, fit_temperatures
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.dataset import SkinImageDataset, eval_transform, train_transform
from skinserve.modeling.metrics import bootstrap_intervals, evaluate_outputs, training_priors, trivial_baselines
from skinserve.modeling.targets import IGNORE, TargetArrays
from skinserve.predictions import decode, sigmoid
from skinserve.preprocess import Preprocessing
from skinserve.serve.quality import FaceCheckMode, FaceStage, QualitySettings
from skinserve.serve.uploads import UploadLimits, prepare_upload
from train.config import TrainConfig, load_config
from train.loop import _Losses, fit

PRE = Preprocessing(96, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _face_like(width: int, height: int) -> Image.Image:
    """A picture with structure in every channel, so a wrong orientation or channel order changes the array."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x + 2 * y) % 256)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _encoded(kind: str) -> bytes:
    buffer = io.BytesIO()
    image = _face_like(320, 240)
    if kind == "rgba":
        rgba = image.convert("RGBA")
        alpha = np.full((240, 320), 255, np.uint8)
        alpha[:, :100] = 60  # a translucent band: composited over white by both paths
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.save(buffer, "PNG")
    elif kind == "16-bit":
        grey = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(grey).save(buffer, "PNG")  # mode I;16
    elif kind == "palette":
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, "PNG")
    elif kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
        image.save(buffer, "JPEG", quality=92, exif=exif)
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=92)
    elif kind == "large-jpeg":
        _face_like(2400, 1800).save(buffer, "JPEG", quality=90)  # decoded at 1/8 scale by both paths
    else:
        raise ValueError(kind)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["rgba", "16-bit", "palette", "exif-rotated", "cmyk", "large-jpeg"])
def test_training_and_the_service_prepare_the_identical_array(kind, tmp_path):
    data = _encoded(kind)
    path = tmp_path / f"image-{kind}.{'jpg' if 'jpeg' in kind or kind in ('cmyk', 'exif-rotated') else 'png'}"
    path.write_bytes(data)
    record = ImageRecord(path, path.name, Targets(), path.name, "folder")
    trained = SkinImageDataset([record], eval_transform(PRE), PRE)[0]["image"].numpy()
    served = prepare_upload(data, PRE, UploadLimits()).array
    assert trained.shape == served.shape == (3, 96, 96)
    assert np.array_equal(trained, served)
    # Augmentation off is the same path exactly, not a look-alike.
    assert np.array_equal(SkinImageDataset([record], train_transform(PRE, 0.0), PRE)[0]["image"].numpy(), served)


def test_face_crops_train_on_the_window_the_service_crops(tmp_path):
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    record = ImageRecord(photo, photo.name, Targets(), photo.name, "folder")
    cropped = replace(PRE, face_crop_margin=0.3)
    trained = SkinImageDataset([record], eval_transform(cropped), cropped)[0]["image"].numpy()
    faces = FaceStage.create(QualitySettings(check=FaceCheckMode.off), 0.3)
    served = prepare_upload(photo.read_bytes(), cropped, UploadLimits(), faces)
    assert served.window is not None and np.array_equal(trained, served.array)
    whole = prepare_upload(photo.read_bytes(), PRE, UploadLimits()).array
    assert not np.allclose(trained, whole)  # the crop is not the whole picture


def test_an_exif_rotated_photo_trains_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_encoded("exif-rotated"))
    record = ImageRecord(path, path.name, Targets(), path.name, "folder")
    upright = _face_like(320, 240).transpose(Image.Transpose.ROTATE_270)  # what orientation 6 shows
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=92)
    reference = prepare_upload(buffer.getvalue(), PRE, UploadLimits()).array
    trained = SkinImageDataset([record], eval_transform(PRE), PRE)[0]["image"].numpy()
    assert np.abs(trained - reference).mean() < 0.1  # JPEG noise only; the sideways picture differs by far more


def _targets(truth: np.ndarray, severity: np.ndarray | None = None) -> TargetArrays:
    n = len(truth)
    if severity is None:
        severity = np.where(truth, 2, 0).astype(np.int64)
    return TargetArrays(truth.astype(np.float32), np.ones_like(truth, bool), severity, np.full(n, IGNORE))


def test_temperatures_calibrate_overconfident_logits():
    rng = np.random.default_rng(0)
    honest = rng.normal(-0.8, 2.0, (4000, 7))
    truth = rng.random((4000, 7)) < sigmoid(honest)  # calibrated at T = 1 by construction
    overconfident = honest * 4.0
    targets = _targets(truth)
    temperatures = fit_temperatures(overconfident, targets)
    assert all(3.0 < t < 5.5 for t in temperatures.values()), temperatures
    before = expected_calibration_error(overconfident, targets)
    after = expected_calibration_error(overconfident, targets, temperatures)
    assert np.mean(list(after.values())) < 0.5 * np.mean(list(before.values()))


def test_too_few_positives_keep_temperature_one():
    truth = np.zeros((50, 7), bool)
    truth[:2] = True
    assert set(fit_temperatures(np.random.default_rng(1).normal(size=(50, 7)), _targets(truth)).values()) == {1.0}


def test_decode_and_evaluation_apply_the_temperatures():
    logits = np.array([[2.0, -1.0, 0.5, 0.0, 3.0, -2.0, 1.0]])
    temperatures = {c: 2.0 for c in CONDITIONS}
    answer = decode(logits, np.zeros((1, 7, 4)), {c: 0.6 for c in CONDITIONS}, temperatures)[0]
    for j, name in enumerate(CONDITIONS):
        assert answer["conditions"][name]["probability"] == pytest.approx(float(sigmoid(logits[0, j] / 2.0)), abs=1e-6)
    # acne: sigmoid(2) = 0.88 without, sigmoid(1) = 0.73 with; present either way at 0.6. textured: 0.95 / 0.82.
    assert answer["conditions"]["acne"]["present"]
    assert not decode(logits, np.zeros((1, 7, 4)), {c: 0.75 for c in CONDITIONS}, temperatures)[0]["conditions"][
        "acne"
    ]["present"]
    truth = np.array([[True, False, True, False, True, False, True]])
    plain = evaluate_outputs(logits, np.zeros((1, 7, 4)), _targets(truth), {c: 0.75 for c in CONDITIONS})
    scaled = evaluate_outputs(
        logits, np.zeros((1, 7, 4)), _targets(truth), {c: 0.75 for c in CONDITIONS}, temperatures=temperatures
    )
    assert plain["per_condition"]["acne"]["recall"] == 1.0 and scaled["per_condition"]["acne"]["recall"] == 0.0


def test_baselines_and_intervals_from_the_training_priors():
    rng = np.random.default_rng(2)
    truth = rng.random((400, 7)) < 0.25
    severity = np.where(truth, rng.integers(1, 4, (400, 7)), 0)
    severity[truth & (rng.random((400, 7)) < 0.6)] = 2  # "moderate" is the majority present level
    targets = _targets(truth, severity)
    priors = training_priors(targets)
    assert priors["majority_severity"] == "moderate"
    assert priors["condition_prior"]["acne"] == pytest.approx(truth[:, 0].mean(), abs=1e-4)
    baselines = trivial_baselines(priors, targets)
    negative = baselines["all negative, majority severity"]
    assert negative["macro_f1"] == 0.0
    assert negative["severity_accuracy"] == pytest.approx((severity[truth] == 2).mean())
    assert 0.1 < baselines["per-condition prior, majority severity"]["macro_f1"] < 0.4
    # A good model: its interval holds its score, and lies far above the baselines.
    logits = np.where(truth, 3.0, -3.0) + rng.normal(0, 1.0, truth.shape)
    levels = np.eye(4)[severity] * 5.0
    report = evaluate_outputs(logits, levels, targets, None, priors=priors)
    low, high = report["intervals"]["macro_f1"]
    assert low <= report["macro_f1"] <= high and high - low < 0.1
    assert report["intervals"]["severity_accuracy"] == [1.0, 1.0]
    assert low > max(b["macro_f1"] for b in report["baselines"].values()) + 0.3
    small = bootstrap_intervals(sigmoid(logits[:20]), severity[:20], _targets(truth[:20], severity[:20]), None)
    assert small["macro_f1"][1] - small["macro_f1"][0] > high - low  # fewer images, wider interval


def test_slices_carry_intervals_gaps_and_small_slice_warnings():
    rng = np.random.default_rng(3)
    truth = rng.random((60, 7)) < 0.3
    logits = np.where(truth, 2.0, -2.0)
    logits[:10] *= -1  # the first ten images (one slice) are all wrong
    slices = {"gender": ["a"] * 10 + ["b"] * 50}
    report = evaluate_outputs(logits, np.zeros((60, 7, 4)), _targets(truth), None, slices=slices)
    assert report["slices"]["gender"]["a"]["intervals"]["macro_f1"] is not None
    assert report["slice_gaps"]["gender"]["macro_f1"] == pytest.approx(1.0)
    assert any("gender='a' holds 10 images" in w for w in report["warnings"])
    assert not any("gender='b'" in w for w in report["warnings"])


def test_severity_on_absent_conditions_is_a_choice():
    config = TrainConfig(data="x", severity_on_absent=False)
    torch.manual_seed(0)
    outputs = (torch.randn(2, 7), torch.randn(2, 7, 4))
    batch = {
        "conditions": torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]] * 2),
        "condition_mask": torch.ones(2, 7, dtype=torch.bool),
        "severity": torch.tensor([[2, 0, 0, 0, 0, 0, 0]] * 2),
        "skin_type": torch.full((2,), IGNORE),
    }
    base = _Losses(None, config)(outputs, batch)
    moved = outputs[1].clone()
    moved[:, 1:] += torch.randn(2, 6, 4) * 5  # severity logits of the absent conditions
    assert torch.isclose(_Losses(None, config)((outputs[0], moved), batch), base)
    default = TrainConfig(data="x")
    assert default.severity_on_absent
    assert not torch.isclose(_Losses(None, default)((outputs[0], moved), batch), _Losses(None, default)(outputs, batch))


def test_config_lists_from_yaml_become_tuples_and_bad_values_are_named():
    config = load_config(None, data="x", split_ratios=[0.6, 0.2, 0.2], augment_kinds=["flip"])
    assert config.split_ratios == (0.6, 0.2, 0.2) and config.augment_kinds == ("flip",)
    with pytest.raises(ValueError, match="augment_kinds"):
        load_config(None, data="x", augment_kinds=["hue"]).validate()
    with pytest.raises(ValueError, match="split_ratios"):
        load_config(None, data="x", split_ratios=[0.9, 0.0, 0.1]).validate()


@pytest.mark.slow
def test_refit_is_recorded_and_keeps_the_validation_choices(synth_set, tmp_path):
    options = {"model": "test_convnext", "img_size": 64, "batch_size": 16, "workers": 0, "registry": False}
    config = load_config(None, data=str(synth_set), out=str(tmp_path / "run"), epochs=2, refit=True, **options)
    result = fit(config, progress=False)
    saved = json.loads((result.out / "config.json").read_text())
    assert saved["refit"] is True
    best = load_checkpoint(result.out / "best.pt")
    assert best.config["refit"] is True
    split = json.loads((result.out / "split.json").read_text())["counts"]
    assert best.metrics["refit"] == {"epochs": 2, "images": split["train"] + split["val"]}
    assert set(best.temperatures) == set(CONDITIONS) and set(best.thresholds) == set(CONDITIONS)
    history = json.loads((result.out / "history.json").read_text())
    assert [h["phase"] for h in history] == ["select", "select", "refit", "refit"]
    metrics = json.loads((result.out / "metrics.json").read_text())
    assert metrics["refit"]["epochs"] == 2 and "refit on train+val" not in json.dumps(metrics["warnings"])


@pytest.mark.slow
def test_evaluate_json_prints_baselines_intervals_and_applies_the_stored_temperatures(synth_set, tmp_path):
    options = {"model": "test_convnext", "img_size": 64, "batch_size": 16, "workers": 0, "registry": False}
    config = load_config(None, data=str(synth_set), out=str(tmp_path / "run"), epochs=2, face_crop=0.3, **options)
    result = fit(config, progress=False)
    best = load_checkpoint(result.out / "best.pt")
    assert "priors" in best.metrics and "calibration" in best.metrics["val"]
    assert best.preprocessing.face_crop_margin == 0.3  # trained on face crops: the export and service crop alike
    run = subprocess.run(
        [sys.executable, "-m", "skinserve", "evaluate", str(result.out / "best.pt"), "--data", str(synth_set)]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(metrics["baselines"]) == {"all negative, majority severity", "per-condition prior, majority severity"}
    assert metrics["intervals"]["macro_f1"][0] <= metrics["macro_f1"] <= metrics["intervals"]["macro_f1"][1]
    assert metrics["temperatures"] == pytest.approx({c: best.temperatures.get(c, 1.0) for c in CONDITIONS})
    assert metrics["macro_f1"] == pytest.approx(json.loads((result.out / "metrics.json").read_text())["macro_f1"])


# --- decisions on the model's outputs and the training step's precision -----------------------------------------


def test_severity_is_the_median_of_the_present_levels_not_their_argmax():
    from skinserve.predictions import severity_levels

    probabilities = np.asarray(
        [
            [0.20, 0.32, 0.20, 0.28],  # argmax says mild; 60% of the present mass is moderate or worse
            [0.90, 0.01, 0.02, 0.07],  # "none" takes most: the present levels still decide among themselves
            [0.00, 1.00, 0.00, 0.00],
            [0.00, 0.00, 0.00, 1.00],
            [0.00, 0.10, 0.80, 0.10],
        ]
    )
    assert severity_levels(probabilities).tolist() == [2, 3, 1, 3, 2]
    assert severity_levels(probabilities[None]).shape == (1, 5)  # any leading shape, as decode passes [N, 7, 4]


def test_a_tie_for_the_best_f1_takes_the_middle_threshold_not_the_lowest():
    from skinserve.modeling.metrics import tune_thresholds

    rows = 40
    truth = np.zeros((rows, len(CONDITIONS)), np.float32)
    truth[:10] = 1.0
    probabilities = np.where(truth > 0.5, 0.97, 0.02)  # separated: every threshold from 0.05 to 0.95 ties
    targets = TargetArrays(truth, np.ones_like(truth, bool), np.full(truth.shape, IGNORE), np.full(rows, IGNORE))
    assert set(tune_thresholds(probabilities, targets).values()) == {0.5}
    probabilities[:10, 0] = 0.3  # now only 0.05..0.30 separate acne: the middle of that tie
    assert tune_thresholds(probabilities, targets)["acne"] == pytest.approx(0.15)


def test_training_steps_autocast_to_bf16_only_on_a_cpu_that_runs_it_natively():
    from train.loop import autocast_dtype

    cpu = torch.device("cpu")
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert autocast_dtype(cpu, TrainConfig()) == (torch.bfloat16 if native else None)
    assert autocast_dtype(cpu, TrainConfig(amp=False)) is None
    assert autocast_dtype(torch.device("cuda"), TrainConfig()) == torch.float16


def _recipe_benchmark():
    """benchmarks/recipe.py as a module (the benchmarks folder is scripts, not a package on the path)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import recipe
    finally:
        sys.path.pop(0)
    return recipe


def test_every_row_of_the_recipe_benchmark_is_a_valid_config():
    """benchmarks/recipe.py's ablation names config fields: a renamed field fails here, not an hour into a run."""
    recipe = _recipe_benchmark()
    for name, change in recipe.ABLATIONS.items():
        config = load_config(None, data="d", **change)
        for field, value in change.items():
            assert getattr(config, field) == value, name


def test_the_plain_loop_on_the_train_split_sees_exactly_the_images_skinserve_train_trains_on(synth_set, tmp_path):
    """The benchmark's data-share row: the plain loop on the same images as the defaults, not on a look-alike."""
    from train.loop import _dataset

    recipe = _recipe_benchmark()
    for seed in (0, 3):
        config = load_config(None, data=str(synth_set), seed=seed)
        records, split = _dataset(config, tmp_path, None)
        trained = {r.relpath for r in split.records(records, "train")}
        plain = {r.relpath for r in recipe.plain_records(synth_set, seed, train_split_only=True)}
        assert plain == trained
        assert 0 < len(trained) < len(records) == len(recipe.plain_records(synth_set, seed))


def test_the_default_warm_up_takes_the_first_30_percent_of_the_steps_and_epochs_still_count():
    from train.loop import _scheduler

    def rates(config: TrainConfig) -> list[float]:
        optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        scheduler = _scheduler(optimizer, config, steps_per_epoch=10, epochs=config.epochs)
        seen = []
        for _ in range(100):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    default = rates(TrainConfig(epochs=10))
    assert int(np.argmax(default)) == 30 and default[0] < 0.05 and default[-1] < 0.01
    assert int(np.argmax(rates(TrainConfig(epochs=10, warmup_epochs=1.0)))) == 10
    assert int(np.argmax(rates(TrainConfig(epochs=10, warmup_epochs=8.0)))) == 50  # capped at half the run
