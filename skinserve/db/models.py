"""The registry's tables, as the seed schema defines them (JSONB on Postgres, JSON elsewhere)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class TrainingImage(Base):
    __tablename__ = "ml_training_images"
    __table_args__ = (Index("idx_training_images_source", "dataset_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_url: Mapped[str] = mapped_column(String(500), nullable=False)
    local_path: Mapped[str | None] = mapped_column(String(255))
    image_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    dataset_source: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())

    labels: Mapped[list[ConditionLabelRow]] = relationship(back_populates="image", cascade="all, delete-orphan")
    subject: Mapped[list[SubjectMetadata]] = relationship(back_populates="image", cascade="all, delete-orphan")


class ConditionLabelRow(Base):
    __tablename__ = "skin_condition_labels"
    __table_args__ = (Index("idx_condition_labels_type", "condition_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("ml_training_images.id"))
    condition_type: Mapped[str] = mapped_column(String(100), nullable=False)
    confidence_score: Mapped[float | None] = mapped_column(Float)
    severity_level: Mapped[str | None] = mapped_column(String(50))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    label_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONDocument)
    verified: Mapped[bool | None] = mapped_column(Boolean, server_default=false(), default=False)
    created_at: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())

    image: Mapped[TrainingImage] = relationship(back_populates="labels")


class SubjectMetadata(Base):
    __tablename__ = "subject_metadata"
    __table_args__ = (
        CheckConstraint("fitzpatrick_scale BETWEEN 1 AND 6", name="ck_subject_metadata_fitzpatrick_scale"),
        Index("idx_metadata_skin_type", "skin_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("ml_training_images.id"))
    gender: Mapped[str | None] = mapped_column(String(20))
    age_range: Mapped[str | None] = mapped_column(String(20))
    ethnicity: Mapped[str | None] = mapped_column(String(50))
    skin_type: Mapped[str | None] = mapped_column(String(50))
    fitzpatrick_scale: Mapped[int | None] = mapped_column(Integer)
    additional_info: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    image: Mapped[TrainingImage] = relationship(back_populates="subject")


class TrainingMetrics(Base):
    __tablename__ = "model_training_metrics"
    __table_args__ = (Index("idx_training_metrics_date", "training_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[str | None] = mapped_column(String(50))
    training_date: Mapped[datetime | None] = mapped_column(DateTime, server_default=func.now())
    dataset_size: Mapped[int | None] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    precision_score: Mapped[float | None] = mapped_column(Float)
    recall: Mapped[float | None] = mapped_column(Float)
    f1_score: Mapped[float | None] = mapped_column(Float)
    training_duration_minutes: Mapped[int | None] = mapped_column(Integer)
    hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    notes: Mapped[str | None] = mapped_column(Text)


class PredictionLog(Base):
    """One prediction served; written by `skinserve.serve.predlog.PredictionLogWriter`, never on the request path."""

    __tablename__ = "prediction_logs"
    # On Postgres partitioned by UTC day (migration 0004, skinserve/db/partitions.py). No surrogate key: a 32-bit id
    # ran out in days, and a unique key on a partitioned table must hold the partition key anyway.
    __table_args__ = (
        Index("idx_prediction_logs_created_at", "created_at"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    # The writer's inserts are keyed on (request_id, created_at) (ON CONFLICT DO NOTHING): created_at is fixed once
    # per request, so a replayed row is never stored twice.
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Set by the service at prediction time (UTC); the server default only covers hand-written inserts.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, nullable=False, server_default=func.now()
    )
    model_name: Mapped[str] = mapped_column(String(100), nullable=False)
    model_version: Mapped[str] = mapped_column(String(50), nullable=False)
    runtime: Mapped[str] = mapped_column(String(50), nullable=False)
    image_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    batch_size: Mapped[int] = mapped_column(Integer, nullable=False)
    client_id: Mapped[str | None] = mapped_column(String(100))
