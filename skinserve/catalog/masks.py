"""products.active_mask and unsuitable_mask: what actives.yaml says of each product's ingredients, kept in step.

The mask is written with each product at ingest and rebuilt from product_ingredients when it may have gone stale:
actives.yaml changed (its fingerprint differs from the one stored in catalog_settings), or a COSING ingest renamed
product ingredient entries to COSING's names.
"""

from __future__ import annotations

from sqlalchemy import Engine, bindparam, insert, select, update

from skinserve.catalog.knowledge import IngredientKnowledge
from skinserve.db.catalog_models import CatalogSetting, Product, ProductIngredient

FINGERPRINT_KEY = "active_mask_fingerprint"
# Bumped when the rules that turn ingredient entries into masks change, so stored masks are rebuilt.
MASK_RULES = "2"  # 2: may-contain entries are no actives
products_t = Product.__table__
settings_t = CatalogSetting.__table__


def stored_fingerprint(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return connection.execute(select(settings_t.c.value).where(settings_t.c.key == FINGERPRINT_KEY)).scalar()


def ensure_active_masks(engine: Engine, knowledge: IngredientKnowledge) -> int | None:
    """Rebuild the masks if they were computed with another actives.yaml; the number rebuilt, or None if current."""
    if stored_fingerprint(engine) == mask_fingerprint(knowledge):
        return None
    return rebuild_active_masks(engine, knowledge)


def rebuild_active_masks(engine: Engine, knowledge: IngredientKnowledge) -> int:
    """Recompute every product's masks from its ingredient entries (about a second per 10,000 products)."""
    masks: dict[int, tuple[int, int]] = {}
    with engine.connect() as connection:
        current = {
            row.id: (row.active_mask, row.unsuitable_mask)
            for row in connection.execute(
                select(products_t.c.id, products_t.c.active_mask, products_t.c.unsuitable_mask)
            )
        }
        rows = connection.execution_options(yield_per=10_000).execute(
            select(ProductIngredient.product_id, ProductIngredient.ingredient_name, ProductIngredient.may_contain)
        )
        for product_id, name, may_contain in rows:  # as at ingest: a may-contain entry is no active
            active, unsuitable = masks.get(product_id, (0, 0))
            active |= 0 if may_contain else knowledge.mask([name])
            masks[product_id] = (active, unsuitable | knowledge.unsuitable_mask([name]))
    changed = [
        {"b_id": pid, "active_mask": new[0], "unsuitable_mask": new[1]}
        for pid, old in current.items()
        if (new := masks.get(pid, (0, 0))) != old
    ]
    with engine.begin() as connection:
        for start in range(0, len(changed), 5_000):
            connection.execute(
                update(products_t).where(products_t.c.id == bindparam("b_id")), changed[start : start + 5_000]
            )
        store_fingerprint(connection, knowledge)
    return len(changed)


def mask_fingerprint(knowledge: IngredientKnowledge) -> str:
    return f"{MASK_RULES}:{knowledge.fingerprint}"


def store_fingerprint(connection, knowledge: IngredientKnowledge) -> None:
    exists = connection.execute(select(settings_t.c.key).where(settings_t.c.key == FINGERPRINT_KEY)).first()
    if exists is None:
        connection.execute(insert(settings_t).values(key=FINGERPRINT_KEY, value=mask_fingerprint(knowledge)))
    else:
        connection.execute(
            update(settings_t).where(settings_t.c.key == FINGERPRINT_KEY).values(value=mask_fingerprint(knowledge))
        )
