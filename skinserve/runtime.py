"""Running an exported model: pick a runtime for its artifacts, verify the file, return `predict(batch) -> logits`.

Preference where available: TensorRT, AOTInductor on CUDA, ONNX Runtime with CUDA, ONNX Runtime on CPU; the
CPU AOTInductor package (a test build) comes last. The ONNX Runtime paths need neither torch nor TensorRT: both
are imported only by the runtimes that use them.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import ArtifactEntry, ArtifactError, ExportManifest, load_manifest, verified_artifact

__all__ = [
    "RUNTIMES",
    "ArtifactError",
    "ExportedModel",
    "available_runtimes",
    "load_exported_model",
    "output_names",
    "unavailable_reason",
]

Logits = tuple[np.ndarray, np.ndarray]
RunFn = Callable[[np.ndarray, tuple[str, ...]], tuple[np.ndarray, ...]]  # a batch and output names -> those outputs
DeviceCall = Callable[[Any], tuple[Any, ...]]  # CUDA tensor in, CUDA tensors out: the raw model call
Loader = Callable[[Path, int | None, tuple[str, ...]], tuple[RunFn, DeviceCall | None]]

RUNTIMES = ("tensorrt", "aoti-cuda", "onnxruntime-cuda", "onnxruntime-cpu", "aoti-cpu")
# The artifact formats each runtime runs, best first; ONNX Runtime with CUDA gains from fp16, on CPU it does not; on
# a CPU the int8 graph runs first when the export has it (its integer kernels: efficientnet_b0 at 224 px, 9.3 against
# 12.1 CPU ms per image at batch 1, 8.5 against 13.3 at batch 8, benchmarks/int8.py; its parity on the test split
# was checked at export).
RUNTIME_FORMATS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt",),
    "aoti-cuda": ("aoti",),
    "onnxruntime-cuda": ("onnx-fp16", "onnx"),
    "onnxruntime-cpu": ("onnx-int8", "onnx", "onnx-fp16"),
    "aoti-cpu": ("aoti",),
}
_AOTI_DEVICE = {"aoti-cuda": "cuda", "aoti-cpu": "cpu"}
INPUT_NAME = "image"
OUTPUT_NAMES = ("condition_logits", "severity_logits")  # every export has these; `predict` returns them
SKIN_TYPE_OUTPUT = "skin_type_logits"  # [N, 5], when the model has a skin-type head
# Class activation maps: each condition's (and severity level's) logit from each cell of the last feature map,
# [N, 7, h, w] and [N, 7, 4, h, w]; when exported, the manifest's `cam` says their size and whether they average exactly
# to the logits. The optional outputs come after OUTPUT_NAMES, in this order.
CAM_OUTPUTS = ("condition_cam", "severity_cam")
OPTIONAL_OUTPUTS = (SKIN_TYPE_OUTPUT, *CAM_OUTPUTS)


@dataclass(frozen=True)
class ExportedModel:
    runtime: str
    manifest: ExportManifest
    artifact: str  # file name inside the export directory
    max_batch: int | None  # None: any batch size
    _run: RunFn
    # The model on CUDA tensors with no host copies (tensorrt, aoti-cuda); benchmarks time it, serving uses predict.
    device_call: DeviceCall | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        """The artifact's outputs in graph order: OUTPUT_NAMES, then those of OPTIONAL_OUTPUTS it was exported with."""
        return output_names(self.manifest)

    def predict(self, batch: np.ndarray) -> Logits:
        """(condition_logits [N, 7], severity_logits [N, 7, 4]) as float32, for a normalised float32 NCHW batch."""
        conditions, severity = self.run(batch, OUTPUT_NAMES)
        return conditions, severity

    def predict_outputs(self, batch: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The outputs `names` (default: all the artifact has) by name, as float32."""
        names = self.outputs if names is None else tuple(names)
        missing = [n for n in names if n not in self.outputs]
        if missing:
            raise ArtifactError(
                f"{self.manifest.tag} was exported without {', '.join(missing)} (it has: {', '.join(self.outputs)})"
            )
        return dict(zip(names, self.run(batch, names), strict=True))

    def run(self, batch: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:  # engines are built for batches of 1 and more
            return tuple(np.zeros((0, *output_shape(self.manifest, n)), np.float32) for n in names)
        step = self.max_batch or len(batch)
        parts = [self._run(batch[i : i + step], names) for i in range(0, len(batch), step)]
        if len(parts) == 1:
            return tuple(parts[0])
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(names)))


def output_names(manifest: ExportManifest) -> tuple[str, ...]:
    """The outputs an export's artifacts have, in graph order (an export from before skin type and CAM: the two)."""
    return tuple(o.name for o in manifest.outputs) or OUTPUT_NAMES


def output_shape(manifest: ExportManifest, name: str) -> tuple[int, ...]:
    """An output's shape without the batch axis, from the manifest."""
    for output in manifest.outputs:
        if output.name == name:
            return tuple(int(d) for d in output.shape[1:])
    fixed = {OUTPUT_NAMES[0]: (len(CONDITIONS),), OUTPUT_NAMES[1]: (len(CONDITIONS), len(SEVERITY_LABELS))}
    return fixed[name]


def _module_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None


def _cuda_missing_reason() -> str | None:
    if _module_missing("torch"):
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU is visible here"


def _onnxruntime_cuda_missing_reason() -> str | None:
    if _module_missing("onnxruntime"):
        return "onnxruntime is not installed"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)"
    return None


