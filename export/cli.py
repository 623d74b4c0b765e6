"""Command line of the export stage; `skinserve export` and `python -m export` both land here.

Heavy imports (torch, onnx, TensorRT, BentoML) happen inside the functions so `skinserve --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skinserve.console import fail
from skinserve.errors import SkinserveError

if TYPE_CHECKING:
    from export.formats import ExportOptions
    from export.parity import ParityRow
    from skinserve.manifest import ExportManifest

Opt = typer.Option
DEFAULT_TIMING_CACHE = Path("~/.cache/skinserve/tensorrt-timing.cache")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: ExportManifest
    parity: list[ParityRow]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.parity)


def run_export(
    checkpoint_path: Path, out: Path, options: ExportOptions, name: str, version: str | None = None
) -> ExportResult:
    """Artifacts, manifest and parity table in `out`; the manifest records the parity verdict."""
    from export.formats import export_artifacts, graph_outputs, resolve_cam
    from export.manifest import artifact_entry, build_manifest, resolve_version
    from export.parity import PARITY_FILE, check_parity, parity_summary, save_parity
    from export.quantize import calibration_set
    from skinserve.data.split import split_ratios_of
    from skinserve.manifest import file_sha256, write_manifest
    from skinserve.modeling.checkpoint import load_checkpoint
    from skinserve.modeling.model import model_from_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    sha256 = file_sha256(checkpoint_path)
    version = resolve_version(checkpoint_path, version)
    model = model_from_checkpoint(checkpoint)
    size = checkpoint.preprocessing.input_size
    options = replace(options, cam=resolve_cam(model, size, options.cam))
    calibration = None
    if "onnx-int8" in options.formats and options.calibration_data is not None:
        fingerprint, seed, pre = checkpoint.dataset_fingerprint, checkpoint.split_seed, checkpoint.preprocessing
        calibration = calibration_set(
            options.calibration_data,
            fingerprint,
            seed,
            pre,
            options.calibration_images,
            split_ratios_of(checkpoint.config),
        )
    out.mkdir(parents=True, exist_ok=True)
    artifacts = export_artifacts(model, out, size, options, calibration)
    entries = {a.format: artifact_entry(out, a) for a in artifacts}
    outputs, cam = graph_outputs(model, size, options.cam)
    source = {"checkpoint": checkpoint_path.name, "sha256": sha256}
    manifest = build_manifest(checkpoint, source, entries, name, version, outputs, cam)
    write_manifest(out, manifest)  # parity loads the artifacts the way a server would: through the manifest
    rows = check_parity(model, out, list(entries), calibration=calibration)
    save_parity(rows, out / PARITY_FILE)
    manifest = manifest.model_copy(update={"parity": parity_summary(rows)})
    write_manifest(out, manifest)
    return ExportResult(out, manifest, rows)


def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.pt) written by training.")],
    out: Annotated[Path, Opt(help="Export directory: artifacts, manifest.json and parity.json.")],
    formats: Annotated[str, Opt(help="Comma-separated: onnx, onnx-fp16, onnx-int8, tensorrt, aoti.")] = (
        "onnx,onnx-fp16"
    ),
    bento: Annotated[bool, Opt(help="Save the export in the BentoML model store as NAME:VERSION.")] = False,
    storage: Annotated[str | None, Opt(help="Also upload it to a folder or gs://bucket/prefix.")] = None,
    version: Annotated[str | None, Opt(help="Model version (default: YYYYMMDD-sha8 of the checkpoint file).")] = None,
    name: Annotated[str, Opt(help="Model name in the manifest and the model store.")] = "skin-classifier",
    min_batch: Annotated[int, Opt(help="Smallest batch of the TensorRT/AOTInductor profile.")] = 1,
    opt_batch: Annotated[int, Opt(help="Batch the engines are tuned for.")] = 32,
    max_batch: Annotated[int, Opt(help="Largest batch of the TensorRT/AOTInductor profile.")] = 128,
    aoti_device: Annotated[str, Opt(help="cuda (fp16, channels_last) or cpu (fp32, a test build).")] = "cuda",
    aoti_max_autotune: Annotated[bool, Opt(help="Let Inductor autotune kernels (slower compile).")] = False,
    timing_cache: Annotated[Path, Opt(help="TensorRT timing cache, reused across builds.")] = DEFAULT_TIMING_CACHE,
    opset: Annotated[int, Opt(help="ONNX opset (18 or newer).")] = 18,
    calibration_data: Annotated[
        Path | None, Opt(help="onnx-int8: the dataset the checkpoint was trained on (training split calibrates).")
    ] = None,
    calibration_images: Annotated[int, Opt(help="onnx-int8: training images to calibrate on.")] = 256,
) -> None:
    """Export a checkpoint to ONNX / ONNX fp16 / int8 / TensorRT / AOTInductor, check parity, write manifest.json."""
    from export.formats import DEFAULT_OPSET, BatchProfile, ExportError, ExportOptions, parse_formats, refusal
    from export.manifest import ensure_not_in_bento, resolve_version, save_to_bento, upload_to_storage
    from export.parity import PARITY_FILE, parity_table
    from skinserve.modeling.checkpoint import CheckpointError
    from skinserve.storage import open_storage

    try:
        if opset < DEFAULT_OPSET:
            raise ExportError(f"--opset must be {DEFAULT_OPSET} or newer (torch's exporter goes no lower), not {opset}")
        options = ExportOptions(
            parse_formats(formats),
            BatchProfile(min_batch, opt_batch, max_batch),
            aoti_device,
            aoti_max_autotune,
            timing_cache.expanduser(),
            opset,
            calibration_data=calibration_data,
            calibration_images=calibration_images,
        )
        refused = [reason for fmt in options.formats if (reason := refusal(fmt, options))]
        if refused:
            raise ExportError("; ".join(refused))
        if not checkpoint.is_file():
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        # Everything that can refuse the publishing step is asked before the export, which may take minutes.
        version = resolve_version(checkpoint, version)
        if bento:
            ensure_not_in_bento(name, version)
        if storage:
            open_storage(storage)
        result = run_export(checkpoint, out, options, name, version)
    except SkinserveError as err:
        raise fail(str(err)) from err
    typer.echo(parity_table(result.parity))
    manifest = result.manifest
    typer.echo(
        f"wrote {', '.join(a.file for a in manifest.artifacts.values())} and manifest.json "
        f"({manifest.tag}) to {out}; parity table in {out / PARITY_FILE}"
    )
    if not result.passed:
        raise fail("parity failed (rows marked FAIL above): the artifacts are not published", code=1)
    try:
        if bento:
            typer.echo(f"saved {save_to_bento(out, manifest, (PARITY_FILE,))} in the BentoML model store")
        if storage:
            urls = upload_to_storage(out, manifest, storage, (PARITY_FILE,))
            typer.echo(f"uploaded {len(urls)} files to {urls[-1].rsplit('/', 1)[0]}")
    except SkinserveError as err:
        raise fail(str(err)) from err


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command(name="export")(export_command)
    app(prog_name="python -m export")
