"""The export manifest (`manifest.json` beside exported artifacts): read it, and check an artifact against it.

The export stage writes it; the runtime, the service and evaluation read it here, without importing `export/`
or torch. (The dataset manifest, a CSV of images, is `skinserve.data.manifest`: a different thing.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from skinserve.preprocess import Preprocessing

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "skinserve-export/1"
REQUIRED_FIELDS = ("name", "version", "model", "labels", "thresholds", "preprocessing", "input", "outputs", "artifacts")


class ManifestError(ValueError):
    pass


class ArtifactError(RuntimeError):
    """An artifact that cannot be used: missing, changed since export, or with no runtime for it on this machine."""


def file_sha256(path: Path) -> str:
    # hashlib's own streaming reader; here rather than in skinserve.checkpoint, which pulls in torch.
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_manifest(export_dir: Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ManifestError(f"{export_dir} is not an export directory: it has no {MANIFEST_NAME}") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not a skinserve export manifest (format {MANIFEST_FORMAT})")
    missing = [name for name in REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise ManifestError(f"{path} lacks the fields {', '.join(missing)}")
    return manifest


def model_tag(manifest: dict[str, Any]) -> str:
    """`name:version`, as in the BentoML model store."""
    return f"{manifest['name']}:{manifest['version']}"


def preprocessing_of(manifest: dict[str, Any]) -> Preprocessing:
    return Preprocessing.from_dict(manifest["preprocessing"])


def artifact_entry(manifest: dict[str, Any], fmt: str) -> dict[str, Any]:
    try:
        return manifest["artifacts"][fmt]
    except KeyError as err:
        exported = ", ".join(manifest["artifacts"]) or "none"
        raise ArtifactError(f"format {fmt!r} was not exported to {model_tag(manifest)} (exported: {exported})") from err


def verified_artifact(export_dir: Path, entry: dict[str, Any]) -> Path:
    """The artifact's path, once its bytes are shown to be the ones the manifest recorded at export."""
    path = Path(export_dir) / entry["file"]
    if not path.is_file():
        raise ArtifactError(f"artifact {path} named in the manifest is missing")
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"artifact {path} has SHA-256 {actual}, but the manifest records {entry['sha256']}: "
            "the file changed after export; re-export it or restore the original"
        )
    return path
