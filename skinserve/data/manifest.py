"""Reader for CSV manifests: a `path` column plus label columns, one row per image; or a published layout with a
documented column mapping (skinserve.data.mappings: UniData's facial skin condition metadata)."""

from __future__ import annotations

import csv
from pathlib import Path

from skinserve.data.mappings import ColumnMapping, mapped_rows, mapping_for
from skinserve.data.records import ImageRecord, Problem, ReadResult
from skinserve.labels import (
    CONDITIONS,
    DEMOGRAPHIC_FIELDS,
    HEALTHY,
    ConditionLabel,
    Demographics,
    LabelError,
    Severity,
    Targets,
    all_absent,
    condition_words,
    fitzpatrick_from_text,
    parse_fitzpatrick,
    parse_severity,
    validate_targets,
)

PATH_COLUMN = "path"
KNOWN_COLUMNS = {PATH_COLUMN, "group", HEALTHY, "skin_type", "fitzpatrick", *CONDITIONS, *DEMOGRAPHIC_FIELDS}
_TRUE = {"1", "true", "yes", "y", "present"}
_FALSE = {"0", "false", "no", "n", "absent"}


def read_csv_manifest(manifest: Path) -> ReadResult:
    """Rows of `path,<condition>...,skin_type,fitzpatrick,<demographics>`; an empty cell is unknown.

    A condition cell holds true/false or a severity word (none/mild/moderate/severe, or the condition's own
    Shine words); paths are relative to the manifest's folder.
    """
    manifest = Path(manifest)
    root = manifest.parent
    result = ReadResult(root=root)
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        mapping = mapping_for(columns)
        if mapping is not None:  # a published layout with its own column names (skinserve.data.mappings)
            _read_mapped(reader, mapping, root, manifest.name, result)
            return result
        if PATH_COLUMN not in columns:
            result.problems.append(Problem(manifest.name, f"no {PATH_COLUMN!r} column (columns: {columns})"))
            return result
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            where = f"{manifest.name}:{line}"
            try:
                result.records.append(_record_from_row(row, root, where))
            except LabelError as err:
                result.problems.append(Problem(err.source, err.reason))
    return result


def _read_mapped(reader: csv.DictReader, mapping: ColumnMapping, root: Path, name: str, result: ReadResult) -> None:
    for line, row in enumerate(reader, start=2):
        where = f"{name}:{line}"
        images = mapped_rows(row, mapping, root)
        if not images:
            result.problems.append(Problem(where, f"no image for this row ({mapping.name}: no image column, no "
                                                  f"{' or '.join(mapping.image_folders)} folder)"))  # fmt: skip
        for mapped in images:
            try:
                result.records.append(_record_from_row(mapped | {"column_mapping": mapping.name}, root, where))
            except LabelError as err:
                result.problems.append(Problem(err.source, err.reason))


def _record_from_row(row: dict[str, str], root: Path, where: str) -> ImageRecord:
    if not row.get(PATH_COLUMN):
        raise LabelError(where, "empty path")
    image = Path(row[PATH_COLUMN])
    image = image if image.is_absolute() else root / image
    if not image.is_file():
        raise LabelError(where, f"image missing: {row[PATH_COLUMN]}")
    demographics = Demographics(**{f: row.get(f) or None for f in DEMOGRAPHIC_FIELDS})
    targets = Targets(
        conditions=_conditions(row, where),
        skin_type=(row.get("skin_type") or "").lower() or None,
        fitzpatrick=parse_fitzpatrick(row.get("fitzpatrick"), where) or fitzpatrick_from_text(demographics.skin_tone),
        demographics=demographics,
    )
    rel = row[PATH_COLUMN]
    return ImageRecord(
        path=image,
        relpath=rel,
        targets=validate_targets(targets, where),
        group_id=row.get("group") or Path(rel).with_suffix("").as_posix(),
        source_format="csv",
        metadata={"manifest_row": where} | {k: v for k, v in row.items() if k not in KNOWN_COLUMNS and v},
    )


def _conditions(row: dict[str, str], where: str) -> dict[str, ConditionLabel]:
    labels: dict[str, ConditionLabel] = {}
    healthy = row.get(HEALTHY, "").lower()
    if healthy in _TRUE:
        labels = all_absent()
    elif healthy and healthy not in _FALSE:
        raise LabelError(where, f"healthy must be true or false, got {row[HEALTHY]!r}")
    for condition in CONDITIONS:
        cell = row.get(condition, "")
        if not cell:
            continue
        label = _condition_cell(condition, cell, where)
        if healthy in _TRUE and label.present:
            raise LabelError(where, f"marked healthy but {condition} is {cell!r}")
        labels[condition] = label
    return labels


def _condition_cell(condition: str, cell: str, where: str) -> ConditionLabel:
    value = cell.lower()
    if value in _TRUE:
        return ConditionLabel(present=True, severity=None)
    if value in _FALSE:
        return ConditionLabel.absent()
    if value in {s.name for s in Severity} and value not in condition_words(condition):
        return ConditionLabel.at(Severity[value])  # the canonical scale is always accepted
    return ConditionLabel.at(parse_severity(condition, value, where))
