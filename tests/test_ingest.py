"""Ingest: every valid image registered once with its labels, bad files rejected by name, batches atomic."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skinserve.data.ingest import IngestOptions, ingest_dataset
from skinserve.data.shine import read_shine
from skinserve.db.models import ConditionLabelRow, SubjectMetadata, TrainingImage
from skinserve.labels import SHINE_SEVERITY_WORDS, Severity
from skinserve.storage import LocalStorage, open_storage


def options(**overrides) -> IngestOptions:
    return IngestOptions(**({"source": "synthetic", "progress": False, "batch_size": 16} | overrides))


def count(engine, model) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def sidecar_expectations(root: Path) -> dict[str, dict[str, str]]:
    """image SHA-256 -> {condition: canonical severity}, read straight from the sidecar JSON."""
    expected = {}
    for sidecar in root.rglob("*.json"):
        data = json.loads(sidecar.read_text())
        digest = hashlib.sha256(sidecar.with_name(data["image_filename"]).read_bytes()).hexdigest()
        levels = {}
        for condition, word in data["severity_targets"].items():
            words = ("none", *SHINE_SEVERITY_WORDS[condition])
            levels[condition] = Severity(words.index(word)).name
        expected[digest] = levels
    return expected


def registered_labels(engine) -> dict[str, dict[str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(TrainingImage.image_hash, ConditionLabelRow.condition_type, ConditionLabelRow.severity_level).join(
                ConditionLabelRow
            )
        ).all()
    labels: dict[str, dict[str, str]] = {}
    for digest, condition, level in rows:
        labels.setdefault(digest, {})[condition] = level
    return labels


def test_every_image_is_registered_with_the_labels_of_its_sidecar(synth_set, registry_engine, tmp_path):
    storage = LocalStorage(tmp_path / "store")
    summary = ingest_dataset(read_shine(synth_set), registry_engine, storage, options())
    expected = sidecar_expectations(synth_set)
    assert summary.rejected == []
    assert summary.added + summary.duplicates == len(expected) == summary.scanned
    assert registered_labels(registry_engine) == expected
    assert count(registry_engine, SubjectMetadata) == summary.added


def test_stored_files_are_content_addressed_copies(synth_set, registry_engine, tmp_path):
    storage = LocalStorage(tmp_path / "store")
    ingest_dataset(read_shine(synth_set), registry_engine, storage, options())
    with Session(registry_engine) as session:
        images = session.scalars(select(TrainingImage)).all()
    for image in images:
        stored = Path(image.local_path)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == image.image_hash
        assert stored.name.startswith(image.image_hash) and image.image_url == stored.as_uri()
        assert image.dataset_source == "synthetic"


def test_a_second_run_adds_nothing(synth_set, registry_engine, tmp_path):
    storage = LocalStorage(tmp_path / "store")
    first = ingest_dataset(read_shine(synth_set), registry_engine, storage, options())
    images, labels = count(registry_engine, TrainingImage), count(registry_engine, ConditionLabelRow)
    second = ingest_dataset(read_shine(synth_set), registry_engine, storage, options())
    assert first.added > 0
    assert second.added == 0 and second.duplicates == first.added + first.duplicates
    assert (count(registry_engine, TrainingImage), count(registry_engine, ConditionLabelRow)) == (images, labels)


def test_corrupt_truncated_and_fake_images_are_rejected_by_name(synth_copy, registry_engine, tmp_path):
    pngs = sorted(synth_copy.rglob("*.png"))
    truncated, garbage, empty = pngs[0], pngs[5], pngs[9]
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"<html><body>not a face</body></html>")
    empty.write_bytes(b"")
    summary = ingest_dataset(read_shine(synth_copy), registry_engine, LocalStorage(tmp_path / "s"), options())
    reasons = {p.path: p.reason for p in summary.rejected}
    rel = lambda p: p.relative_to(synth_copy).as_posix()  # noqa: E731
    assert set(reasons) == {rel(truncated), rel(garbage), rel(empty)}
    assert "truncated" in reasons[rel(truncated)]
    assert "not an image" in reasons[rel(garbage)]
    assert "empty" in reasons[rel(empty)]
    assert summary.added + summary.duplicates == len(pngs) - 3


def test_the_same_bytes_under_two_names_are_registered_once(synth_copy, registry_engine, tmp_path):
    image = sorted((synth_copy / "acne" / "mild").glob("*.png"))[0]
    shutil.copy(image, image.with_name("copy_of_it.png"))
    summary = ingest_dataset(read_shine(synth_copy), registry_engine, LocalStorage(tmp_path / "s"), options())
    assert summary.duplicates >= 1
    assert count(registry_engine, TrainingImage) == summary.added


class FailingStorage(LocalStorage):
    """A real local store that breaks after a number of writes, as a full disk or lost bucket would."""

    def __init__(self, root: Path, fail_after: int) -> None:
        super().__init__(root)
        self.remaining = fail_after

    def put(self, key, data, content_type=None):
        if self.remaining == 0:
            raise OSError(28, "No space left on device")
        self.remaining -= 1
        return super().put(key, data, content_type)


def test_a_failure_mid_batch_registers_nothing_of_that_batch(synth_set, registry_engine, tmp_path):
    read = read_shine(synth_set)
    with pytest.raises(OSError):
        ingest_dataset(read, registry_engine, FailingStorage(tmp_path / "s", fail_after=20), options(batch_size=16))
    assert count(registry_engine, TrainingImage) == 16  # the first batch committed, the second rolled back whole
    with Session(registry_engine) as session:
        orphans = session.scalar(select(func.count()).select_from(TrainingImage).where(~TrainingImage.labels.any()))
    assert orphans == 0
    ingest_dataset(read, registry_engine, LocalStorage(tmp_path / "s"), options())
    distinct = {hashlib.sha256(r.path.read_bytes()).hexdigest() for r in read.records}
    assert count(registry_engine, TrainingImage) == len(distinct)


def test_ingest_into_gcs_through_the_emulator(synth_set, registry_engine, gcs_bucket):
    storage = open_storage(f"gs://{gcs_bucket}/datasets")
    summary = ingest_dataset(read_shine(synth_set), registry_engine, storage, options())
    with Session(registry_engine) as session:
        images = session.scalars(select(TrainingImage)).all()
    assert len(images) == summary.added > 0
    for image in images[:5]:
        assert image.image_url.startswith(f"gs://{gcs_bucket}/datasets/synthetic/")
        assert image.local_path is None
        key = image.image_url.removeprefix(f"gs://{gcs_bucket}/datasets/")
        assert hashlib.sha256(storage.get(key)).hexdigest() == image.image_hash


def test_subject_metadata_keeps_demographics_and_group(synth_set, registry_engine, tmp_path):
    ingest_dataset(read_shine(synth_set), registry_engine, LocalStorage(tmp_path / "s"), options())
    with Session(registry_engine) as session:
        subjects = session.scalars(select(SubjectMetadata)).all()
    assert all(s.gender in ("male", "female") and s.age_range for s in subjects)
    assert all(1 <= s.fitzpatrick_scale <= 6 for s in subjects)
    assert all(s.additional_info["group_id"] and s.additional_info["skin_tone"] for s in subjects)
