"""Which reader a source needs (Shine, image folder, CSV manifest), and archives unpacked safely before reading."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

from skinserve.data.folder import read_image_folder
from skinserve.data.manifest import read_csv_manifest
from skinserve.data.records import ReadResult
from skinserve.data.shine import read_shine
from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, HEALTHY

SourceFormat = Literal["auto", "shine", "folder", "csv"]
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class SourceError(SkinserveError):
    pass


def read_dataset(src: Path, fmt: SourceFormat = "auto") -> ReadResult:
    """Records and problems of a dataset directory or CSV manifest, with the reader `fmt` names or detects."""
    src = Path(src)
    if not src.exists():
        raise SourceError(f"{src} does not exist")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "csv":
        return read_csv_manifest(src if src.is_file() else _single_csv(src))
    if not src.is_dir():
        raise SourceError(f"{src} is not a directory (the {fmt} format reads a folder)")
    if fmt == "shine":
        return read_shine(src)
    if fmt == "folder":
        return read_image_folder(src)
    raise SourceError(f"unknown format {fmt!r} (expected shine, folder or csv)")


def detect_format(src: Path) -> str:
    if src.is_file():
        if src.suffix.lower() == ".csv":
            return "csv"
        raise SourceError(f"{src} is a file but not a CSV manifest; pass a folder, a .csv or an archive")
    folders = [p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")]
    # Shine nests a severity folder inside each condition folder; an image-folder set has images right there.
    if any(p.name in CONDITIONS and any(child.is_dir() for child in p.iterdir()) for p in folders):
        return "shine"
    if not folders and list(src.glob("*.csv")):
        return "csv"
    return "folder"


def _single_csv(folder: Path) -> Path:
    manifests = sorted(folder.glob("*.csv"))
    if len(manifests) != 1:
        raise SourceError(f"expected exactly one CSV manifest in {folder}, found {[m.name for m in manifests]}")
    return manifests[0]


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack_archive(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tar into `dest` and return the dataset root inside it (a lone top folder is descended)."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            _refuse_escaping_members(dest, bundle.namelist(), archive)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            _refuse_escaping_members(dest, bundle.getnames(), archive)
    else:
        raise SourceError(f"{archive} is not a zip or tar archive")
    # The tar path uses the 'data' filter (no links out, no devices); zips were checked above.
    shutil.unpack_archive(archive, dest, **({"filter": "data"} if tarfile.is_tarfile(archive) else {}))
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in set(CONDITIONS) | {HEALTHY}:
        return entries[0]
    return dest


def _refuse_escaping_members(dest: Path, names: list[str], archive: Path) -> None:
    root = dest.resolve()
    for name in names:
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise SourceError(f"{archive}: member {name!r} would be written outside {dest}")
