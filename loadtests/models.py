"""A model to put under load when none is given: a synthetic set, a short training run and an ONNX export into a
private BentoML store, each stage run as its own command (`python -m train`, `python -m export`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def build_model_store(
    workdir: Path,
    tag: str = "skin-classifier:test",
    backbone: str = "test_convnext",
    img_size: int = 64,
    epochs: int = 1,
    checkpoint: Path | None = None,
    quiet: bool = True,
    timeout_s: float = 1800,
    train_args: Sequence[str] = (),
    formats: str = "onnx",
    calibration_data: Path | None = None,
    export_args: Sequence[str] = (),
) -> dict[str, str]:
    """Train (unless `checkpoint` is given; `train_args` go to `python -m train`) and export `tag` into
    `workdir/bentoml`; returns the environment a server needs to serve it (BENTOML_HOME, SKINSERVE_MODEL_TAG).
    `formats` as export's; onnx-int8 is calibrated on `calibration_data`, by default the synthetic set trained on
    here; `export_args` go to the export command as they are (--aoti-device cuda, --max-batch 128)."""
    from skinserve.data.synth import SynthConfig, write_synthetic_set

    home = workdir / "bentoml"
    calibration_data = calibration_data or workdir / "shine"
    env = os.environ | {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    if checkpoint is None:
        checkpoint = workdir / "run" / "best.pt"
        write_synthetic_set(workdir / "shine", SynthConfig(per_class=1, size=img_size, seed=3))
        train = ["-m", "train", "--data", str(workdir / "shine"), "--out", str(workdir / "run"), "--model", backbone]
        train += ["--img-size", str(img_size), "--epochs", str(epochs), "--workers", "0", "--scratch"]
        _run([*train, "--no-registry", "--no-progress", *train_args], env, quiet, timeout_s)
    name, version = tag.split(":")
    export = ["-m", "export", str(checkpoint), "--formats", formats, "--out", str(workdir / "export"), "--bento"]
    if "onnx-int8" in formats:
        export += ["--calibration-data", str(calibration_data)]
    export += list(export_args)
    _run([*export, "--name", name, "--version", version], env, quiet, timeout_s)
    return {"BENTOML_HOME": str(home), "SKINSERVE_MODEL_TAG": tag}


def _run(arguments: list[str], env: dict[str, str], quiet: bool, timeout_s: float) -> None:
    if not quiet:
        print(f"running: python {' '.join(arguments)}", flush=True)
    subprocess.run([sys.executable, *arguments], check=True, env=env, capture_output=quiet, timeout=timeout_s)
