"""The catalog routes' request and answer documents (pydantic): the JSON schema the OpenAPI spec publishes."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skinserve.labels import CONDITIONS, SKIN_TYPES

ConditionName = Literal[CONDITIONS]  # type: ignore[valid-type]
SkinTypeName = Literal[SKIN_TYPES]  # type: ignore[valid-type]
SeverityWord = Literal["none", "mild", "moderate", "severe"]
MatchKindName = Literal["exact", "synonym", "fuzzy", "none"]
MAX_INGREDIENT_TEXT = 20_000  # characters: a long label is ~2,000; the cap bounds parsing and fuzzy-matching cost


# ---------------------------------------------------------------- POST /api/v1/ingredients/analyze


class IngredientsAnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ingredients: str = Field(
        min_length=1, max_length=MAX_INGREDIENT_TEXT, description="an ingredient list as printed on a label"
    )


class IngredientMatch(BaseModel):
    kind: MatchKindName = Field(description="exact INCI name, a synonym, a fuzzy (misspelt) match, or none")
    inci_name: str | None = Field(description="COSING's INCI name of the match")
    canonical: str = Field(description="the normalised name the catalog uses for this ingredient")
    score: float | None = Field(description="100 for exact and synonym matches; the rapidfuzz ratio for fuzzy ones")
    matched_text: str | None = Field(description="which of the entry's names matched")
    cosing_ref: str | None


class IngredientRestriction(BaseModel):
    annex: str | None = Field(description="the strictest COSING annex listing it: II prohibited, III restricted")
    refs: list[str] = Field(description="annex references, e.g. III/98")
    prohibited: bool
    restricted: bool
    conditions: str | None = Field(description="the annex's scope, maximum concentration and warnings")


class TargetedCondition(BaseModel):
    condition: ConditionName
    reason: str


class SkinTypeCaution(BaseModel):
    skin_type: SkinTypeName
    reason: str


class AnalyzedIngredient(BaseModel):
    position: int = Field(description="1-based position in its variation's list")
    variation: str = Field(description="the variation heading the entry belongs to; '' for a single list")
    label_text: str
    name: str = Field(description="the entry's normalised name")
    percent: float | None
    may_contain: bool
    footnote: str | None
    match: IngredientMatch
    functions: list[str] = Field(description="COSING functions")
    restriction: IngredientRestriction | None
    targets: list[TargetedCondition] = Field(description="conditions the ingredient is known to target, and why")
    unsuitable_for: list[SkinTypeCaution]


class IgnoredFragment(BaseModel):
    text: str
    reason: str


class IngredientAnalysis(BaseModel):
    ingredients: list[AnalyzedIngredient]
    variations: list[str]
    ignored: list[IgnoredFragment] = Field(description="headings aside, what was read and left out, and why")
    conditions: dict[str, list[str]] = Field(description="condition -> the ingredients that target it")
    prohibited: list[str] = Field(description="ingredients in COSING Annex II")
    restricted: list[str] = Field(description="ingredients in COSING Annex III")
    unsuitable_for: dict[str, list[str]] = Field(description="skin type -> the ingredients unsuitable for it")
    match_counts: dict[str, int] = Field(description="entries per match kind")
    reference_ingredients: int = Field(description="COSING entries in the catalog (0: nothing can match)")


# ---------------------------------------------------------------- POST /api/v1/ml/recommend


class SeverityIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    label: SeverityWord = "none"


class ConditionScoreIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    probability: float | None = Field(default=None, ge=0, le=1)
    present: bool
    severity: SeverityIn | None = None


class AnalysisIn(BaseModel):
    """An analysis as `/analyze` answers it; only `conditions` is read."""

    model_config = ConfigDict(extra="ignore")

    conditions: dict[str, ConditionScoreIn]

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, value: dict[str, ConditionScoreIn]) -> dict[str, ConditionScoreIn]:
        unknown = sorted(set(value) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown} (expected some of {list(CONDITIONS)})")
        return value


class ConditionSeverity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ConditionName
    severity: Literal["mild", "moderate", "severe"] = "moderate"


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analysis: AnalysisIn | None = Field(default=None, description="an analysis as /analyze answers it")
    conditions: list[ConditionSeverity] | None = Field(
        default=None, max_length=len(CONDITIONS), description="or: conditions with their severities"
    )
    skin_type: SkinTypeName | None = None
    category: str | None = Field(
        default=None, min_length=1, max_length=100, description="matched against the product's category path"
    )
    max_price: float | None = Field(default=None, gt=0, le=100_000, description="budget, in `currency`")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. USD, GBP")
    limit: int = Field(default=10, ge=1, le=50)
    exclude_restricted: bool = Field(
        default=False,
        description="also leave out products listing a COSING Annex III (restricted) ingredient other than the "
        "actives recommended; Annex II (prohibited) ingredients are always left out",
    )

    @model_validator(mode="after")
    def _one_input(self) -> RecommendRequest:
        if (self.analysis is None) == (self.conditions is None):
            raise ValueError("give exactly one of `analysis` or `conditions`")
        if self.max_price is not None and not math.isfinite(self.max_price):
            raise ValueError("max_price must be a finite number")
        return self


class ConditionWeight(BaseModel):
    name: ConditionName
    severity: SeverityWord
    weight: float = Field(description="the severity's weight in the score: mild 1, moderate 2, severe 3")


class RecommendationReason(BaseModel):
    ingredient: str = Field(description="the ingredient as the label prints it")
    canonical: str
    condition: ConditionName
    reason: str
    percent: float | None


class RestrictionNote(BaseModel):
    ingredient: str
    annex: str
    refs: list[str]
    conditions: str | None


class RecommendedProduct(BaseModel):
    rank: int
    id: int
    source: str
    external_id: str
    name: str
    brand: str | None
    product_type: str | None
    categories: str | None
    price: float | None
    currency: str | None
    url: str | None
    rating: float | None
    review_count: int | None
    bayesian_rating: float | None = Field(description="rating shrunk toward the catalog mean by review count")
    score: float = Field(description="sum of the severity weights of the conditions its actives target")
    matched_conditions: list[ConditionName]
    matched_actives: int
    reasons: list[RecommendationReason]
    restricted: list[RestrictionNote] = Field(description="Annex III ingredients it lists, with their conditions")


class Recommendations(BaseModel):
    conditions: list[ConditionWeight] = Field(description="the present conditions the ranking used")
    skin_type: SkinTypeName | None
    products: list[RecommendedProduct]
    catalog_products: int
    note: str | None = None


class ShineRecommendation(BaseModel):
    """One entry of the Shine app's `recommendations` list."""

    type: str | None = Field(description="the product's category")
    product: str = Field(description="brand and product name")
    reason: str
    product_id: int
    url: str | None
    price: float | None
    currency: str | None
    rating: float | None
    conditions: list[ConditionName]
