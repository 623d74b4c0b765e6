"""Reader for image-folder sets: `<root>/<label>/*.jpg`, where the label is a skin type, a condition or `healthy`;
`<root>/{train,valid,test}/<label>/*.jpg` keeps the publisher's split in each record's `split` metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from skinserve.data.records import ImageRecord, Problem, ReadResult, is_image_file, relative_name
from skinserve.labels import (
    CONDITIONS,
    HEALTHY,
    SKIN_TYPES,
    ConditionLabel,
    LabelError,
    Targets,
    all_absent,
    parse_fitzpatrick,
)

LabelKind = Literal["auto", "skin_type", "condition", "fitzpatrick"]
# Published split folder names -> the project's split names (skinserve.data.split.SPLITS).
SPLIT_FOLDERS = {"train": "train", "training": "train", "valid": "val", "validation": "val", "val": "val"}
SPLIT_FOLDERS |= {"test": "test", "testing": "test"}


def read_image_folder(root: Path, label_kind: LabelKind = "auto") -> ReadResult:
    """One record per image under a label folder; what the label means is detected from the folder names."""
    root = Path(root)
    result = ReadResult(root=root)
    folders = _subfolders(root)
    if folders and all(f.name.lower() in SPLIT_FOLDERS for f in folders):
        labelled = [(f, SPLIT_FOLDERS[split.name.lower()]) for split in folders for f in _subfolders(split)]
    else:
        labelled = [(f, None) for f in folders]
    names = sorted({f.name for f, _ in labelled})
    kind = _detect_kind(names, root) if label_kind == "auto" else label_kind
    for folder, split in labelled:
        for image in sorted(p for p in folder.rglob("*") if is_image_file(p)):
            rel = relative_name(image, root)
            try:
                targets = _targets_for(folder.name, kind, rel)
            except LabelError as err:
                result.problems.append(Problem(err.source, err.reason))
                continue
            metadata = {"label": folder.name, "label_kind": kind}
            if split is not None:
                metadata |= {"split": split, "published_split": folder.parent.name}
            result.records.append(
                ImageRecord(
                    path=image,
                    relpath=rel,
                    targets=targets,
                    group_id=Path(rel).with_suffix("").as_posix(),
                    source_format="folder",
                    metadata=metadata,
                )
            )
    if not result.records and not result.problems:
        result.problems.append(Problem(str(root), "no images found under <label>/ folders"))
    return result


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _detect_kind(names: list[str], root: Path) -> str:
    lowered = [n.lower() for n in names]
    if lowered and all(n in SKIN_TYPES for n in lowered):
        return "skin_type"
    if lowered and all(n in CONDITIONS or n == HEALTHY for n in lowered):
        return "condition"
    if lowered and all(_is_fitzpatrick_name(n) for n in lowered):
        return "fitzpatrick"
    raise LabelError(
        str(root),
        f"cannot tell what the label folders {names} mean: name them all skin types ({', '.join(SKIN_TYPES)}), "
        f"all conditions or healthy, or all Fitzpatrick types; or pass the label kind explicitly",
    )


def _is_fitzpatrick_name(name: str) -> bool:
    try:
        return parse_fitzpatrick(name.removeprefix("fitzpatrick_").removeprefix("type_"), name) is not None
    except LabelError:
        return False


def _targets_for(label: str, kind: str, rel: str) -> Targets:
    name = label.lower()
    if kind == "skin_type":
        if name not in SKIN_TYPES:
            raise LabelError(rel, f"unknown skin type {label!r} (expected one of: {', '.join(SKIN_TYPES)})")
        return Targets(skin_type=name)
    if kind == "fitzpatrick":
        return Targets(fitzpatrick=parse_fitzpatrick(name.removeprefix("fitzpatrick_").removeprefix("type_"), rel))
    if kind == "condition":
        if name == HEALTHY:
            return Targets(conditions=all_absent())
        if name not in CONDITIONS:
            raise LabelError(rel, f"folder {label!r} is not a condition (expected one of: {', '.join(CONDITIONS)})")
        # Single-label folder sets: the other conditions are absent; the level of this one is not given.
        labels = all_absent()
        labels[name] = ConditionLabel(present=True, severity=None)
        return Targets(conditions=labels)
    raise ValueError(f"unknown label kind {kind!r}")
