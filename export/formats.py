"""Artifacts from a trained model: ONNX (fp32, fp16 and int8), a TensorRT engine and an AOTInductor package.

Every artifact takes `image` float32 [N, 3, H, W] (already normalised) and gives `condition_logits` [N, 7] and
`severity_logits` [N, 7, 4] in float32, whatever precision it computes in, so one `predict` fits them all; then
`skin_type_logits` [N, 5] when the model has a skin-type head, and the class activation maps `condition_cam`
[N, 7, h, w] and `severity_cam` [N, 7, 4, h, w] when the backbone has a spatial feature map (`ExportOptions.cam`).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import CamOutput, TensorSpec
from skinserve.modeling.model import SkinModel
from skinserve.runtime import CAM_OUTPUTS, INPUT_NAME, OUTPUT_NAMES, SKIN_TYPE_OUTPUT

if TYPE_CHECKING:
    from export.quantize import CalibrationSet

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "tensorrt", "aoti")
ARTIFACT_FILES = {
    "onnx": "model.onnx",
    "onnx-fp16": "model-fp16.onnx",
    "onnx-int8": "model-int8.onnx",  # export/quantize.py
    "tensorrt": "model-fp16.plan",
    "aoti": "model.pt2",
}
# torch.onnx's exporter writes opset 18 natively and converts up from it; converting down to 17 fails on these
# graphs (ONNX's version converter), so 18 is the floor here. The issue asks for 17 or newer.
DEFAULT_OPSET = 18
AOTI_DEVICES = ("cuda", "cpu")


class ExportError(SkinserveError):
    pass


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine is built for: TensorRT's optimisation profile and AOTInductor's dynamic range."""

    min: int = 1
    opt: int = 32
    max: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...]
    profile: BatchProfile = BatchProfile()
    aoti_device: str = "cuda"
    aoti_max_autotune: bool = False  # Triton autotuning: faster kernels, minutes more compile time
    timing_cache: Path | None = None  # TensorRT's layer timings, read before and written after each build
    opset: int = DEFAULT_OPSET
    cam: bool | None = None  # class activation map outputs; None: when the backbone has a spatial feature map
    calibration_data: Path | None = None  # onnx-int8: the dataset the checkpoint was trained on (its training split)
    calibration_images: int = 256  # onnx-int8: training images its activation ranges are measured on


@dataclass(frozen=True)
class Artifact:
    file: str
    format: str
    precision: str
    device: str  # where it runs: "any" for ONNX, else the device it was compiled for
    min_batch: int
    max_batch: int | None  # None: any batch size


def parse_formats(text: str) -> tuple[str, ...]:
    """`onnx,onnx-fp16` -> the formats in export order; TensorRT is built from the ONNX graph, so it brings onnx."""
    asked = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(asked - set(FORMATS))
    if unknown or not asked:
        raise ExportError(f"unknown format(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(FORMATS)}")
    if "tensorrt" in asked:
        asked.add("onnx")
    return tuple(f for f in FORMATS if f in asked)


def refusal(fmt: str, options: ExportOptions) -> str | None:
    """Why this machine cannot produce `fmt` with these options; None when it can."""
    if fmt == "onnx-int8" and options.calibration_data is None:
        return (
            "format onnx-int8 is calibrated on images from the checkpoint's training split and checked on its test "
            "split: pass --calibration-data D, the dataset the checkpoint was trained on"
        )
    if fmt == "tensorrt":
        missing = [] if importlib.util.find_spec("tensorrt") else ["the tensorrt package"]
        missing += [] if torch.cuda.is_available() else ["a CUDA GPU"]
        if missing:
            return (
                f"format tensorrt needs a CUDA GPU and the tensorrt package; this machine lacks "
                f"{' and '.join(missing)} (on a GPU machine: pip install -e '.[gpu]')"
            )
    if fmt == "aoti":
        if options.aoti_device not in AOTI_DEVICES:
            return f"--aoti-device must be one of {', '.join(AOTI_DEVICES)}, not {options.aoti_device!r}"
        if options.aoti_device == "cuda" and not torch.cuda.is_available():
            return (
                "format aoti compiles for a CUDA GPU and none is visible here; pass --aoti-device cpu for the "
                "fp32 CPU package (a test build of the same code path)"
            )
    return None


