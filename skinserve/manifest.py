"""The export manifest (`manifest.json` beside exported artifacts): the typed contract between export and runtime.

The export stage writes an `ExportManifest`; the runtime, the service and evaluation read it back through
`load_manifest`, without importing `export/` or torch. Its `format` carries a version: a manifest written by a newer
skinserve (a higher version) is refused with a message naming the file, not misread. (The dataset manifest, a CSV of
images, is `skinserve.data.manifest`: a different thing.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.preprocess import Preprocessing

MANIFEST_NAME = "manifest.json"
MANIFEST_KIND = "skinserve-export"
MANIFEST_VERSION = 2  # 2: temperatures
MANIFEST_FORMAT = f"{MANIFEST_KIND}/{MANIFEST_VERSION}"


class ManifestError(SkinserveError):
    pass


class ArtifactError(SkinserveError):
    """An artifact that cannot be used: missing, changed since export, or with no runtime for it on this machine."""


def file_sha256(path: Path) -> str:
    # hashlib's own streaming reader; here rather than in skinserve.modeling.checkpoint, which pulls in torch.
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def format_version(
    value: object, kind: str, current: int, where: object, error: type[SkinserveError] = ManifestError
) -> int:
    """The N of `<kind>/<N>`, refused with `error` when the file is not of that kind or is newer than `current`
    (checkpoints use it too)."""
    text = str(value or "")
    prefix, _, number = text.partition("/")
    if prefix != kind or not number.isdigit():
        raise error(f"{where} is not a {kind} file (format {text or 'missing'!r}, expected {kind}/N)")
    version = int(number)
    if version > current:
        raise error(
            f"{where} has format version {version}, newer than this skinserve reads ({kind}/{current}): "
            "upgrade skinserve, or write the file again with this version"
        )
    return version


class _Strict(BaseModel):
    # Unknown keys are refused: a renamed field fails where the file is read, not later where it is used.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchRange(_Strict):
    min: int | None = None
    max: int | None = None  # None: any batch size


class ArtifactEntry(_Strict):
    file: str
    format: str
    precision: str
    device: str = "any"  # an aoti package is compiled for one device: cpu or cuda
    sha256: str
    bytes: int
    batch: BatchRange = BatchRange()


class ManifestModel(_Strict):
    name: str
    version: str
    backbone: str
    img_size: int
    num_features: int | None = None
    skin_type_head: bool = False


class LabelSet(_Strict):
    conditions: list[str] = Field(default_factory=lambda: list(CONDITIONS))
    severities: list[str] = Field(default_factory=lambda: list(SEVERITY_LABELS))
    skin_types: list[str] = Field(default_factory=list)


class TensorSpec(_Strict):
    name: str
    dtype: str
    shape: list[int | str]
    layout: str | None = None
    normalised: bool | None = None


class SkinTypeOutput(_Strict):
    """Whether the graph has the skin-type head's output, and the labels of its columns."""

    available: bool = False
    labels: list[str] = Field(default_factory=list)
    output: str = "skin_type_logits"


class CamOutput(_Strict):
    """Whether the graph has class activation maps (`condition_cam`, `severity_cam`), their cells, and whether each
    map's mean is its logit exactly (average-pooled backbones) or only closely (a norm after the pool)."""

    available: bool = False
    size: list[int] | None = None  # [h, w] cells over the model's input square
    exact: bool | None = None
    covers: str | None = None


class ExportManifest(_Strict):
    format: str = MANIFEST_FORMAT
    name: str
    version: str
    created_at: str
    model: ManifestModel
    labels: LabelSet
    thresholds: dict[str, float]
    # Per condition, the temperature its logit is divided by before the sigmoid (fitted on val; none: 1.0).
    temperatures: dict[str, float] = Field(default_factory=dict)
    preprocessing: dict[str, Any]  # Preprocessing.as_dict(): the fields plus resize_size and crop, for readers
    input: TensorSpec
    outputs: list[TensorSpec]  # in the graph's order
    # Manifests written before the skin-type head was exported named it here; newer ones export it (`skin_type`).
    dropped_outputs: list[str] = Field(default_factory=list)
    skin_type: SkinTypeOutput = SkinTypeOutput()
    cam: CamOutput = CamOutput()
    artifacts: dict[str, ArtifactEntry]
    source: dict[str, Any]  # the checkpoint's file name, SHA-256, metrics, config and versions
    dataset_fingerprint: str | None = None  # as in a checkpoint: evaluation rebuilds the split from it
    split_seed: int = 0
    versions: dict[str, str | None] = Field(default_factory=dict)  # the toolchain that made the artifacts
    parity: dict[str, Any] | None = None  # export's parity verdict, once checked

    @field_validator("preprocessing")
    @classmethod
    def _preprocessing_is_complete(cls, value: dict[str, Any]) -> dict[str, Any]:
        Preprocessing.from_dict(value)  # raises on a missing field
        return value

    @property
    def tag(self) -> str:
        """`name:version`, as in the BentoML model store."""
        return f"{self.name}:{self.version}"

    @property
    def preprocess(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any, where: object = "manifest") -> ExportManifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a skinserve export manifest (a JSON object expected)")
        format_version(data.get("format"), MANIFEST_KIND, MANIFEST_VERSION, where)
        try:
            # An older version reads as this one (what it lacks has its default: no temperatures, 1.0 each).
            return cls.model_validate(data | {"format": MANIFEST_FORMAT})
        except (ValidationError, KeyError, TypeError, ValueError) as err:
            raise ManifestError(f"{where} is not a valid export manifest: {err}") from err

    def artifact(self, fmt: str) -> ArtifactEntry:
        try:
            return self.artifacts[fmt]
        except KeyError as err:
            exported = ", ".join(self.artifacts) or "none"
            raise ArtifactError(f"format {fmt!r} was not exported to {self.tag} (exported: {exported})") from err


def load_manifest(export_dir: Path) -> ExportManifest:
    path = Path(export_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ManifestError(f"{export_dir} is not an export directory: it has no {MANIFEST_NAME}") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from err
    return ExportManifest.from_dict(data, path)


def write_manifest(export_dir: Path, manifest: ExportManifest) -> Path:
    path = Path(export_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def verified_artifact(export_dir: Path, entry: ArtifactEntry) -> Path:
    """The artifact's path, once its bytes are shown to be the ones the manifest recorded at export."""
    path = Path(export_dir) / entry.file
    if not path.is_file():
        raise ArtifactError(f"artifact {path} named in the manifest is missing")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise ArtifactError(
            f"artifact {path} has SHA-256 {actual}, but the manifest records {entry.sha256}: "
            "the file changed after export; re-export it or restore the original"
        )
    return path
