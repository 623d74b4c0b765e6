"""Parity: every exported artifact, through the runtime that serves it, against the PyTorch model on the same inputs.

Compared are probabilities (sigmoid of the condition logits, softmax of the severity logits), on random inputs and
on synthetic faces at batch sizes 1 and 8; on the faces the thresholded conditions must also be identical. The
optional outputs are held to the same tolerance: skin-type probabilities (softmax), and each cell's probabilities
in the class activation maps (sigmoid of condition_cam, softmax over severity_cam's levels).

int8 is judged on what it is for instead (`split_parity`): on the test split of the dataset it was calibrated on,
at least 99% of the thresholded condition decisions (image x condition) must equal PyTorch's, and macro-F1 and
severity accuracy must stay within 0.01 of PyTorch's (fp32); the share of images whose seven decisions all agree is
reported beside it, and the probability differences of skin type and of the class activation maps must stay within
the int8 tolerance. Decisions, not whole images, are counted because a prediction within a few thousandths of its
threshold flips under any reduced precision: a resnet10t's int8 graph moved two such probabilities (0.851 to 0.846
against a threshold of 0.85) in 84 test images, 99.7% of decisions but 97.6% of images, while its macro-F1 moved by
0.005. Random inputs say nothing about a graph calibrated on faces, so int8 has no random rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from export.formats import ExportError
from skinserve.data.synth import GENDERS, FaceSpec, draw_face
from skinserve.labels import CONDITIONS, Severity
from skinserve.predictions import sigmoid, softmax, threshold_vector
from skinserve.preprocess import Preprocessing, model_batch
from skinserve.runtime import CAM_OUTPUTS, OUTPUT_NAMES, SKIN_TYPE_OUTPUT, ExportedModel, load_exported_model

if TYPE_CHECKING:
    from export.quantize import CalibrationSet

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}  # max absolute difference of any probability (int8: skin
# type and each cell of the maps only; its conditions and severity are judged by the two thresholds below). The maps'
# cells differ most: 0.10 on a resnet10t, against 0.021 for its pooled condition probabilities.
INT8_AGREEMENT = 0.99  # share of the test split's thresholded condition decisions that equal PyTorch's
INT8_METRIC_DIFF = 0.01  # largest |difference| of macro-F1 and of severity accuracy from PyTorch's
BATCH_SIZES = (1, 8)
PARITY_FILE = "parity.json"


@dataclass(frozen=True)
class ParityRow:
    format: str
    runtime: str
    inputs: str  # "random", "synthetic" or "test split"
    batch: int
    condition_diff: float  # max |p_artifact - p_torch| over condition probabilities
    severity_diff: float  # the same over severity probabilities
    tolerance: float
    same_conditions: bool | None  # thresholded conditions identical (synthetic faces only)
    skin_type_diff: float | None = None  # skin-type probabilities; None: no skin-type output
    cam_diff: float | None = None  # per-cell probabilities of both maps; None: no CAM outputs
    # The test-split row (int8): images compared, the share of thresholded condition decisions equal to PyTorch's,
    # the share of images whose seven all are, and |artifact - PyTorch| of macro-F1 and of severity accuracy; None on
    # the other rows.
    images: int | None = None
    agreement: float | None = None
    images_agreement: float | None = None
    macro_f1_diff: float | None = None
    severity_accuracy_diff: float | None = None

    @property
    def passed(self) -> bool:
        if self.agreement is not None:  # judged by decisions and metrics; the maps and skin type by probability
            optional = [d for d in (self.skin_type_diff, self.cam_diff) if d is not None]
            metrics = max(self.macro_f1_diff or 0.0, self.severity_accuracy_diff or 0.0)
            close = max(optional, default=0.0) <= self.tolerance
            return self.agreement >= INT8_AGREEMENT and metrics <= INT8_METRIC_DIFF and close
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


def check_parity(
    model: torch.nn.Module,
    export_dir: Path,
    formats: list[str],
    seed: int = 0,
    calibration: CalibrationSet | None = None,
) -> list[ParityRow]:
    """One row per format x input kind x batch size; each format runs on the runtime `auto` picks for it here.
    int8 gets one row, on `calibration.test` (`split_parity`)."""
    rows = []
    for fmt in formats:
        exported = load_exported_model(export_dir, fmt=fmt)
        if exported.manifest.artifacts[fmt].precision == "int8":
            if calibration is None:
                raise ExportError(f"{fmt} is checked on the test split: its calibration set is needed")
            rows.append(split_parity(model, exported, fmt, calibration))
            continue
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


def split_parity(model: torch.nn.Module, exported: ExportedModel, fmt: str, calibration: CalibrationSet) -> ParityRow:
    """The artifact against PyTorch on the test split: decisions, macro-F1, severity accuracy, probabilities."""
    from skinserve.modeling.metrics import evaluate_outputs
    from skinserve.modeling.targets import target_arrays

    names = exported.outputs
    reference: dict[str, list[np.ndarray]] = {name: [] for name in names}
    candidate: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in calibration.batches(calibration.test, max(BATCH_SIZES)):
        for name, value in torch_outputs(model, batch, names).items():
            reference[name].append(value)
        for name, value in exported.predict_outputs(batch).items():
            candidate[name].append(value)
    ref = {name: np.concatenate(parts) for name, parts in reference.items()}
    cand = {name: np.concatenate(parts) for name, parts in candidate.items()}
    thresholds = exported.manifest.thresholds
    vector = threshold_vector(thresholds)
    ref_p, cand_p = (sigmoid(x[OUTPUT_NAMES[0]].astype(np.float64)) for x in (ref, cand))
    same = (ref_p >= vector) == (cand_p >= vector)
    agreement, images_agreement = float(np.mean(same)), float(np.mean(np.all(same, axis=1)))
    targets = target_arrays(list(calibration.test))
    metrics = [evaluate_outputs(x[OUTPUT_NAMES[0]], x[OUTPUT_NAMES[1]], targets, thresholds) for x in (ref, cand)]
    condition_diff, severity_diff, _ = compare(
        tuple(ref[n] for n in OUTPUT_NAMES), tuple(cand[n] for n in OUTPUT_NAMES), vector
    )
    return ParityRow(
        fmt,
        exported.runtime,
        "test split",
        max(BATCH_SIZES),
        condition_diff,
        severity_diff,
        TOLERANCE["int8"],
        None,  # judged by `agreement` instead: a few images may differ
        *optional_diffs(ref, cand),
        images=len(calibration.test),
        agreement=agreement,
        images_agreement=images_agreement,
        macro_f1_diff=abs(metrics[0]["macro_f1"] - metrics[1]["macro_f1"]),
        severity_accuracy_diff=abs(metrics[0]["severity_accuracy"] - metrics[1]["severity_accuracy"]),
    )


def parity_table(rows: list[ParityRow]) -> str:
    header = (
        f"{'format':<10} {'runtime':<17} {'inputs':<10} {'batch':>5} {'cond |dp|':>10} {'sev |dp|':>10} "
        f"{'skin |dp|':>10} {'cam |dp|':>10} {'tolerance':>9}  {'same conditions':<15} {'agree':>6} {'images':>6} "
        f"{'dF1':>6} {'dsev':>6} result"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        same = {None: "-", True: "yes", False: "NO"}[r.same_conditions]
        skin, cam = (f"{d:>10.2e}" if d is not None else f"{'-':>10}" for d in (r.skin_type_diff, r.cam_diff))
        split = (
            f"{r.agreement:>6.1%} {r.images_agreement:>6.1%} {r.macro_f1_diff:>6.3f} {r.severity_accuracy_diff:>6.3f}"
            if r.agreement is not None
            else f"{'-':>6} {'-':>6} {'-':>6} {'-':>6}"
        )
        lines.append(
            f"{r.format:<10} {r.runtime:<17} {r.inputs:<10} {r.batch:>5} {r.condition_diff:>10.2e} "
            f"{r.severity_diff:>10.2e} {skin} {cam} {r.tolerance:>9.2g}  {same:<15} {split} "
            f"{'pass' if r.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def parity_summary(rows: list[ParityRow]) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in rows),
        "file": PARITY_FILE,
        "tolerance": TOLERANCE,
        "int8": {
            "agreement": INT8_AGREEMENT,
            "agreement_of": "condition decisions",
            "metric_diff": INT8_METRIC_DIFF,
            "inputs": "test split",
        },
        "batch_sizes": list(BATCH_SIZES),
    }


def save_parity(rows: list[ParityRow], path: Path) -> Path:
    report = parity_summary(rows) | {"rows": [asdict(r) | {"passed": r.passed} for r in rows]}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
