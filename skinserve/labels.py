"""The label schema: the 7 conditions, the ordinal severity scale and the optional subject targets."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from skinserve.errors import SkinserveError

# Fixed order: it is the column order of every tensor, export and response.
CONDITIONS: tuple[str, ...] = (
    "acne",
    "fine_lines_wrinkles",
    "aging",
    "hyperpigmentation",
    "textured_skin",
    "redness",
    "pore_size",
)
HEALTHY = "healthy"
SKIN_TYPES: tuple[str, ...] = ("oily", "dry", "normal", "combination", "sensitive")
FITZPATRICK_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
DEMOGRAPHIC_FIELDS: tuple[str, ...] = ("age_group", "age_range", "skin_tone", "gender")


class Severity(enum.IntEnum):
    """Ordinal severity: the integer is the class index of the severity head."""

    none = 0
    mild = 1
    moderate = 2
    severe = 3

    @property
    def label(self) -> str:
        return self.name


SEVERITY_LABELS: tuple[str, ...] = tuple(s.name for s in Severity)

# The Shine set names the three present levels per condition in its own words.
_DEFAULT_WORDS = ("mild", "moderate", "severe")
SHINE_SEVERITY_WORDS: dict[str, tuple[str, str, str]] = {c: _DEFAULT_WORDS for c in CONDITIONS} | {
    "aging": ("early_signs", "moderate", "advanced"),
    "textured_skin": ("slight", "moderate", "severe"),
}
HEALTHY_WORDS: tuple[str, ...] = ("clear_skin", "minimal_concerns", "well_maintained")


class LabelError(SkinserveError):
    """A label that cannot be mapped onto the schema; the message names the file and the value."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


def condition_words(condition: str) -> dict[str, Severity]:
    """The accepted severity words of one condition, mapped onto the ordinal scale."""
    if condition not in SHINE_SEVERITY_WORDS:
        raise KeyError(condition)
    words = {"none": Severity.none}
    present_levels = (Severity.mild, Severity.moderate, Severity.severe)
    for word, level in zip(SHINE_SEVERITY_WORDS[condition], present_levels, strict=True):
        words[word] = level
    return words


def parse_severity(condition: str, word: str, source: str) -> Severity:
    """Map a condition's severity word onto the ordinal scale; an unknown word names the file and the word."""
    words = condition_words(condition)
    key = str(word).strip().lower()
    if key not in words:
        expected = ", ".join(words)
        raise LabelError(source, f"unknown severity word {word!r} for {condition} (expected one of: {expected})")
    return words[key]


def is_healthy_word(word: str) -> bool:
    return str(word).strip().lower() in HEALTHY_WORDS


@dataclass(frozen=True)
class ConditionLabel:
    """One condition's known state; `severity` is None where presence is known but its level is not."""

    present: bool
    severity: Severity | None

    @classmethod
    def absent(cls) -> ConditionLabel:
        return cls(present=False, severity=Severity.none)

    @classmethod
    def at(cls, severity: Severity) -> ConditionLabel:
        return cls(present=severity is not Severity.none, severity=severity)


@dataclass(frozen=True)
class Demographics:
    age_group: str | None = None
    age_range: str | None = None
    skin_tone: str | None = None
    gender: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k in DEMOGRAPHIC_FIELDS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Targets:
    """What is known about one image. A condition missing from `conditions` is unknown, not absent."""

    conditions: Mapping[str, ConditionLabel] = field(default_factory=dict)
    skin_type: str | None = None
    fitzpatrick: int | None = None
    demographics: Demographics = field(default_factory=Demographics)

    @property
    def healthy(self) -> bool | None:
        """True when every condition is known absent, False when one is present, None when undecided."""
        if any(label.present for label in self.conditions.values()):
            return False
        return True if len(self.conditions) == len(CONDITIONS) else None

    def present_conditions(self) -> list[str]:
        return [c for c in CONDITIONS if c in self.conditions and self.conditions[c].present]

    def stratum(self) -> str:
        """The condition x severity cell that stratifies splits: `healthy`, `acne:mild`, `acne:mild+redness:severe`."""
        levels = {c: self.conditions[c].severity for c in self.present_conditions()}
        present = [f"{c}:{level.name if level is not None else 'unknown'}" for c, level in levels.items()]
        if present:
            return "+".join(present)
        if self.healthy:
            return HEALTHY
        if self.skin_type is not None:
            return f"skin_type:{self.skin_type}"
        return "unlabelled"


def all_absent() -> dict[str, ConditionLabel]:
    return {c: ConditionLabel.absent() for c in CONDITIONS}


def validate_targets(targets: Targets, source: str) -> Targets:
    """Reject values outside the schema, naming the file and the field."""
    for name in targets.conditions:
        if name not in CONDITIONS:
            raise LabelError(source, f"unknown condition {name!r} (expected one of: {', '.join(CONDITIONS)})")
    for name, label in targets.conditions.items():
        if label.severity is not None and label.present != (label.severity is not Severity.none):
            raise LabelError(source, f"{name}: present={label.present} contradicts severity {label.severity.name}")
    if targets.skin_type is not None and targets.skin_type not in SKIN_TYPES:
        raise LabelError(source, f"unknown skin type {targets.skin_type!r} (expected one of: {', '.join(SKIN_TYPES)})")
    if targets.fitzpatrick is not None and targets.fitzpatrick not in FITZPATRICK_TYPES:
        raise LabelError(source, f"Fitzpatrick type {targets.fitzpatrick!r} is outside 1-6")
    return targets


ROMAN_NUMERALS: tuple[str, ...] = ("I", "II", "III", "IV", "V", "VI")  # Fitzpatrick types as written
_ROMAN = {numeral.lower(): number for number, numeral in enumerate(ROMAN_NUMERALS, start=1)}
_FITZPATRICK_RE = re.compile(r"fitzpatrick\s*(?:type\s*)?([ivx]+|[1-6])\b", re.IGNORECASE)


def fitzpatrick_from_text(text: str | None) -> int | None:
    """Read a Fitzpatrick type from free text such as 'fair skin tone (Fitzpatrick II)'."""
    if not text:
        return None
    match = _FITZPATRICK_RE.search(text)
    if match is None:
        return None
    value = match.group(1).lower()
    return int(value) if value.isdigit() else _ROMAN.get(value)


def parse_fitzpatrick(value: object, source: str) -> int | None:
    """A Fitzpatrick type from a number ('3', 3) or a roman numeral ('III'); empty means unknown."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    number = int(text) if text.isdigit() else _ROMAN.get(text)
    if number not in FITZPATRICK_TYPES:
        raise LabelError(source, f"Fitzpatrick type {value!r} is outside 1-6")
    return number
