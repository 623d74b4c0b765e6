"""Reader for the Shine layout: `<root>/<condition>/<severity>/<name>.png` with a `<name>.json` sidecar beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skinserve.data.records import (
    IMAGE_SUFFIXES,
    ImageRecord,
    Problem,
    ReadResult,
    is_image_file,
    relative_name,
)
from skinserve.labels import (
    CONDITIONS,
    HEALTHY,
    ConditionLabel,
    Demographics,
    LabelError,
    Severity,
    Targets,
    all_absent,
    fitzpatrick_from_text,
    is_healthy_word,
    parse_severity,
    validate_targets,
)

FLIP_SUFFIX = "_flipped"


def read_shine(root: Path, require_images: bool = True) -> ReadResult:
    """Every labelled image under `root`; records that cannot be trusted are reported as problems, not used."""
    root = Path(root)
    result = ReadResult(root=root)
    seen_images: set[Path] = set()
    for sidecar in sorted(root.rglob("*.json")):
        # A reported sidecar's image must not come back in as an image without a sidecar.
        seen_images.update(sidecar.with_suffix(suffix) for suffix in IMAGE_SUFFIXES)
        try:
            data = _load_json(sidecar, relative_name(sidecar, root))
            if not _is_sidecar(data):
                continue  # summaries and other dataset-level files
            seen_images.add(_image_path(sidecar, data))
            record = parse_sidecar(sidecar, root, data)
        except LabelError as err:
            result.problems.append(Problem(err.source, err.reason))
            continue
        if require_images and not record.path.is_file():
            result.problems.append(Problem(record.relpath, f"image missing for sidecar {sidecar.name}"))
            continue
        result.records.append(record)
    for image in sorted(p for p in root.rglob("*") if is_image_file(p) and p not in seen_images):
        try:
            result.records.append(_record_from_folders(image, root))
        except LabelError as err:
            result.problems.append(Problem(err.source, err.reason))
    return result


def parse_sidecar(sidecar: Path, root: Path, data: dict[str, Any] | None = None) -> ImageRecord:
    """The record a sidecar describes; raises LabelError when it disagrees with its folder or the schema."""
    rel = relative_name(sidecar, root)
    data = _load_json(sidecar, rel) if data is None else data
    folder = _folder_targets(sidecar, root)
    _check_fields_match_folder(data, sidecar, root, rel)
    targets = _sidecar_targets(data, rel) if _has_targets(data) else folder
    _check_targets_match_folder(targets, sidecar, root, rel)
    image = _image_path(sidecar, data)
    return ImageRecord(
        path=image,
        relpath=relative_name(image, root),
        targets=validate_targets(_with_subject(targets, data), rel),
        group_id=_group_id(sidecar, data),
        source_format="shine",
        confidence=_confidence(data),
        metadata=_label_metadata(data, rel),
    )


def _load_json(path: Path, rel: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelError(rel, f"unreadable sidecar: {err}") from err
    if not isinstance(data, dict):
        raise LabelError(rel, "sidecar is not a JSON object")
    return data


def _is_sidecar(data: dict[str, Any]) -> bool:
    return "image_filename" in data or "skin_condition" in data


def _has_targets(data: dict[str, Any]) -> bool:
    return "classification_targets" in data or "severity_targets" in data


def _folder_parts(path: Path, root: Path) -> tuple[str, str | None]:
    """(condition or 'healthy', severity word or None) from the folders between root and the file."""
    parts = path.relative_to(root).parts[:-1]
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 1 and parts[0] == HEALTHY:
        return HEALTHY, None
    raise LabelError(relative_name(path, root), "not in the Shine layout <condition>/<severity>/<name>")


def _folder_targets(path: Path, root: Path) -> Targets:
    rel = relative_name(path, root)
    condition, word = _folder_parts(path, root)
    if condition == HEALTHY:
        if word is not None and not is_healthy_word(word):
            raise LabelError(rel, f"unknown severity word {word!r} for healthy")
        return Targets(conditions=all_absent())
    if condition not in CONDITIONS:
        raise LabelError(rel, f"folder {condition!r} is not a condition (expected one of: {', '.join(CONDITIONS)})")
    # The Shine folders hold one condition each ("the face should show ONLY the specified condition").
    labels = all_absent()
    labels[condition] = ConditionLabel.at(parse_severity(condition, word or "", rel))
    return Targets(conditions=labels)


def _check_fields_match_folder(data: dict[str, Any], sidecar: Path, root: Path, rel: str) -> None:
    folder_condition, folder_word = _folder_parts(sidecar, root)
    said_condition, said_word = data.get("skin_condition"), data.get("severity")
    if said_condition is not None and said_condition != folder_condition:
        raise LabelError(rel, f"sidecar says {said_condition}/{said_word} but the file sits in {folder_condition}/")
    if said_word is not None and folder_word is not None and said_word != folder_word:
        raise LabelError(rel, f"sidecar says severity {said_word!r} but the folder says {folder_word!r}")


def _check_targets_match_folder(targets: Targets, sidecar: Path, root: Path, rel: str) -> None:
    folder = _folder_targets(sidecar, root)
    if folder.healthy:
        present = targets.present_conditions()
        if present:
            raise LabelError(rel, f"in the healthy folder but its targets mark {', '.join(present)} present")
        return
    (condition,) = folder.present_conditions()
    said = targets.conditions.get(condition)
    expected = folder.conditions[condition]
    if said is not None and (said.present is not True or said.severity not in (None, expected.severity)):
        level = said.severity.name if said.severity is not None else "unknown"
        raise LabelError(
            rel,
            f"targets say {condition} present={said.present} severity={level} but the folder says "
            f"{expected.severity.name if expected.severity is not None else 'present'}",
        )


def _sidecar_targets(data: dict[str, Any], rel: str) -> Targets:
    """Targets from classification_targets/severity_targets; a condition missing from both is unknown."""
    flags = data.get("classification_targets") or {}
    words = data.get("severity_targets") or {}
    if not isinstance(flags, dict) or not isinstance(words, dict):
        raise LabelError(rel, "classification_targets and severity_targets must be JSON objects")
    labels: dict[str, ConditionLabel] = {}
    for condition in sorted(set(flags) | set(words), key=_condition_order(rel)):
        severity = parse_severity(condition, words[condition], rel) if condition in words else None
        present = flags.get(condition)
        if present is None:
            present = severity is not None and severity.value > 0
        elif not isinstance(present, bool):
            raise LabelError(rel, f"classification_targets.{condition} must be true or false, got {present!r}")
        if severity is not None and present != (severity.value > 0):
            said = words[condition]
            raise LabelError(rel, f"{condition}: classification target {present} contradicts severity {said!r}")
        if severity is None and not present:
            severity = Severity.none  # known absent means severity none; known present with no word stays unknown
        labels[condition] = ConditionLabel(present=present, severity=severity)
    return Targets(conditions=labels)


def _condition_order(rel: str):
    def key(condition: str) -> int:
        if condition not in CONDITIONS:
            raise LabelError(rel, f"unknown condition {condition!r} (expected one of: {', '.join(CONDITIONS)})")
        return CONDITIONS.index(condition)

    return key


def _with_subject(targets: Targets, data: dict[str, Any]) -> Targets:
    demo = data.get("demographics") or {}
    demographics = Demographics(
        age_group=demo.get("age_group"),
        age_range=demo.get("age_range"),
        skin_tone=demo.get("skin_tone"),
        gender=demo.get("gender"),
    )
    return Targets(
        conditions=targets.conditions,
        skin_type=targets.skin_type,
        fitzpatrick=fitzpatrick_from_text(demographics.skin_tone),
        demographics=demographics,
    )


def _image_path(sidecar: Path, data: dict[str, Any]) -> Path:
    named = data.get("image_filename")
    if named:
        return sidecar.with_name(Path(str(named)).name)
    for suffix in IMAGE_SUFFIXES:
        candidate = sidecar.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return sidecar.with_suffix(".png")


def _group_id(path: Path, data: dict[str, Any] | None = None) -> str:
    """An image and its `_flipped` mirror share a group: the original's file stem."""
    original = (data or {}).get("original_filename")
    stem = Path(str(original)).stem if original else path.stem
    return stem[: -len(FLIP_SUFFIX)] if stem.endswith(FLIP_SUFFIX) else stem


def _confidence(data: dict[str, Any]) -> float | None:
    for block in ("training_annotations", "annotations"):
        section = data.get(block) or {}
        for key in ("confidence_score", "confidence"):
            if isinstance(section.get(key), (int, float)):
                return float(section[key])
    return None


def _label_metadata(data: dict[str, Any], rel: str) -> dict[str, Any]:
    kept = ("skin_condition", "severity", "generation_timestamp", "is_flipped", "original_filename")
    metadata = {key: data[key] for key in kept if key in data}
    metadata["sidecar"] = rel
    if isinstance(data.get("severity_targets"), dict):
        metadata["severity_words"] = data["severity_targets"]
    return metadata


def _record_from_folders(image: Path, root: Path) -> ImageRecord:
    """An image without a sidecar: its targets come from the folder names alone."""
    return ImageRecord(
        path=image,
        relpath=relative_name(image, root),
        targets=_folder_targets(image, root),
        group_id=_group_id(image),
        source_format="shine",
        metadata={"sidecar": None},
    )