def _machine_reason(runtime: str) -> str | None:
    """Why this machine cannot run `runtime` at all, whatever was exported; None when it can."""
    if runtime == "tensorrt":
        if _module_missing("tensorrt"):
            return "needs a CUDA GPU and the tensorrt package: tensorrt is not installed"
        cuda = _cuda_missing_reason()
        return f"needs a CUDA GPU and the tensorrt package: {cuda}" if cuda else None
    if runtime == "aoti-cuda":
        cuda = _cuda_missing_reason()
        return f"needs a CUDA GPU and torch: {cuda}" if cuda else None
    if runtime == "aoti-cpu":
        return "needs torch, which is not installed" if _module_missing("torch") else None
    if runtime == "onnxruntime-cuda":
        reason = _onnxruntime_cuda_missing_reason()
        return f"needs a CUDA GPU and onnxruntime-gpu: {reason}" if reason else None
    return "needs onnxruntime, which is not installed" if _module_missing("onnxruntime") else None


def _runnable_formats(runtime: str, manifest: ExportManifest) -> list[str]:
    artifacts = manifest.artifacts
    formats = [f for f in RUNTIME_FORMATS[runtime] if f in artifacts]
    if runtime in _AOTI_DEVICE:  # one aoti package is compiled for one device
        formats = [f for f in formats if artifacts[f].device == _AOTI_DEVICE[runtime]]
    return formats


def _format_reason(runtime: str, manifest: ExportManifest, fmt: str | None) -> str | None:
    """Why this export has no artifact `runtime` can run (of format `fmt`, when given); None when it has one."""
    if fmt is not None and fmt not in RUNTIME_FORMATS[runtime]:
        return f"it does not run {fmt} artifacts (it runs: {', '.join(RUNTIME_FORMATS[runtime])})"
    formats = [f for f in _runnable_formats(runtime, manifest) if fmt is None or f == fmt]
    if formats:
        return None
    wanted = fmt or " or ".join(RUNTIME_FORMATS[runtime])
    device = f" compiled for {_AOTI_DEVICE[runtime]}" if runtime in _AOTI_DEVICE else ""
    exported = ", ".join(_described(f, a) for f, a in manifest.artifacts.items()) or "nothing"
    return f"this export has no {wanted} artifact{device} (exported: {exported})"


def _described(fmt: str, artifact: ArtifactEntry) -> str:
    return fmt if artifact.device == "any" else f"{fmt} for {artifact.device}"


