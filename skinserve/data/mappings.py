"""Column mappings for published CSV manifests whose columns are not the project's (UniData facial skin condition).

UniData's facial skin condition set (huggingface.co/datasets/UniDataPro/facial-skin-condition-dataset; the full set
is sold, the public card shows a preview) ships face photos of each person in several poses (frontal, left and right
profile) with metadata per image or per person: ID, gender, age, ethnicity and the skin condition. Its mapping:

| UniData column             | project column / meaning                                                    |
|----------------------------|-----------------------------------------------------------------------------|
| ID                         | `group`: a person's photos stay on one side of the split                     |
| file / image / path / ...  | `path` (relative to the CSV); without one, every image in `<ID>/` or        |
|                            | `files/<ID>/` beside the CSV belongs to the row                             |
| gender                     | `gender`, lower case                                                         |
| age                        | `age_range` as a decade (`34` -> `30-39`); the age itself is kept as metadata |
| ethnicity                  | metadata `ethnicity` (not a skin tone: no Fitzpatrick type is inferred)      |
| condition                  | the matching condition present, severity unknown (`CONDITION_WORDS`); the    |
|                            | other conditions stay unknown, since the set labels one condition per photo; |
|                            | a condition outside the 7 (eczema, psoriasis, ...) leaves all unknown and is |
|                            | kept as metadata `source_condition`                                          |

The column names of the sold files could not be checked (only the card's field list: ID, gender, age, ethnicity,
condition), so column names match case-insensitively and the image column takes several names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from skinserve.data.records import is_image_file

CONDITION_WORDS: dict[str, str] = {
    "acne": "acne", "pimples": "acne", "blackheads": "acne", "whiteheads": "acne", "comedones": "acne",
    "rosacea": "redness", "redness": "redness", "erythema": "redness", "couperose": "redness",
    "hyperpigmentation": "hyperpigmentation", "pigmentation": "hyperpigmentation", "melasma": "hyperpigmentation",
    "dark spots": "hyperpigmentation", "age spots": "hyperpigmentation",
    "wrinkles": "fine_lines_wrinkles", "fine lines": "fine_lines_wrinkles",
    "enlarged pores": "pore_size", "pores": "pore_size",
    "acne scars": "textured_skin", "scars": "textured_skin", "uneven texture": "textured_skin",
    "aging": "aging", "sagging": "aging",
    "healthy": "healthy", "normal": "healthy", "clear": "healthy", "none": "healthy",
}  # fmt: skip
IMAGE_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_name", "image_path", "photo")


@dataclass(frozen=True)
class ColumnMapping:
    name: str
    signature: frozenset[str]  # lower-case columns whose presence identifies the layout
    id_column: str
    condition_column: str
    condition_words: Mapping[str, str]
    image_folders: tuple[str, ...]  # where a row's images are when it names no file ({id} is the row's ID)


UNIDATA_FACIAL_SKIN_CONDITION = ColumnMapping(
    name="unidata-facial-skin-condition",
    signature=frozenset({"id", "gender", "age", "ethnicity", "condition"}),
    id_column="id",
    condition_column="condition",
    condition_words=CONDITION_WORDS,
    image_folders=("{id}", "files/{id}", "images/{id}"),
)
MAPPINGS: tuple[ColumnMapping, ...] = (UNIDATA_FACIAL_SKIN_CONDITION,)


def mapping_for(columns: Sequence[str]) -> ColumnMapping | None:
    keys = {c.strip().lower() for c in columns}
    return next((m for m in MAPPINGS if m.signature <= keys), None)


def mapped_rows(row: Mapping[str, str], mapping: ColumnMapping, root: Path) -> list[dict[str, str]]:
    """The row in the project's manifest columns, once per image it describes; [] when its images are not found."""
    row = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
    person = row.get(mapping.id_column, "")
    out = {"group": person, "gender": row.get("gender", "").lower(), "ethnicity": row.get("ethnicity", "")}
    out |= _age(row.get("age", ""))
    word = row.get(mapping.condition_column, "").lower()
    condition = mapping.condition_words.get(word)
    if condition == "healthy":
        out["healthy"] = "true"
    elif condition is not None:
        out[condition] = "true"
    out["source_condition"] = row.get(mapping.condition_column, "")
    return [out | {"path": path} for path in _images(row, mapping, person, root)]


def _age(text: str) -> dict[str, str]:
    if not text.isdigit():
        return {"age": text} if text else {}
    decade = int(text) // 10 * 10
    return {"age": text, "age_range": f"{decade}-{decade + 9}"}


def _images(row: Mapping[str, str], mapping: ColumnMapping, person: str, root: Path) -> list[str]:
    for column in IMAGE_COLUMNS:
        if row.get(column):
            return [row[column]]
    if not person:
        return []
    for pattern in mapping.image_folders:
        folder = root / pattern.format(id=person)
        if folder.is_dir():
            return [p.relative_to(root).as_posix() for p in sorted(folder.iterdir()) if is_image_file(p)]
    return []
