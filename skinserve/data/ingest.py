"""Ingest: decode, hash, dedupe, store and register a dataset, one transaction per batch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tqdm import tqdm

from skinserve.data.records import ImageRecord, Problem, ReadResult
from skinserve.db.models import ConditionLabelRow, SubjectMetadata, TrainingImage
from skinserve.images import DEFAULT_MAX_PIXELS, ImageInfo, InvalidImage, inspect_image
from skinserve.labels import CONDITIONS
from skinserve.storage import Storage, content_key


@dataclass(frozen=True)
class IngestOptions:
    source: str
    batch_size: int = 64
    workers: int = 2  # PIL releases the GIL while decoding, so threads overlap decode with I/O
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True


@dataclass
class IngestSummary:
    source: str
    scanned: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected_count"] = len(self.rejected)
        return data

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


@dataclass(frozen=True)
class _Decoded:
    record: ImageRecord
    info: ImageInfo
    data: bytes


def ingest_dataset(read: ReadResult, engine: Engine, storage: Storage, options: IngestOptions) -> IngestSummary:
    """Register every valid record of `read` not already registered; running it twice adds nothing."""
    summary = IngestSummary(source=options.source, scanned=len(read.records) + len(read.problems))
    summary.rejected.extend(read.problems)
    seen: set[str] = set()
    bar = tqdm(total=len(read.records), desc=f"ingest {options.source}", unit="img", disable=not options.progress)
    with ThreadPoolExecutor(max_workers=options.workers) as pool, Session(engine) as session:
        for batch in _batches(read.records, options.batch_size):
            decoded = [item for item in pool.map(lambda r: _decode(r, options.max_pixels), batch)]
            fresh = []
            for item in decoded:
                if isinstance(item, Problem):
                    summary.rejected.append(item)
                elif item.info.sha256 in seen:
                    summary.duplicates += 1
                else:
                    seen.add(item.info.sha256)
                    fresh.append(item)
            summary.added += _register_batch(session, storage, fresh, options.source, summary)
            bar.update(len(batch))
    bar.close()
    return summary


def _batches(records: list[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _decode(record: ImageRecord, max_pixels: int) -> _Decoded | Problem:
    try:
        data = record.path.read_bytes()
        return _Decoded(record, inspect_image(data, max_pixels), data)
    except OSError as err:
        return Problem(record.relpath, f"unreadable file: {err.strerror or err}")
    except InvalidImage as err:
        return Problem(record.relpath, str(err))


def _register_batch(
    session: Session, storage: Storage, items: list[_Decoded], source: str, summary: IngestSummary
) -> int:
    """Store and insert the batch in one transaction; retried once if a concurrent ingest won a race."""
    for attempt in (1, 2):
        registered = _registered_hashes(session, [i.info.sha256 for i in items])
        new = [i for i in items if i.info.sha256 not in registered]
        try:
            with session.begin():
                for item in new:
                    session.add(_image_row(item, storage, source))
            summary.duplicates += len(items) - len(new)
            return len(new)
        except IntegrityError:
            if attempt == 2:
                raise
    return 0


def _registered_hashes(session: Session, hashes: Iterable[str]) -> set[str]:
    hashes = list(hashes)
    if not hashes:
        return set()
    with session.begin():
        rows = session.scalars(select(TrainingImage.image_hash).where(TrainingImage.image_hash.in_(hashes)))
        return set(rows)


def storage_key(source: str, info: ImageInfo) -> str:
    """Content-addressed, so storing the same bytes twice writes the same object."""
    return content_key(source, info.sha256, info.suffix)


def _image_row(item: _Decoded, storage: Storage, source: str) -> TrainingImage:
    key = storage_key(source, item.info)
    url = storage.put(key, item.data, content_type=item.info.content_type)
    local = storage.local_path(key)
    record = item.record
    image = TrainingImage(
        image_url=url,
        local_path=str(local) if local is not None else None,
        image_hash=item.info.sha256,
        dataset_source=source,
    )
    image.labels = [_label_row(record, condition) for condition in CONDITIONS if condition in record.targets.conditions]
    image.subject = [_subject_row(record, item.info)]
    return image


def _label_row(record: ImageRecord, condition: str) -> ConditionLabelRow:
    label = record.targets.conditions[condition]
    words = record.metadata.get("severity_words") or {}
    metadata = {
        "present": label.present,
        "group_id": record.group_id,
        "relpath": record.relpath,
        "format": record.source_format,
    }
    if condition in words:
        metadata["source_word"] = words[condition]
    metadata.update({k: v for k, v in record.metadata.items() if k != "severity_words"})
    return ConditionLabelRow(
        condition_type=condition,
        confidence_score=record.confidence,
        severity_level=label.severity.name if label.severity is not None else None,
        label_metadata=metadata,
        verified=False,
    )


def _subject_row(record: ImageRecord, info: ImageInfo) -> SubjectMetadata:
    targets = record.targets
    demographics = targets.demographics
    additional = {
        "group_id": record.group_id,
        "relpath": record.relpath,
        "width": info.width,
        "height": info.height,
        "format": info.format,
    } | {k: v for k, v in demographics.as_dict().items() if k not in ("gender", "age_range")}
    return SubjectMetadata(
        gender=demographics.gender,
        age_range=demographics.age_range,
        skin_type=targets.skin_type,
        fitzpatrick_scale=targets.fitzpatrick,
        additional_info=additional,
    )
