"""What the catalog's HTTP routes call: decode and validate a body, answer it, or raise a ClientError.

    POST /api/v1/ingredients/analyze   {"ingredients": "TEXT"}          -> IngredientAnalysis
    POST /api/v1/ml/recommend          RecommendRequest                  -> Recommendations (503 no_catalog)
    the Shine answer's `recommendations`                                 -> list[ShineRecommendation] | None

A body that is not JSON is a 400 `bad_request`; JSON that breaks the request schema is a 422 `invalid_input` naming
the field; nothing a client sends can reach a 500 from here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from skinserve.catalog.analysis import analyze_ingredient_text
from skinserve.catalog.knowledge import IngredientKnowledge, default_knowledge
from skinserve.catalog.matching import IngredientIndex, load_ingredient_index
from skinserve.catalog.recommend import NoCatalog, Recommender
from skinserve.catalog.schemas import (
    AnalysisIn,
    IngredientAnalysis,
    IngredientsAnalyzeRequest,
    Recommendations,
    RecommendRequest,
    ShineRecommendation,
)
from skinserve.errors import ClientError, register_code

__all__ = [
    "BodyTooLarge",
    "CatalogRoutes",
    "CatalogUnavailable",
    "InvalidCatalogRequest",
    "MalformedBody",
    "NoCatalog",
    "parse_body",
]

log = logging.getLogger("skinserve.catalog")
Model = TypeVar("Model", bound=BaseModel)
MAX_BODY_BYTES = 256 * 1024


class MalformedBody(ClientError):
    code = "bad_request"


class InvalidCatalogRequest(ClientError):
    code = "invalid_input"


class BodyTooLarge(ClientError):
    code = "too_large"


class CatalogUnavailable(ClientError):
    """The catalog's database did not answer (down, or not migrated): the client may retry later."""

    code = register_code("catalog_unavailable", 503, "the product catalog's database is unavailable; retry later")


def _database_errors(call):
    """A route function whose database trouble is a 503 `catalog_unavailable`, never a 500."""
    import functools

    from sqlalchemy.exc import DBAPIError

    @functools.wraps(call)
    def guarded(*args, **kwargs):
        try:
            return call(*args, **kwargs)
        except DBAPIError as err:
            reason = str(getattr(err, "orig", err)).splitlines()[0] if str(getattr(err, "orig", err)) else ""
            raise CatalogUnavailable(f"the catalog's database did not answer ({type(err).__name__}: {reason})") from err

    return guarded


def parse_body(model: type[Model], body: bytes | str | Mapping[str, Any]) -> Model:
    """A request model from raw JSON bytes or an already decoded mapping; client mistakes become ClientErrors."""
    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise MalformedBody(f"the body is not JSON: {type(err).__name__}") from err
    if not isinstance(body, Mapping):
        raise InvalidCatalogRequest(f"the body must be a JSON object, not {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise InvalidCatalogRequest(_describe(err)) from err
    except RecursionError as err:
        raise InvalidCatalogRequest("the body is nested too deeply") from err


def _describe(err: ValidationError) -> str:
    problems = []
    for item in err.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    more = f" (and {err.error_count() - 5} more)" if err.error_count() > 5 else ""
    return "; ".join(problems) + more


class CatalogRoutes:
    """Built once per worker beside the model; the ingredient index is loaded on first use and on `reload()`."""

    def __init__(self, engine: Engine, knowledge: IngredientKnowledge | None = None):
        self.engine = engine
        self.knowledge = knowledge or default_knowledge()
        self.recommender = Recommender(engine, self.knowledge)
        self._index: IngredientIndex | None = None

    def reload(self) -> None:
        self._index = load_ingredient_index(self.engine, self.knowledge)

    @property
    def index(self) -> IngredientIndex:
        if self._index is None:
            self.reload()
        assert self._index is not None
        return self._index

    @_database_errors
    def analyze_ingredients(self, body: bytes | str | Mapping[str, Any]) -> IngredientAnalysis:
        """POST /api/v1/ingredients/analyze."""
        request = parse_body(IngredientsAnalyzeRequest, body)
        return analyze_ingredient_text(request.ingredients, self.index)

    @_database_errors
    def recommend(self, body: bytes | str | Mapping[str, Any]) -> Recommendations:
        """POST /api/v1/ml/recommend; NoCatalog (503 `no_catalog`) when no product is loaded."""
        return self.recommender.recommend(parse_body(RecommendRequest, body))

    def shine_recommendations(
        self,
        analysis: BaseModel | Mapping[str, Any],
        skin_type: str | None = None,
        limit: int = 5,
    ) -> list[ShineRecommendation] | None:
        """The Shine answer's `recommendations` for an analysis; None without a catalog (the answer stays as it is)."""
        data = analysis.model_dump() if isinstance(analysis, BaseModel) else dict(analysis)
        request = RecommendRequest(
            analysis=AnalysisIn.model_validate({"conditions": data.get("conditions") or {}}),
            skin_type=skin_type,
            limit=limit,
        )
        try:
            answer = self.recommender.recommend(request)
        except NoCatalog:
            return None
        except Exception:  # the analysis is answered whatever becomes of its recommendations
            log.exception("recommendations for an analysis failed; answering without them")
            return None
        return [to_shine(product) for product in answer.products]


def to_shine(product) -> ShineRecommendation:
    by_condition: dict[str, list[str]] = {}
    for reason in product.reasons:
        by_condition.setdefault(reason.condition, [])
        if reason.ingredient not in by_condition[reason.condition]:
            by_condition[reason.condition].append(reason.ingredient)
    reason = "; ".join(f"{', '.join(names)} for {condition}" for condition, names in by_condition.items())
    name = f"{product.brand} {product.name}" if product.brand else product.name
    return ShineRecommendation(
        type=product.product_type,
        product=name,
        reason=reason,
        product_id=product.id,
        url=product.url,
        price=product.price,
        currency=product.currency,
        rating=product.rating,
        conditions=product.matched_conditions,
    )
