"""The project's ingredient knowledge (actives.yaml): conditions targeted, unsuitable skin types, label synonyms."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from skinserve.catalog.inci import normalize_inci
from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, SKIN_TYPES

DEFAULT_KNOWLEDGE = Path(__file__).with_name("actives.yaml")
MAX_ACTIVES = 63  # one bit each in products.active_mask, a signed 64-bit integer


class KnowledgeError(SkinserveError):
    """The knowledge file breaks its schema; the message names the entry and the field."""


@dataclass(frozen=True)
class Target:
    condition: str
    reason: str


@dataclass(frozen=True)
class Active:
    inci: str
    canonical: str  # normalised INCI name
    aliases: tuple[str, ...]  # normalised
    targets: tuple[Target, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.canonical, *self.aliases)


@dataclass(frozen=True)
class Unsuitable:
    inci: str
    canonical: str
    aliases: tuple[str, ...]
    skin_types: tuple[str, ...]
    reason: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.canonical, *self.aliases)


@dataclass(frozen=True)
class IngredientKnowledge:
    actives: tuple[Active, ...]
    unsuitable: tuple[Unsuitable, ...]
    synonyms: Mapping[str, str]  # normalised label name -> normalised INCI name
    _active_by_name: dict[str, Active] = field(default_factory=dict, repr=False)
    _unsuitable_by_name: dict[str, list[Unsuitable]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for active in self.actives:
            for name in active.names:
                self._active_by_name.setdefault(name, active)
        if len(self.actives) > MAX_ACTIVES:
            raise KnowledgeError(f"{len(self.actives)} actives; at most {MAX_ACTIVES} fit the catalog's active_mask")
        for entry in self.unsuitable:
            for name in entry.names:
                self._unsuitable_by_name.setdefault(name, []).append(entry)

    def bit(self, active: Active) -> int:
        """The active's bit in a product's `active_mask`: its position in the file."""
        return self.actives.index(active)

    def mask(self, names: Iterable[str]) -> int:
        """The `active_mask` of a product listing these (canonical) ingredient names."""
        mask = 0
        for name in names:
            if (found := self._active_by_name.get(name)) is not None:
                mask |= 1 << self.bit(found)
        return mask

    def unsuitable_mask(self, names: Iterable[str]) -> int:
        """Bit i set: a product listing these names is unsuitable for SKIN_TYPES[i]."""
        mask = 0
        for name in names:
            for entry in self._unsuitable_by_name.get(name, ()):
                for skin_type in entry.skin_types:
                    mask |= 1 << SKIN_TYPES.index(skin_type)
        return mask

    @property
    def fingerprint(self) -> str:
        """Changes whenever a bit or the names that map onto it change: the products' masks must then be rebuilt."""
        lines = [f"{a.canonical}\t{','.join(a.aliases)}" for a in self.actives]
        lines += [f"{u.canonical}\t{','.join(u.aliases)}\t{','.join(u.skin_types)}" for u in self.unsuitable]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def active(self, names: Iterable[str]) -> Active | None:
        """The active a product ingredient is, trying its canonical name first, then its other names."""
        for name in names:
            if (found := self._active_by_name.get(name)) is not None:
                return found
        return None

    def unsuitable_entries(self, names: Iterable[str]) -> list[Unsuitable]:
        for name in names:
            if (found := self._unsuitable_by_name.get(name)) is not None:
                return found
        return []

    def target_names(self, conditions: Iterable[str]) -> dict[str, Active]:
        """Every name (canonical and aliases) of the actives that target any of `conditions`."""
        wanted = set(conditions)
        return {
            name: active
            for active in self.actives
            if any(t.condition in wanted for t in active.targets)
            for name in active.names
        }


@cache
def default_knowledge() -> IngredientKnowledge:
    return load_knowledge(DEFAULT_KNOWLEDGE)


def load_knowledge(path: Path) -> IngredientKnowledge:
    """Read and check a knowledge file: known conditions and skin types, a reason on every line."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if data.get("version") != 1:
        raise KnowledgeError(f"{path}: version must be 1, got {data.get('version')!r}")
    actives = tuple(_active(entry, path, i) for i, entry in enumerate(data.get("actives") or []))
    unsuitable = tuple(_unsuitable(entry, path, i) for i, entry in enumerate(data.get("unsuitable") or []))
    synonyms = {normalize_inci(str(k)): normalize_inci(str(v)) for k, v in (data.get("synonyms") or {}).items()}
    return IngredientKnowledge(actives, unsuitable, synonyms)


def _names(entry: Mapping[str, Any], where: str) -> tuple[str, str, tuple[str, ...]]:
    inci = str(entry.get("inci") or "").strip()
    if not inci:
        raise KnowledgeError(f"{where}: no inci name")
    aliases = tuple(normalize_inci(str(a)) for a in entry.get("aliases") or [])
    return inci, normalize_inci(inci), aliases


def _active(entry: Mapping[str, Any], path: Path, index: int) -> Active:
    where = f"{path}: actives[{index}]"
    inci, canonical, aliases = _names(entry, where)
    targets = entry.get("targets") or {}
    if not isinstance(targets, Mapping) or not targets:
        raise KnowledgeError(f"{where} ({inci}): targets must map conditions to reasons")
    checked = []
    for condition, reason in targets.items():
        if condition not in CONDITIONS:
            raise KnowledgeError(f"{where} ({inci}): unknown condition {condition!r} (expected one of {CONDITIONS})")
        if not str(reason or "").strip():
            raise KnowledgeError(f"{where} ({inci}): {condition} has no reason")
        checked.append(Target(condition, str(reason).strip()))
    return Active(inci, canonical, aliases, tuple(checked))


def _unsuitable(entry: Mapping[str, Any], path: Path, index: int) -> Unsuitable:
    where = f"{path}: unsuitable[{index}]"
    inci, canonical, aliases = _names(entry, where)
    skin_types = tuple(str(s) for s in entry.get("skin_types") or [])
    unknown = [s for s in skin_types if s not in SKIN_TYPES]
    if not skin_types or unknown:
        raise KnowledgeError(f"{where} ({inci}): skin_types must be a non-empty list of {SKIN_TYPES}, got {unknown}")
    reason = str(entry.get("reason") or "").strip()
    if not reason:
        raise KnowledgeError(f"{where} ({inci}): no reason")
    return Unsuitable(inci, canonical, aliases, skin_types, reason)
