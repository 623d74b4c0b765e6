"""The onnx-int8 artifact: ONNX Runtime static quantization of the fp32 graph, calibrated on training-split images.

QDQ format, int8 weights per output channel, uint8 activations (U8S8: what ONNX Runtime's x86 kernels run natively,
through VNNI where the CPU has it), activation ranges by min/max over `count` images spread across the training
split of the dataset the checkpoint was trained on (its fingerprint and split seed rebuild that split).

Mixed precision where it pays (`float_nodes`): the first convolution (three channels of raw pixels: little compute,
the most sensitive layer) and, in a convolutional graph, the last convolution and everything after it (pooling, the
condition, severity and skin-type heads, and the class activation maps, which apply the heads to each cell of that
last feature map) stay float. Measured on a resnet10t trained to validation macro-F1 0.75 (84 test images): the
largest condition-probability difference from fp32 fell from 0.049 to 0.021 and the maps' from 0.16 to 0.10; on
efficientnet_b0 it cost nothing (9.3 against 9.6 CPU ms per image at batch 1). Parity (export/parity.py,
`split_parity`) then holds the conditions, severity, skin type and maps to int8's criteria on the test split.

Why ONNX Runtime and not OpenVINO (benchmarks/int8.py: efficientnet_b0 at 224 px, one thread each, CPU ms per image
on this 2-core AMD EPYC with AVX-512 VNNI and BF16, batch 1 / batch 8, models interleaved in one process, load
average 2): ONNX Runtime fp32 12.1 / 13.3, ONNX Runtime on this int8 graph 9.3 / 8.5; OpenVINO 2026.4 on the fp32
graph 11.3 / 10.2 as it compiles it by default (in bf16 on this CPU: probabilities up to 0.008 from fp32's, far
outside fp32's parity of 1e-4) and 15.3 / 16.6 forced to f32, and on this int8 graph 15.9 / 13.6 (it keeps the
quantize/dequantize pairs around SiLU as separate element-wise layers). The runtime the project already ships runs
the int8 graph fastest, so the project stays on ONNX Runtime and adds no second runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.formats import Artifact, ExportError
from skinserve.data.records import ImageRecord
from skinserve.images import read_for_model
from skinserve.preprocess import Preprocessing, model_batch
from skinserve.runtime import INPUT_NAME

DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class CalibrationSet:
    """The images int8 is calibrated on (from the training split) and judged on (the test split)."""

    data: Path
    train: tuple[ImageRecord, ...]  # a spread sample of the training split, at most the count asked for
    test: tuple[ImageRecord, ...]
    preprocessing: Preprocessing

    def batches(self, records: tuple[ImageRecord, ...], size: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
        """Normalised float32 NCHW batches of `records`, preprocessed exactly as served."""
        for start in range(0, len(records), size):
            yield model_batch(
                [read_for_model(r.path, self.preprocessing.resize_size) for r in records[start : start + size]],
                self.preprocessing,
            )


def calibration_set(
    data: Path,
    fingerprint: str | None,
    seed: int,
    preprocessing: Preprocessing,
    count: int,
    ratios: tuple[float, float, float] | None = None,
) -> CalibrationSet:
    """The checkpoint's own split of `data`: up to `count` training images, evenly spread, and the test split.

    A dataset other than the one the checkpoint was trained on is refused (its fingerprint differs): calibrating
    on the test images would make int8's parity check meaningless."""
    from skinserve.data.split import DEFAULT_RATIOS, records_of_split

    if not Path(data).exists():
        raise ExportError(f"--calibration-data {data} does not exist")
    if count < 1:
        raise ExportError(f"--calibration-images must be at least 1, not {count}")
    ratios = ratios or DEFAULT_RATIOS
    train = records_of_split(Path(data), "train", seed, fingerprint, ratios=ratios)
    test = records_of_split(Path(data), "test", seed, fingerprint, ratios=ratios)
    if not train or not test:
        raise ExportError(
            f"{data} has {len(train)} training and {len(test)} test images in this checkpoint's split: onnx-int8 "
            "needs both (calibration on the first, parity on the second)"
        )
    step = max(1, len(train) / count)
    spread = tuple(train[int(i * step)] for i in range(min(count, len(train))))
    return CalibrationSet(Path(data), spread, tuple(test), preprocessing)