class Logits(nn.Module):
    """The graph export freezes: condition and severity logits, the skin-type logits when the model has that head,
    and with `cam` the class activation maps (`output_names` lists them in order).

    The maps apply the backbone's head (pooling of one cell, then any norm) and the model's heads to each cell of
    the last feature map on its own: the logit that cell's features alone give. Where the head is a plain average
    pool (EfficientNet, ResNet), the mean of a map over its cells is the logit exactly; where a norm follows the
    pool (ConvNeXt) it is close (the manifest's `cam.exact` records which, measured at export). Written by hand:
    pytorch-grad-cam needs gradients, which an ONNX graph does not have; this is CAM (Zhou et al. 2016), which
    needs none, so ONNX Runtime computes it in the same call for a few kFLOPs per cell.
    """

    def __init__(self, model: SkinModel, cam: bool = False) -> None:
        super().__init__()
        self.model = model
        self.cam = cam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.cam:
            return tuple(self.model(image))
        backbone = self.model.backbone
        fmap = backbone.forward_features(image)  # [N, C, h, w]
        outputs = self.model.heads(self.model.dropout(backbone.forward_head(fmap, pre_logits=True)))
        n, channels, h, w = fmap.shape
        cells = fmap.permute(0, 2, 3, 1).reshape(-1, channels, 1, 1)  # each cell as a 1x1 feature map
        local = self.model.heads(backbone.forward_head(cells, pre_logits=True))
        condition_cam = local[0].reshape(n, h, w, len(CONDITIONS)).permute(0, 3, 1, 2)
        severity_cam = local[1].reshape(n, h, w, len(CONDITIONS), len(SEVERITY_LABELS)).permute(0, 3, 4, 1, 2)
        return (*outputs, condition_cam, severity_cam)


def output_names(model: SkinModel, cam: bool) -> tuple[str, ...]:
    skin_type = (SKIN_TYPE_OUTPUT,) if model.skin_type_head is not None else ()
    return (*OUTPUT_NAMES, *skin_type, *(CAM_OUTPUTS if cam else ()))


def supports_cam(model: SkinModel, input_size: int) -> bool:
    """Whether the backbone's last features are a [N, C, h, w] map (convolutional), not tokens (ViT)."""
    with torch.no_grad():
        features = model.eval().backbone.forward_features(torch.zeros(1, 3, input_size, input_size))
    return features.ndim == 4


def resolve_cam(model: SkinModel, input_size: int, asked: bool | None) -> bool:
    if asked is False:
        return False
    supported = supports_cam(model, input_size)
    if asked and not supported:
        raise ExportError(
            f"CAM outputs need a backbone with a spatial feature map; {type(model.backbone).__name__} gives tokens"
        )
    return supported


def graph_outputs(model: SkinModel, input_size: int, cam: bool) -> tuple[list[TensorSpec], CamOutput]:
    """The manifest's `outputs` (name, dtype, shape) and its `cam` entry (available, size, exact), measured on the
    model: exact when each map's mean over its cells equals the logit it explains (to 1e-4)."""
    names = output_names(model, cam)
    with torch.no_grad():
        results = Logits(model.eval(), cam)(
            torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        )
    outputs = [
        TensorSpec(name=name, dtype="float32", shape=["batch", *result.shape[1:]])
        for name, result in zip(names, results, strict=True)
    ]
    if not cam:
        return outputs, CamOutput()
    by_name = dict(zip(names, results, strict=True))
    condition_cam, severity_cam = by_name[CAM_OUTPUTS[0]], by_name[CAM_OUTPUTS[1]]
    exact = torch.allclose(condition_cam.mean((2, 3)), by_name[OUTPUT_NAMES[0]], atol=1e-4) and torch.allclose(
        severity_cam.mean((3, 4)), by_name[OUTPUT_NAMES[1]], atol=1e-4
    )
    size = list(condition_cam.shape[2:])
    return outputs, CamOutput(available=True, size=size, exact=bool(exact), covers="the model input square")


