"""One prediction as `prediction_logs` stores it: the image known by its hash and size only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class PredictionRow:
    """One prediction as `prediction_logs` stores it; the image is known by its hash and size only."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    runtime: str
    image_sha256: str
    width: int
    height: int
    bytes: int
    outputs: Any
    latency_ms: float
    batch_size: int
    client_id: str | None = None

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError(f"PredictionRow {self.request_id}: created_at must be timezone-aware (UTC), got naive")
        object.__setattr__(self, "created_at", self.created_at.astimezone(UTC))
        # Checked here, in the caller, because later a row that cannot be stored would stall the writer behind it.
        try:
            json.dumps(self.outputs)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"PredictionRow {self.request_id}: outputs must be plain JSON (no numpy types): {err}"
            ) from err

    def as_record(self) -> dict[str, Any]:
        """JSON-safe values, for the spool file."""
        return {**asdict(self), "created_at": self.created_at.isoformat()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PredictionRow:
        return cls(**{**record, "created_at": datetime.fromisoformat(record["created_at"])})

    def as_params(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