def _calibration_reader(calibration: CalibrationSet):
    from onnxruntime.quantization import CalibrationDataReader

    class CalibrationImages(CalibrationDataReader):
        """The training sample, one batch at a time (ONNX Runtime's calibrator asks until it gets None)."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

        def rewind(self) -> None:
            self._batches = calibration.batches(calibration.train)

    return CalibrationImages()


def global_average_pools(graph) -> int:
    """Rewrite `ReduceMean(x, axes=[2, 3], keepdims=1)` on 4-D tensors as `GlobalAveragePool(x)`, in place; returns
    how many were rewritten. The two compute the same thing.

    Why: torch exports a squeeze-and-excitation block's pooling (EfficientNet, MobileNetV3, RegNet) as ReduceMean,
    which ONNX Runtime's quantizer leaves in float, so every block dequantized its whole feature map to average it:
    18 ReduceMeans cost 4.8 of 30 ms in a profiled efficientnet_b0 int8 call. GlobalAveragePool has an integer
    kernel (QLinearGlobalAveragePool), and the rewrite took that call from 10.8 to 9.7 CPU ms. Written by hand:
    neither onnxslim nor ONNX Runtime's pre-processing has this rewrite.
    """
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*graph.graph.value_info, *graph.graph.input, *graph.graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    rewritten = 0
    for node in graph.graph.node:
        if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or ranks.get(node.input[0]) != 4:
            continue
        attributes = {a.name: a for a in node.attribute}
        keepdims = attributes["keepdims"].i if "keepdims" in attributes else 1
        if len(node.input) > 1 and node.input[1] in constants:  # opset 18: axes are an input
            axes = [int(a) for a in np.atleast_1d(constants[node.input[1]])]
        elif "axes" in attributes:  # before opset 18: an attribute
            axes = list(attributes["axes"].ints)
        else:
            continue
        if keepdims != 1 or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        rewritten += 1
    return rewritten


def float_nodes(graph) -> list[str]:
    """The nodes that stay float (see the module docstring): the first convolution on the input and, when the graph
    has class activation maps (a convolutional backbone), the last convolution and every node after it. Nodes are
    in topological order, as ONNX requires."""
    from skinserve.runtime import CAM_OUTPUTS

    nodes = list(graph.graph.node)
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if not convs:
        return []
    kept = [nodes[convs[0]].name]
    if CAM_OUTPUTS[0] in {output.name for output in graph.graph.output}:
        kept += [node.name for node in nodes[convs[-1] :]]
    return list(dict.fromkeys(kept))


def quantize_onnx_int8(source: Path, path: Path, calibration: CalibrationSet) -> Artifact:
    """`source` (the fp32 graph) as a QDQ int8 graph at `path`, calibrated on `calibration.train`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="skinserve-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX Runtime's own pre-processing: symbolic shape inference and its basic graph optimisations, so each
        # tensor has a shape (per-channel ranges need it) and no foldable node gets a range of its own.
        quant_pre_process(str(source), str(prepared))
        graph = onnx.load(str(prepared))
        global_average_pools(graph)
        for index, node in enumerate(graph.graph.node):  # the quantizer excludes nodes by name
            node.name = node.name or f"{node.op_type}_{index}"
        excluded = float_nodes(graph)
        onnx.save(graph, str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            _calibration_reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax keeps only each tensor's min and max per batch (ReduceMin/ReduceMax outputs), so every batch is
            # held to the end at no cost. Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops the batches
            # it clears instead of merging them ("No data is collected." when the count divides evenly).
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return Artifact(path.name, "onnx-int8", "int8", "any", 1, None)
