"""What the catalog holds: products per source, ingredient entries and how many matched COSING, annexes, reviews."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from skinserve.db.catalog_models import Ingredient, Product, ProductIngredient, Review


def catalog_summary(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        per_source = dict(session.execute(select(Product.source, func.count()).group_by(Product.source)).all())
        entries, matched = session.execute(
            select(func.count(), func.count(ProductIngredient.ingredient_id)).select_from(ProductIngredient)
        ).one()
        distinct_names = session.scalar(select(func.count(func.distinct(ProductIngredient.ingredient_name))))
        per_annex = dict(
            session.execute(
                select(Ingredient.annex, func.count()).where(Ingredient.annex.is_not(None)).group_by(Ingredient.annex)
            ).all()
        )
        reference = dict(session.execute(select(Ingredient.source, func.count()).group_by(Ingredient.source)).all())
        reviews, linked = session.execute(select(func.count(), func.count(Review.product_id)).select_from(Review)).one()
        review_skin_types = dict(
            session.execute(
                select(Review.skin_type, func.count()).where(Review.skin_type.is_not(None)).group_by(Review.skin_type)
            ).all()
        )
    return {
        "products": sum(per_source.values()),
        "products_per_source": per_source,
        "ingredient_entries": entries,
        "ingredient_entries_matched": matched,
        "distinct_ingredient_names": distinct_names,
        "reference_ingredients": sum(reference.values()),
        "reference_per_source": reference,
        "reference_per_annex": per_annex,
        "reviews": reviews,
        "reviews_linked": linked,
        "review_skin_types": review_skin_types,
    }
