"""Match a label's ingredient to COSING: exact name, then synonyms, then fuzzy (rapidfuzz), with the kind shown."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import fuzz, process
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from skinserve.catalog.inci import ParsedIngredient, normalize_inci
from skinserve.catalog.knowledge import IngredientKnowledge
from skinserve.db.catalog_models import Ingredient

MatchKind = Literal["exact", "synonym", "fuzzy", "none"]
FUZZY_CUTOFF = 90.0  # rapidfuzz ratio (0-100): 90 takes one or two typos in a ten-letter name, not a new word
FUZZY_MIN_CHARS = 5  # below this every edit is a large share of the name
FUZZY_MAX_CHARS = 120  # longer strings are never typos of an INCI name; the cap also bounds the cost per entry
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class ReferenceIngredient:
    """What COSING (and its annexes) says about one ingredient, as stored in the `ingredients` table."""

    id: int
    name: str
    normalized_name: str
    synonyms: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    restriction: str | None = None
    annex: str | None = None
    annex_refs: tuple[str, ...] = ()
    annex_conditions: str | None = None
    cosing_ref: str | None = None

    @property
    def prohibited(self) -> bool:
        return self.annex == "II"

    @property
    def restricted(self) -> bool:
        return self.annex == "III"


@dataclass(frozen=True)
class Match:
    kind: MatchKind
    canonical: str  # the normalised name used from here on: COSING's when matched
    ingredient: ReferenceIngredient | None
    score: float | None  # 100 for exact and synonym matches, the rapidfuzz ratio for fuzzy ones
    matched_text: str | None  # which of the entry's names matched


class IngredientIndex:
    """COSING's names, their synonyms and the project's synonyms, in memory, for matching many entries fast."""

    def __init__(self, ingredients: Iterable[ReferenceIngredient], knowledge: IngredientKnowledge):
        self.knowledge = knowledge
        self.by_name: dict[str, ReferenceIngredient] = {}
        for ingredient in ingredients:
            self.by_name.setdefault(ingredient.normalized_name, ingredient)
        self.by_synonym: dict[str, ReferenceIngredient] = {}
        for ingredient in self.by_name.values():
            for synonym in ingredient.synonyms:
                if synonym not in self.by_name:
                    self.by_synonym.setdefault(synonym, ingredient)
        # ratio >= 90 needs |len(a) - len(b)| <= 0.1 * (len(a) + len(b)): only names of about the same length can
        # match, so fuzzy lookups compare a quarter of COSING's 30,000 names, not all of them.
        self._by_length: dict[int, list[str]] = {}
        for name in self.by_name:
            self._by_length.setdefault(len(name), []).append(name)

    def __len__(self) -> int:
        return len(self.by_name)

    def resolve(self, entry: ParsedIngredient | str, fuzzy: bool = True) -> Match:
        candidates = entry.candidates if isinstance(entry, ParsedIngredient) else (normalize_inci(entry),)
        for text in candidates:
            if (found := self.by_name.get(text)) is not None:
                return Match("exact", found.normalized_name, found, 100.0, text)
        for text in candidates:
            if (found := self.by_synonym.get(text)) is not None:
                return Match("synonym", found.normalized_name, found, 100.0, text)
            if (target := self.knowledge.synonyms.get(text)) is not None:
                return Match("synonym", target, self.by_name.get(target), 100.0, text)
        if fuzzy and self.by_name:
            best = self._fuzzy(candidates[:2])
            if best is not None:
                return best
        return Match("none", self._known_name(candidates), None, None, None)

    def _fuzzy(self, candidates: Iterable[str]) -> Match | None:
        best: Match | None = None
        for text in candidates:
            if not FUZZY_MIN_CHARS <= len(text) <= FUZZY_MAX_CHARS:
                continue
            low, high = math.ceil(len(text) * 0.9 / 1.1), math.floor(len(text) * 1.1 / 0.9)
            choices = [name for size in range(low, high + 1) for name in self._by_length.get(size, ())]
            for name, score, _ in process.extract(text, choices, scorer=fuzz.ratio, limit=5, score_cutoff=FUZZY_CUTOFF):
                # PEG-40 is not PEG-60: a close spelling with other numbers is another ingredient.
                if _DIGITS.findall(name) != _DIGITS.findall(text):
                    continue
                if best is None or score > (best.score or 0):
                    best = Match("fuzzy", name, self.by_name[name], round(float(score), 1), text)
                break
        return best

    def _known_name(self, candidates: tuple[str, ...]) -> str:
        """Unmatched: the first of the entry's names the project knows (an active, an unsuitable one), else its own."""
        for text in candidates:
            if self.knowledge.active([text]) or self.knowledge.unsuitable_entries([text]):
                return text
        return candidates[0]


def load_ingredient_index(engine: Engine, knowledge: IngredientKnowledge) -> IngredientIndex:
    """Every reference ingredient in the catalog (about 30,000 for COSING: a few MB, loaded in well under a second)."""
    with Session(engine) as session:
        rows = session.execute(
            select(
                Ingredient.id,
                Ingredient.name,
                Ingredient.normalized_name,
                Ingredient.synonyms,
                Ingredient.functions,
                Ingredient.restriction,
                Ingredient.annex,
                Ingredient.annex_refs,
                Ingredient.annex_conditions,
                Ingredient.cosing_ref,
            )
        ).all()
    return IngredientIndex(
        (
            ReferenceIngredient(
                id=row.id,
                name=row.name,
                normalized_name=row.normalized_name,
                synonyms=tuple(row.synonyms or ()),
                functions=tuple(row.functions or ()),
                restriction=row.restriction,
                annex=row.annex,
                annex_refs=tuple(row.annex_refs or ()),
                annex_conditions=row.annex_conditions,
                cosing_ref=row.cosing_ref,
            )
            for row in rows
        ),
        knowledge,
    )