def unavailable_reason(runtime: str, manifest: ExportManifest, fmt: str | None = None) -> str | None:
    """Why `runtime` cannot run this export (its `fmt` artifact, when given) here; None when it can.

    The artifacts are checked first, so ruling out a runtime the export has nothing for imports nothing."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r} (expected auto or one of: {', '.join(RUNTIMES)})"
    reason = _format_reason(runtime, manifest, fmt) or _machine_reason(runtime)
    return f"runtime {runtime}: {reason}" if reason else None


def available_runtimes(manifest: ExportManifest, fmt: str | None = None) -> list[str]:
    """The runtimes that can run this export here, in order of preference."""
    return [r for r in RUNTIMES if unavailable_reason(r, manifest, fmt) is None]


def load_exported_model(
    export_dir: Path, runtime: str = "auto", fmt: str | None = None, threads: int | None = None
) -> ExportedModel:
    """Open the export in `export_dir` with `runtime` ("auto": the best available), optionally its `fmt` artifact.

    `threads` sets ONNX Runtime's intra-op threads (default: its own choice). The artifact's SHA-256 is checked
    against the manifest before anything reads it.
    """
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    runtime = _chosen_runtime(manifest, runtime, fmt)
    entry = manifest.artifacts[fmt or _runnable_formats(runtime, manifest)[0]]
    path = verified_artifact(export_dir, entry)
    run, device_call = _LOADERS[runtime](path, threads, output_names(manifest))
    return ExportedModel(runtime, manifest, entry.file, entry.batch.max, run, device_call)


def _chosen_runtime(manifest: ExportManifest, runtime: str, fmt: str | None) -> str:
    if fmt is not None and fmt not in manifest.artifacts:
        exported = ", ".join(manifest.artifacts) or "nothing"
        raise ArtifactError(f"format {fmt!r} was not exported (exported: {exported})")
    if runtime == "auto":
        available = available_runtimes(manifest, fmt)
        if not available:
            reasons = "; ".join(str(unavailable_reason(r, manifest, fmt)) for r in RUNTIMES)
            raise ArtifactError(f"no runtime here can run this export: {reasons}")
        return available[0]
    if runtime not in RUNTIMES:
        raise ArtifactError(str(unavailable_reason(runtime, manifest, fmt)))
    # Asked for by name: say everything that stands in its way, the machine's lacks as well as the export's.
    reasons = [r for r in (_machine_reason(runtime), _format_reason(runtime, manifest, fmt)) if r]
    if reasons:
        raise ArtifactError(f"runtime {runtime}: {'; '.join(reasons)}")
    return runtime


def _onnxruntime_session(path: Path, providers: list[str], threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _onnxruntime(providers: list[str]) -> Loader:
    def load(path: Path, threads: int | None, outputs: tuple[str, ...]) -> tuple[RunFn, DeviceCall | None]:
        session = _onnxruntime_session(path, providers, threads)
        if session.get_providers()[0] != providers[0]:
            # ONNX Runtime falls back to the CPU silently when the CUDA provider fails to initialise.
            raise ArtifactError(f"ONNX Runtime could not start {providers[0]} for {path} (it fell back to the CPU)")

        def run(batch: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
            return tuple(session.run(list(names), {INPUT_NAME: batch}))

        return run, None

    return load


def _host_run(call: DeviceCall, device: str, outputs: tuple[str, ...]) -> RunFn:
    """numpy in and out around a call on torch tensors of `device` that returns all `outputs`, in their order."""
    import torch

    @torch.inference_mode()
    def run(batch: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        results = call(torch.from_numpy(batch).to(device))
        return tuple(results[outputs.index(name)].float().cpu().numpy() for name in names)

    return run


def _aoti(device: str) -> Loader:
    def load(path: Path, threads: int | None, outputs: tuple[str, ...]) -> tuple[RunFn, DeviceCall | None]:
        import torch

        runner = torch._inductor.aoti_load_package(str(path))
        return _host_run(runner, device, outputs), runner if device == "cuda" else None

    return load


class _TensorRTEngine:
    """A deserialised engine with one execution context, called on CUDA tensors that torch allocates.

    An execution context holds the shapes and addresses of one call, so calls take turns (a lock); a server that
    wants calls to overlap on one GPU runs one engine per worker."""

    def __init__(self, path: Path, outputs: tuple[str, ...]) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        self.outputs = outputs
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(
                f"TensorRT could not deserialise {path}: an engine runs only on the TensorRT "
                "version and GPU model that built it; rebuild it here with --formats tensorrt"
            )
        self.context = self.engine.create_execution_context()
        self.dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        self.lock = threading.Lock()

    def __call__(self, image):
        with self.lock:
            return self._run(image.contiguous())

    def _run(self, image):
        self.context.set_input_shape(INPUT_NAME, tuple(image.shape))
        self.context.set_tensor_address(INPUT_NAME, image.data_ptr())
        # Every output needs an address, asked for or not; they come back in the graph's order.
        outputs = tuple(self._output_buffer(name) for name in self.outputs)
        # On torch's current stream, so the copies before and after are ordered with the engine's kernels.
        if not self.context.execute_async_v3(self.torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"TensorRT failed to run a batch of shape {tuple(image.shape)}")
        return outputs

    def _output_buffer(self, name: str):
        shape = tuple(self.context.get_tensor_shape(name))
        buffer = self.torch.empty(shape, dtype=self.dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
        self.context.set_tensor_address(name, buffer.data_ptr())
        return buffer


def _tensorrt(path: Path, threads: int | None, outputs: tuple[str, ...]) -> tuple[RunFn, DeviceCall | None]:
    engine = _TensorRTEngine(path, outputs)
    return _host_run(engine, "cuda", outputs), engine


_LOADERS: dict[str, Loader] = {
    "tensorrt": _tensorrt,
    "aoti-cuda": _aoti("cuda"),
    "onnxruntime-cuda": _onnxruntime(["CUDAExecutionProvider", "CPUExecutionProvider"]),
    "onnxruntime-cpu": _onnxruntime(["CPUExecutionProvider"]),
    "aoti-cpu": _aoti("cpu"),
}
