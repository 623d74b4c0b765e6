"""The typed contracts that cross stage boundaries: checkpoints and export manifests are written and read through
one class each, files written before the typed classes still load, and a newer format version is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import MANIFEST_FORMAT, ExportManifest, ManifestError, load_manifest, write_manifest
from skinserve.modeling.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointError,
    ModelSpec,
    load_checkpoint,
    save_checkpoint,
)
from skinserve.preprocess import Preprocessing

PRE = Preprocessing(64, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def legacy_checkpoint_payload() -> dict:
    """A best.pt as training wrote it before the typed Checkpoint: a plain dict in the same layout."""
    return {
        "format": "skinserve-checkpoint/1",
        "model": {
            "name": "test_convnext",
            "img_size": 64,
            "skin_type_head": False,
            "drop_rate": 0.1,
            "num_features": 8,
        },
        "config": {"model": "test_convnext", "epochs": 1},
        "labels": {"conditions": list(CONDITIONS), "severities": list(SEVERITY_LABELS), "skin_types": ["oily"]},
        "preprocessing": PRE.as_dict(),
        "dataset_fingerprint": "f" * 64,
        "split_seed": 0,
        "versions": {"torch": "2.14.1"},
        "state_dict": {"head.weight": torch.ones(2, 2)},
        "thresholds": dict.fromkeys(CONDITIONS, 0.4),
        "metrics": {"val": {"macro_f1": 0.5}},
        "epoch": 3,
    }


def test_a_checkpoint_round_trips_through_its_class(tmp_path: Path):
    written = Checkpoint(
        model=ModelSpec("resnet18", 128, skin_type_head=True, num_features=512),
        preprocessing=PRE,
        state_dict={"w": torch.arange(4.0)},
        thresholds={"acne": 0.3},
        resume={"optimizer": {"state": {}}, "scheduler": {}, "scaler": {}, "run_state": {"epoch": 2}},
        epoch=2,
    )
    read = load_checkpoint(save_checkpoint(tmp_path / "last.pt", written))
    assert read.model == written.model and read.preprocessing == PRE and read.thresholds == {"acne": 0.3}
    assert torch.equal(read.state_dict["w"], torch.arange(4.0))
    assert read.resume["run_state"] == {"epoch": 2}


def test_a_checkpoint_written_before_the_typed_class_still_loads(tmp_path: Path):
    path = tmp_path / "best.pt"
    torch.save(legacy_checkpoint_payload(), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.model == ModelSpec("test_convnext", 64, False, 0.1, 8)
    assert checkpoint.preprocessing == PRE
    assert checkpoint.thresholds["acne"] == 0.4 and checkpoint.epoch == 3 and checkpoint.resume is None
    assert checkpoint.labels.skin_types == ("oily",)
    assert checkpoint.temperatures == {}  # written before calibration: every temperature 1.0


def test_a_newer_checkpoint_version_is_refused_naming_the_file_and_version(tmp_path: Path):
    path = tmp_path / "future.pt"
    torch.save(legacy_checkpoint_payload() | {"format": "skinserve-checkpoint/3"}, path)
    with pytest.raises(CheckpointError, match=r"future\.pt has format version 3, newer than this skinserve reads"):
        load_checkpoint(path)
    assert CHECKPOINT_FORMAT == "skinserve-checkpoint/2"  # 2 added the temperatures; a version-1 file still loads


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else/1"}, "is not a skinserve-checkpoint file"),
        ({"thresholdz": {}}, "fields this skinserve does not know: thresholdz"),
    ],
)
def test_a_foreign_or_misnamed_checkpoint_is_refused(tmp_path: Path, change: dict, message: str):
    path = tmp_path / "odd.pt"
    torch.save(legacy_checkpoint_payload() | change, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_checkpoint_without_its_model_spec_says_so(tmp_path: Path):
    payload = legacy_checkpoint_payload()
    del payload["model"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken\.pt is not a valid skinserve checkpoint: KeyError"):
        load_checkpoint(tmp_path / "broken.pt")


def manifest_dict() -> dict:
    """A manifest.json as export wrote it before the typed ExportManifest."""
    return {
        "format": "skinserve-export/1",
        "name": "skin-classifier",
        "version": "20261201-abcdef12",
        "created_at": "2026-12-01T00:00:00+00:00",
        "model": {
            "name": "skin-classifier",
            "version": "20261201-abcdef12",
            "backbone": "resnet18",
            "img_size": 128,
            "num_features": 512,
            "skin_type_head": False,
        },
        "labels": {"conditions": list(CONDITIONS), "severities": list(SEVERITY_LABELS)},
        "thresholds": dict.fromkeys(CONDITIONS, 0.5),
        "preprocessing": PRE.as_dict(),
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": ["batch", 3, 64, 64],
            "layout": "NCHW",
            "normalised": True,
        },
        "outputs": [
            {"name": "condition_logits", "dtype": "float32", "shape": ["batch", 7]},
            {"name": "severity_logits", "dtype": "float32", "shape": ["batch", 7, 4]},
        ],
        "dropped_outputs": [],
        "artifacts": {
            "onnx": {
                "file": "model.onnx",
                "format": "onnx",
                "precision": "fp32",
                "device": "any",
                "sha256": "0" * 64,
                "bytes": 10,
                "batch": {"min": None, "max": None},
            }
        },
        "source": {"checkpoint": "best.pt", "sha256": "1" * 64, "metrics": {}, "config": {}, "versions": {}},
        "dataset_fingerprint": "f" * 64,
        "split_seed": 0,
        "versions": {"python": "3.11.7", "tensorrt": None},
        "parity": {"passed": True},
    }


def test_a_manifest_written_before_the_typed_class_still_loads_and_round_trips(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_dict()))
    manifest = load_manifest(tmp_path)
    assert manifest.tag == "skin-classifier:20261201-abcdef12" and manifest.preprocess == PRE
    assert manifest.artifacts["onnx"].batch.max is None and manifest.labels.skin_types == []
    assert manifest.format == MANIFEST_FORMAT and manifest.temperatures == {}  # version 1 reads as 2, uncalibrated
    write_manifest(tmp_path, manifest)
    assert load_manifest(tmp_path) == manifest


def test_a_newer_manifest_version_is_refused_naming_the_file_and_version(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_dict() | {"format": "skinserve-export/7"}))
    with pytest.raises(ManifestError, match=r"manifest\.json has format version 7, newer than this skinserve reads"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("renamed", ["thresholds", "artifacts", "preprocessing"])
def test_a_manifest_with_a_renamed_field_is_refused_where_it_is_read(tmp_path: Path, renamed: str):
    data = manifest_dict()
    data[renamed + "_v2"] = data.pop(renamed)
    with pytest.raises(ManifestError, match=renamed):
        ExportManifest.from_dict(data, tmp_path / "manifest.json")
