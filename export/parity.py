"""Parity: every exported artifact, through the runtime that serves it, against the PyTorch model on the same inputs.

Compared are probabilities (sigmoid of the condition logits, softmax of the severity logits), on random inputs and
on synthetic faces at batch sizes 1 and 8; on the faces the thresholded conditions must also be identical. The
optional outputs are held to the same tolerance: skin-type probabilities (softmax), and each cell's probabilities
in the class activation maps (sigmoid of condition_cam, softmax over severity_cam's levels).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skinserve.data.synth import GENDERS, FaceSpec, draw_face
from skinserve.labels import CONDITIONS, Severity
from skinserve.predictions import sigmoid, softmax, threshold_vector
from skinserve.preprocess import Preprocessing, model_batch
from skinserve.runtime import CAM_OUTPUTS, OUTPUT_NAMES, SKIN_TYPE_OUTPUT, load_exported_model

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # max absolute difference of any probability
BATCH_SIZES = (1, 8)
PARITY_FILE = "parity.json"


@dataclass(frozen=True)
class ParityRow:
    format: str
    runtime: str
    inputs: str  # "random" or "synthetic"
    batch: int
    condition_diff: float  # max |p_artifact - p_torch| over condition probabilities
    severity_diff: float  # the same over severity probabilities
    tolerance: float
    same_conditions: bool | None  # thresholded conditions identical (synthetic faces only)
    skin_type_diff: float | None = None  # skin-type probabilities; None: no skin-type output
    cam_diff: float | None = None  # per-cell probabilities of both maps; None: no CAM outputs

    @property
    def passed(self) -> bool:
        diffs = [self.condition_diff, self.severity_diff, self.skin_type_diff, self.cam_diff]
        close = max(d for d in diffs if d is not None) <= self.tolerance
        return close and self.same_conditions is not False


def synthetic_faces(count: int, pre: Preprocessing, seed: int = 0) -> np.ndarray:
    """`count` drawn faces across skin tones, ages and conditions (the last one healthy), preprocessed as served."""
    side = pre.resize_size + 16  # larger than the model input, so the resize and the crop both take part
    images = []
    for i in range(count):
        condition = {CONDITIONS[i % len(CONDITIONS)]: Severity(1 + i % 3)} if i < count - 1 else {}
        spec = FaceSpec(
            fitzpatrick=1 + i % 6, age=20 + 7 * i, gender=GENDERS[i % 2], conditions=condition, seed=seed + i
        )
        images.append(draw_face(spec, side))
    return model_batch(images, pre)


def parity_inputs(pre: Preprocessing, seed: int = 0) -> dict[str, np.ndarray]:
    """Eight random normalised inputs and eight synthetic faces; the batch-1 cases use the first of each."""
    size = max(BATCH_SIZES)
    shape = (size, 3, pre.input_size, pre.input_size)
    random = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return {"random": random, "synthetic": synthetic_faces(size, pre, seed)}


@torch.no_grad()
def torch_logits(model: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = model.eval()(torch.from_numpy(batch))
    return outputs[0].numpy(), outputs[1].numpy()


@torch.no_grad()
def torch_outputs(model: torch.nn.Module, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every output the export has, from the PyTorch model through the same wrapper export traced."""
    from export.formats import Logits

    results = Logits(model.eval(), cam=CAM_OUTPUTS[0] in names)(torch.from_numpy(batch))
    return {name: result.numpy() for name, result in zip(names, results, strict=True)}


def optional_diffs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> tuple[float | None, ...]:
    """(skin-type probability diff, CAM per-cell probability diff); None for an output the export lacks."""

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).max())

    skin = None
    if SKIN_TYPE_OUTPUT in reference:
        ref, cand = (softmax(x[SKIN_TYPE_OUTPUT].astype(np.float64)) for x in (reference, candidate))
        skin = diff(ref, cand)
    cam = None
    if CAM_OUTPUTS[0] in reference:
        condition = diff(*(sigmoid(x[CAM_OUTPUTS[0]].astype(np.float64)) for x in (reference, candidate)))
        severity = diff(*(softmax(x[CAM_OUTPUTS[1]].astype(np.float64), axis=2) for x in (reference, candidate)))
        cam = max(condition, severity)
    return skin, cam


def compare(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray
) -> tuple[float, float, bool]:
    """(condition probability diff, severity probability diff, thresholded conditions identical)."""
    ref_p, cand_p = sigmoid(reference[0].astype(np.float64)), sigmoid(candidate[0].astype(np.float64))
    ref_s, cand_s = softmax(reference[1].astype(np.float64)), softmax(candidate[1].astype(np.float64))
    same = bool(np.array_equal(ref_p >= thresholds, cand_p >= thresholds))
    return float(np.abs(ref_p - cand_p).max()), float(np.abs(ref_s - cand_s).max()), same


def check_parity(model: torch.nn.Module, export_dir: Path, formats: list[str], seed: int = 0) -> list[ParityRow]:
    """One row per format x input kind x batch size; each format runs on the runtime `auto` picks for it here."""
    rows = []
    for fmt in formats:
        exported = load_exported_model(export_dir, fmt=fmt)
        pre = exported.manifest.preprocess
        thresholds = threshold_vector(exported.manifest.thresholds)
        precision = exported.manifest.artifacts[fmt].precision
        for kind, images in parity_inputs(pre, seed).items():
            for batch in BATCH_SIZES:
                inputs = images[:batch]
                reference = torch_outputs(model, inputs, exported.outputs)
                candidate = exported.predict_outputs(inputs)
                diffs = compare(
                    tuple(reference[n] for n in OUTPUT_NAMES), tuple(candidate[n] for n in OUTPUT_NAMES), thresholds
                )
                rows.append(
                    ParityRow(
                        fmt,
                        exported.runtime,
                        kind,
                        batch,
                        diffs[0],
                        diffs[1],
                        TOLERANCE[precision],
                        diffs[2] if kind == "synthetic" else None,
                        *optional_diffs(reference, candidate),
                    )
                )
    return rows


def parity_table(rows: list[ParityRow]) -> str:
    header = (
        f"{'format':<10} {'runtime':<17} {'inputs':<9} {'batch':>5} {'cond |dp|':>10} {'sev |dp|':>10} "
        f"{'skin |dp|':>10} {'cam |dp|':>10} {'tolerance':>9}  {'same conditions':<15} result"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        same = {None: "-", True: "yes", False: "NO"}[r.same_conditions]
        skin, cam = (f"{d:>10.2e}" if d is not None else f"{'-':>10}" for d in (r.skin_type_diff, r.cam_diff))
        lines.append(
            f"{r.format:<10} {r.runtime:<17} {r.inputs:<9} {r.batch:>5} {r.condition_diff:>10.2e} "
            f"{r.severity_diff:>10.2e} {skin} {cam} {r.tolerance:>9.0e}  {same:<15} {'pass' if r.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def parity_summary(rows: list[ParityRow]) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in rows),
        "file": PARITY_FILE,
        "tolerance": TOLERANCE,
        "batch_sizes": list(BATCH_SIZES),
    }


def save_parity(rows: list[ParityRow], path: Path) -> Path:
    report = parity_summary(rows) | {"rows": [asdict(r) | {"passed": r.passed} for r in rows]}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
