"""The registry schema: Alembic upgrade and downgrade on SQLite and Postgres, the seed's tables, indexes and checks."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import Base, ConditionLabelRow, SubjectMetadata, TrainingImage, TrainingMetrics
from skinserve.db.partitions import alembic_include_name

SEED_TABLES = {
    "ml_training_images",
    "skin_condition_labels",
    "subject_metadata",
    "model_training_metrics",
    "prediction_logs",
}
CATALOG_TABLES = {"products", "ingredients", "product_ingredients", "reviews", "catalog_settings"}  # test_catalog_db.py
SEED_INDEXES = {
    ("ml_training_images", "idx_training_images_source", ("dataset_source",)),
    ("skin_condition_labels", "idx_condition_labels_type", ("condition_type",)),
    ("subject_metadata", "idx_metadata_skin_type", ("skin_type",)),
    ("model_training_metrics", "idx_training_metrics_date", ("training_date",)),
    ("prediction_logs", "idx_prediction_logs_created_at", ("created_at",)),
}


def test_upgrade_creates_exactly_the_seed_tables_and_indexes(registry_engine):
    inspector = inspect(registry_engine)
    # Postgres lists prediction_logs' day and default partitions as tables of their own (tests/test_partitions.py).
    tables = {t for t in inspector.get_table_names() if not t.startswith("prediction_logs_")}
    assert tables == SEED_TABLES | CATALOG_TABLES | {"alembic_version"}
    found = {
        (table, index["name"], tuple(index["column_names"]))
        for table in SEED_TABLES
        for index in inspector.get_indexes(table)
        if not index.get("duplicates_constraint")  # Postgres lists the unique constraint's own index too
    }
    assert found == SEED_INDEXES


def test_migration_matches_the_models(registry_engine):
    with registry_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": alembic_include_name})  # as env.py
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.postgres
def test_json_columns_are_jsonb_on_postgres(clean_postgres):
    engine = create_registry_engine(clean_postgres)
    columns = {c["name"]: c["type"] for c in inspect(engine).get_columns("skin_condition_labels")}
    engine.dispose()
    assert type(columns["metadata"]).__name__ == "JSONB"


def test_downgrade_removes_everything_and_upgrade_restores_it(registry_url):
    migrate.downgrade(registry_url, "base")
    engine = create_registry_engine(registry_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert migrate.current_revision(registry_url) is None
    migrate.upgrade(registry_url)
    assert migrate.current_revision(registry_url) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) >= SEED_TABLES
    engine.dispose()


def _image(hash_: str) -> TrainingImage:
    return TrainingImage(image_url=f"file:///x/{hash_}.png", image_hash=hash_, dataset_source="t")


def test_image_hash_is_unique(registry_engine):
    with Session(registry_engine) as session:
        session.add(_image("a" * 64))
        session.commit()
        session.add(_image("a" * 64))
        with pytest.raises(IntegrityError):
            session.commit()


@pytest.mark.parametrize("scale", [0, 7])
def test_fitzpatrick_scale_outside_one_to_six_is_refused_by_the_database(registry_engine, scale):
    with Session(registry_engine) as session:
        image = _image("b" * 64)
        image.subject = [SubjectMetadata(fitzpatrick_scale=scale)]
        session.add(image)
        with pytest.raises(IntegrityError):
            session.commit()


def test_labels_reference_an_existing_image(registry_engine):
    with Session(registry_engine) as session:
        session.add(ConditionLabelRow(image_id=12345, condition_type="acne", severity_level="mild"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_rows_round_trip_with_json_and_defaults(registry_engine):
    with Session(registry_engine) as session:
        image = _image("c" * 64)
        image.labels = [
            ConditionLabelRow(
                condition_type="acne", severity_level="mild", label_metadata={"present": True, "words": ["a", "b"]}
            )
        ]
        session.add_all([image, TrainingMetrics(model_name="m", hyperparameters={"lr": 0.001})])
        session.commit()
    with Session(registry_engine) as session:
        label = session.scalars(select(ConditionLabelRow)).one()
        assert label.label_metadata == {"present": True, "words": ["a", "b"]}
        assert label.verified is False
        assert label.created_at is not None
        metrics = session.scalars(select(TrainingMetrics)).one()
        assert metrics.hyperparameters == {"lr": 0.001}
        assert metrics.training_date is not None
