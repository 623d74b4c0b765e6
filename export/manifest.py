"""The export's manifest, and where it goes: beside the artifacts, into the BentoML model store, into storage.

The manifest is everything a runtime needs besides the artifact bytes: labels, thresholds, preprocessing, input
and outputs, each artifact's file, format, precision and SHA-256, and where the model came from.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import shutil
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from export.formats import Artifact
from skinserve.errors import SkinserveError
from skinserve.manifest import (
    MANIFEST_NAME,
    ArtifactEntry,
    BatchRange,
    CamOutput,
    ExportManifest,
    LabelSet,
    ManifestModel,
    SkinTypeOutput,
    TensorSpec,
    file_sha256,
)
from skinserve.modeling.checkpoint import Checkpoint
from skinserve.runtime import INPUT_NAME

# A BentoML tag part and a storage key segment at once.
_VERSION_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


class PublishError(SkinserveError):
    pass


def default_version(checkpoint: Path, checkpoint_sha256: str) -> str:
    """`<YYYYMMDD>-<sha8>`: the day the checkpoint was written and its hash, so a re-export keeps the version."""
    written = datetime.fromtimestamp(checkpoint.stat().st_mtime, tz=UTC)
    return f"{written:%Y%m%d}-{checkpoint_sha256[:8]}"


def resolve_version(checkpoint: Path, version: str | None) -> str:
    """The version asked for, checked, or the default one derived from the checkpoint file."""
    return check_version(version or default_version(checkpoint, file_sha256(checkpoint)))


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise PublishError(
            f"version {version!r} must be lowercase letters, digits, '.', '_' or '-' (at most 64), "
            "starting and ending with a letter or digit"
        )
    return version


def installed_versions() -> dict[str, str | None]:
    """Versions of the toolchain that made the artifacts (None: not installed here)."""
    packages = {
        "torch": ("torch",),
        "timm": ("timm",),
        "onnx": ("onnx",),
        "onnxscript": ("onnxscript",),
        "onnxslim": ("onnxslim",),
        "onnxconverter_common": ("onnxconverter-common",),
        "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
        "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "bentoml": ("bentoml",),
    }
    return {"python": platform.python_version()} | {key: _version(names) for key, names in packages.items()}


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def artifact_entry(export_dir: Path, artifact: Artifact) -> ArtifactEntry:
    path = export_dir / artifact.file
    return ArtifactEntry(
        file=artifact.file,
        format=artifact.format,
        precision=artifact.precision,
        device=artifact.device,
        sha256=file_sha256(path),
        bytes=path.stat().st_size,
        batch=BatchRange(min=artifact.min_batch, max=artifact.max_batch),
    )


def build_manifest(
    checkpoint: Checkpoint,
    source: dict[str, Any],
    artifacts: dict[str, ArtifactEntry],
    name: str,
    version: str,
    outputs: list[TensorSpec],
    cam: CamOutput,
) -> ExportManifest:
    """`source`: the checkpoint file's name and SHA-256; `artifacts`: format -> `artifact_entry`; `outputs` and `cam`:
    the graph's outputs in order and its class activation maps, as `export.formats.graph_outputs` measured them."""
    spec, size = checkpoint.model, checkpoint.preprocessing.input_size
    return ExportManifest(
        name=name,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        # Name and version again beside the architecture, for readers that look for them there (service.py does).
        model=ManifestModel(
            name=name,
            version=version,
            backbone=spec.name,
            img_size=spec.img_size,
            num_features=spec.num_features,
            skin_type_head=spec.skin_type_head,
        ),
        labels=LabelSet(**dataclasses.asdict(checkpoint.labels)),
        thresholds=checkpoint.thresholds,
        temperatures=checkpoint.temperatures,
        preprocessing=checkpoint.preprocessing.as_dict(),
        input=TensorSpec(
            name=INPUT_NAME, dtype="float32", shape=["batch", 3, size, size], layout="NCHW", normalised=True
        ),
        outputs=outputs,
        skin_type=SkinTypeOutput(
            available=spec.skin_type_head, labels=list(checkpoint.labels.skin_types) if spec.skin_type_head else []
        ),
        cam=cam,
        artifacts=artifacts,
        source=source | {"metrics": checkpoint.metrics, "config": checkpoint.config, "versions": checkpoint.versions},
        # As in a checkpoint, so skinserve.data.split.records_of_split can rebuild the split from it.
        dataset_fingerprint=checkpoint.dataset_fingerprint,
        split_seed=checkpoint.split_seed,
        versions=installed_versions(),
    )


def exported_files(manifest: ExportManifest, extra: tuple[str, ...] = ()) -> list[str]:
    """The files that make up the export, the manifest last: a reader that finds it finds everything else."""
    return [a.file for a in manifest.artifacts.values()] + list(extra) + [MANIFEST_NAME]


def save_to_bento(export_dir: Path, manifest: ExportManifest, extra: tuple[str, ...] = ()) -> str:
    """Copy the export into the BentoML model store as `name:version`; returns the tag."""
    import bentoml

    tag = ensure_not_in_bento(manifest.name, manifest.version)
    with bentoml.models.create(tag, labels=_bento_labels(manifest), metadata=_bento_metadata(manifest)) as model:
        for name in exported_files(manifest, extra):
            shutil.copy2(export_dir / name, Path(model.path) / name)
    return tag


def ensure_not_in_bento(name: str, version: str) -> str:
    """The tag `name:version`, once the model store is shown not to hold it (checked before a long export)."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = f"{name}:{version}"
    try:
        bentoml.models.get(tag)
    except NotFound:
        return tag
    raise PublishError(
        f"{tag} is already in the BentoML model store; export with another --version or remove it first: "
        f"bentoml models delete {tag}"
    )


def _bento_labels(manifest: ExportManifest) -> dict[str, str]:
    return {
        "project": "skinserve",
        "backbone": manifest.model.backbone,
        "formats": "+".join(manifest.artifacts),
        "input-size": str(manifest.preprocess.input_size),
    }


def _bento_metadata(manifest: ExportManifest) -> dict[str, Any]:
    test = manifest.source.get("metrics", {}).get("test", {})
    return {
        "manifest_format": manifest.format,
        "conditions": list(manifest.labels.conditions),
        "thresholds": manifest.thresholds,
        "input_size": manifest.preprocess.input_size,
        "artifacts": {fmt: a.file for fmt, a in manifest.artifacts.items()},
        "checkpoint_sha256": manifest.source["sha256"],
        "test_metrics": {k: v for k, v in test.items() if isinstance(v, (int, float))},
    }


def upload_to_storage(export_dir: Path, manifest: ExportManifest, url: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Put the export under `<name>/<version>/` in a folder or gs://bucket/prefix; returns the objects' URLs."""
    from skinserve.storage import open_storage

    storage = open_storage(url)
    prefix = f"{manifest.name}/{manifest.version}"
    return [
        storage.put(f"{prefix}/{name}", (export_dir / name).read_bytes(), _content_type(name))
        for name in exported_files(manifest, extra)
    ]


def _content_type(name: str) -> str:
    return "application/json" if name.endswith(".json") else "application/octet-stream"
