"""Analyse an ingredient list: parse it, match each entry to COSING, add functions, restrictions and targets."""

from __future__ import annotations

from collections import Counter

from skinserve.catalog.inci import parse_ingredients
from skinserve.catalog.matching import IngredientIndex, Match
from skinserve.catalog.schemas import (
    AnalyzedIngredient,
    IgnoredFragment,
    IngredientAnalysis,
    IngredientMatch,
    IngredientRestriction,
    SkinTypeCaution,
    TargetedCondition,
)
from skinserve.errors import ClientError
from skinserve.labels import CONDITIONS, SKIN_TYPES

MAX_INGREDIENTS = 300  # entries per analysis: the longest real labels list ~120
# Fuzzy lookups per analysis: a real label has a handful of misspelt entries; a text of hundreds of unknown words is
# not a label, and matching each fuzzily cost ~4 s of CPU here, so the rest of such a text is matched exactly only.
MAX_FUZZY_LOOKUPS = 40


class TooManyIngredients(ClientError):
    code = "invalid_input"


def analyze_ingredient_text(text: str, index: IngredientIndex) -> IngredientAnalysis:
    """Every entry of the label with its match, COSING functions and restrictions, and the conditions it targets."""
    parsed = parse_ingredients(text)
    entries = parsed.ingredients()
    if len(entries) > MAX_INGREDIENTS:
        raise TooManyIngredients(f"the text lists {len(entries)} ingredients; at most {MAX_INGREDIENTS} are analysed")
    budget = [MAX_FUZZY_LOOKUPS]
    analyzed = [_analyze(variation, entry, index, budget) for variation, entry in entries]
    conditions: dict[str, list[str]] = {}
    unsuitable: dict[str, list[str]] = {}
    for item in analyzed:
        for target in item.targets:
            _add(conditions, target.condition, item.name)
        for caution in item.unsuitable_for:
            _add(unsuitable, caution.skin_type, item.name)
    return IngredientAnalysis(
        ingredients=analyzed,
        variations=[v.name for v in parsed.variations if v.name],
        ignored=[IgnoredFragment(text=i.text, reason=i.reason) for i in parsed.ignored],
        conditions={c: conditions[c] for c in CONDITIONS if c in conditions},
        prohibited=_unique(i.name for i in analyzed if i.restriction and i.restriction.prohibited),
        restricted=_unique(i.name for i in analyzed if i.restriction and i.restriction.restricted),
        unsuitable_for={s: unsuitable[s] for s in SKIN_TYPES if s in unsuitable},
        match_counts=dict(Counter(i.match.kind for i in analyzed)),
        reference_ingredients=len(index),
    )


def _analyze(variation: str, entry, index: IngredientIndex, budget: list[int]) -> AnalyzedIngredient:
    match = index.resolve(entry, fuzzy=False)
    if match.kind == "none" and budget[0] > 0:
        budget[0] -= 1
        match = index.resolve(entry, fuzzy=True)
    names = (match.canonical, *entry.candidates)
    knowledge = index.knowledge
    active = knowledge.active(names)
    reference = match.ingredient
    return AnalyzedIngredient(
        position=entry.position,
        variation=variation,
        label_text=entry.label_text,
        name=entry.name,
        percent=entry.percent,
        may_contain=entry.may_contain,
        footnote=entry.footnote,
        match=_match(match),
        functions=list(reference.functions) if reference else [],
        restriction=(
            IngredientRestriction(
                annex=reference.annex,
                refs=list(reference.annex_refs),
                prohibited=reference.prohibited,
                restricted=reference.restricted,
                conditions=reference.annex_conditions,
            )
            if reference is not None and reference.annex_refs
            else None
        ),
        targets=[TargetedCondition(condition=t.condition, reason=t.reason) for t in active.targets] if active else [],
        unsuitable_for=[
            SkinTypeCaution(skin_type=skin_type, reason=u.reason)
            for u in knowledge.unsuitable_entries(names)
            for skin_type in u.skin_types
        ],
    )


def _match(match: Match) -> IngredientMatch:
    return IngredientMatch(
        kind=match.kind,
        inci_name=match.ingredient.name if match.ingredient else None,
        canonical=match.canonical,
        score=match.score,
        matched_text=match.matched_text,
        cosing_ref=match.ingredient.cosing_ref if match.ingredient else None,
    )


def _add(groups: dict[str, list[str]], key: str, name: str) -> None:
    names = groups.setdefault(key, [])
    if name not in names:
        names.append(name)


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))
