"""Read-side queries over the registry: what has been ingested, per source and per condition x severity."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from skinserve.db.models import ConditionLabelRow, SubjectMetadata, TrainingImage


def registry_summary(engine: Engine) -> dict[str, Any]:
    """Image counts per source, label counts per condition and severity level, images per skin type."""
    with Session(engine) as session:
        per_source = dict(
            session.execute(
                select(TrainingImage.dataset_source, func.count()).group_by(TrainingImage.dataset_source)
            ).all()
        )
        per_label = session.execute(
            select(ConditionLabelRow.condition_type, ConditionLabelRow.severity_level, func.count()).group_by(
                ConditionLabelRow.condition_type, ConditionLabelRow.severity_level
            )
        ).all()
        skin_types = dict(
            session.execute(
                select(SubjectMetadata.skin_type, func.count())
                .where(SubjectMetadata.skin_type.is_not(None))
                .group_by(SubjectMetadata.skin_type)
            ).all()
        )
    conditions: dict[str, dict[str, int]] = {}
    for condition, severity, count in per_label:
        conditions.setdefault(condition, {})[severity or "unknown"] = count
    images = sum(per_source.values())
    return {"images": images, "per_source": per_source, "labels": conditions, "skin_types": skin_types}


def add_training_metrics(engine: Engine, **columns: Any) -> int:
    """Insert one model_training_metrics row and return its id."""
    from skinserve.db.models import TrainingMetrics

    with Session(engine) as session, session.begin():
        row = TrainingMetrics(**columns)
        session.add(row)
        session.flush()
        return row.id