class HalfChannelsLast(nn.Module):
    """fp16 channels_last inside, float32 NCHW at the boundary, as the fp16 ONNX model keeps its I/O types."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half().to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = image.to(torch.float16).contiguous(memory_format=torch.channels_last)
        return tuple(output.float() for output in self.model(image))


def _batch_dim(profile: BatchProfile | None = None) -> torch.export.Dim:
    if profile is None:
        return torch.export.Dim("batch", min=1)
    return torch.export.Dim("batch", min=profile.min, max=profile.max)


def export_onnx(
    model: SkinModel, path: Path, input_size: int, opset: int = DEFAULT_OPSET, cam: bool = False
) -> Artifact:
    """torch.export-based ONNX (torch's default exporter since 2.9), simplified by onnxslim, checked by onnx."""
    import onnx
    import onnxslim

    # Batch 2, not 1: torch.export specialises a dimension whose example size is 0 or 1.
    example = torch.randn(2, 3, input_size, input_size)
    with torch.no_grad():
        torch.onnx.export(
            Logits(model, cam).eval(),
            (example,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(output_names(model, cam)),
            dynamic_shapes=({0: _batch_dim()},),
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    graph = onnxslim.slim(onnx.load(str(path)))  # folds constants and fuses what onnxscript's optimiser leaves
    written = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:  # the exporter logs a failed version conversion and carries on at its own opset
        raise ExportError(f"asked for ONNX opset {opset}, but the exporter wrote opset {written}")
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return Artifact(path.name, "onnx", "fp32", "any", 1, None)


def convert_onnx_fp16(source: Path, path: Path) -> Artifact:
    """The fp32 graph in half precision with float32 inputs and outputs (casts at the boundary)."""
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # It warns once per weight it clamps to fp16's smallest normal value: expected, and thousands of lines.
        warnings.simplefilter("ignore", UserWarning)
        graph = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return Artifact(path.name, "onnx-fp16", "fp16", "any", 1, None)


def build_tensorrt_engine(
    onnx_path: Path, path: Path, input_size: int, profile: BatchProfile, timing_cache: Path | None
) -> Artifact:
    """An fp16 engine with one optimisation profile over the batch axis, reusing and extending the timing cache."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    shapes = [(n, 3, input_size, input_size) for n in (profile.min, profile.opt, profile.max)]
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(optimisation)
    known = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(known), False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (its log above says why)")
    path.write_bytes(bytes(engine))
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return Artifact(path.name, "tensorrt", "fp16", "cuda", profile.min, profile.max)


def export_aoti(
    model: SkinModel,
    path: Path,
    input_size: int,
    device: str,
    profile: BatchProfile,
    max_autotune: bool = False,
    cam: bool = False,
) -> Artifact:
    """torch.export + AOTInductor: fp16 channels_last for CUDA; fp32 for the CPU (a test build of the same path)."""
    module: nn.Module = Logits(copy.deepcopy(model), cam).eval()  # a copy: casting and moving a module is in place
    if device == "cuda":
        module = HalfChannelsLast(module)
    module = module.to(device)
    # Inductor tunes its kernels for the example's sizes: give it the batch the engine is meant to run at.
    example = torch.randn(profile.opt, 3, input_size, input_size, device=device)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim(profile)},))
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs={"max_autotune": max_autotune}
        )
    precision = "fp16" if device == "cuda" else "fp32"
    return Artifact(path.name, "aoti", precision, device, profile.min, profile.max)


def export_artifacts(
    model: SkinModel, out: Path, input_size: int, options: ExportOptions, calibration: CalibrationSet | None = None
) -> list[Artifact]:
    """Write each requested format into `out`, in the order of FORMATS (ONNX first: TensorRT and int8 start from it).
    `options.cam` must be resolved (True or False: `resolve_cam`), so every artifact has the same outputs;
    `calibration` (export/quantize.py) is needed for onnx-int8."""
    model = model.eval().cpu()
    cam = bool(options.cam)
    onnx_path = out / ARTIFACT_FILES["onnx"]
    artifacts = []
    for fmt in options.formats:
        path = out / ARTIFACT_FILES[fmt]
        if fmt == "onnx":
            artifacts.append(export_onnx(model, path, input_size, options.opset, cam))
        elif fmt == "onnx-fp16" and "onnx" in options.formats:
            artifacts.append(convert_onnx_fp16(onnx_path, path))
        elif fmt == "onnx-fp16":  # fp16 alone: its fp32 source is a scratch file
            scratch = export_onnx(model, out / ".fp32-source.onnx", input_size, options.opset, cam)
            artifacts.append(convert_onnx_fp16(out / scratch.file, path))
            (out / scratch.file).unlink()
        elif fmt == "onnx-int8":
            artifacts.append(_int8(model, out, input_size, options, calibration))
        elif fmt == "tensorrt":
            profile, cache = options.profile, options.timing_cache
            artifacts.append(build_tensorrt_engine(onnx_path, path, input_size, profile, cache))
        elif fmt == "aoti":
            device, autotune = options.aoti_device, options.aoti_max_autotune
            artifacts.append(export_aoti(model, path, input_size, device, options.profile, autotune, cam))
    return artifacts


def _int8(
    model: SkinModel, out: Path, input_size: int, options: ExportOptions, calibration: CalibrationSet | None
) -> Artifact:
    """The int8 graph from the fp32 one written beside it, or from a scratch fp32 export when onnx was not asked."""
    from export.quantize import quantize_onnx_int8

    if calibration is None:
        raise ExportError("onnx-int8 needs its calibration images (export.quantize.calibration_set)")
    path = out / ARTIFACT_FILES["onnx-int8"]
    if "onnx" in options.formats:
        return quantize_onnx_int8(out / ARTIFACT_FILES["onnx"], path, calibration)
    scratch = export_onnx(model, out / ".fp32-source.onnx", input_size, options.opset, bool(options.cam))
    try:
        return quantize_onnx_int8(out / scratch.file, path, calibration)
    finally:
        (out / scratch.file).unlink()
