"""The service's settings, read once from the environment (`SKINSERVE_*`) when service.py is imported."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from skinserve.config import Settings
from skinserve.images import UploadLimits


@dataclass(frozen=True)
class ServiceSettings:
    model_tag: str = "skin-classifier:latest"
    runtime: str = "auto"  # tensorrt | aoti-cuda | onnxruntime-cuda | onnxruntime-cpu | auto
    max_batch_size: int = 64  # 1 turns adaptive batching off
    max_latency_ms: int = 1000  # the dispatcher's budget for queue + model; past it, BentoML answers 503
    # inprocess: each API worker runs its own model copy behind the batching dispatcher (best on CPU, where a
    # second HTTP hop per request costs as much as the model); separate: one model service shared by the API workers
    # (a GPU); auto: separate when GPUs are configured, else inprocess.
    model_placement: str = "auto"
    api_workers: int = 1
    model_workers: int = 1
    # inprocess: model calls each API worker may run at once, each on a copy of its own. Keep-alive connections land
    # unevenly on the workers (one often holds all of a client's), so a worker with one copy leaves cores idle.
    model_copies: int = 2
    gpus: int = 0
    ort_threads: int | None = None
    max_batch_images: int = 16
    limits: UploadLimits = UploadLimits()
    api_keys: tuple[str, ...] = ()
    store_images: bool = False
    database_url: str = ""
    storage_url: str = ""
    spool_dir: Path = Path("data/spool")
    timeout_s: int = 60
    max_concurrency: int = 2048

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        base = Settings.from_env(env)

        def number(name: str, default: int) -> int:
            return int(env.get(f"SKINSERVE_{name}") or default)

        threads = env.get("SKINSERVE_ORT_THREADS")
        return cls(
            model_tag=env.get("SKINSERVE_MODEL_TAG") or cls.model_tag,
            runtime=env.get("SKINSERVE_RUNTIME") or cls.runtime,
            max_batch_size=number("MAX_BATCH_SIZE", cls.max_batch_size),
            max_latency_ms=number("MAX_LATENCY_MS", cls.max_latency_ms),
            model_placement=env.get("SKINSERVE_MODEL_PLACEMENT") or cls.model_placement,
            api_workers=number("API_WORKERS", cls.api_workers),
            model_workers=number("MODEL_WORKERS", cls.model_workers),
            model_copies=number("MODEL_COPIES", cls.model_copies),
            gpus=number("GPUS", cls.gpus),
            ort_threads=int(threads) if threads else None,
            max_batch_images=number("MAX_BATCH_IMAGES", cls.max_batch_images),
            limits=UploadLimits(
                number("MAX_UPLOAD_BYTES", UploadLimits.max_bytes), number("MAX_PIXELS", UploadLimits.max_pixels)
            ),
            api_keys=tuple(k.strip() for k in env.get("SKINSERVE_API_KEYS", "").split(",") if k.strip()),
            store_images=env.get("SKINSERVE_STORE_IMAGES", "").lower() in ("1", "true", "yes"),
            database_url=base.database_url,
            storage_url=base.storage_url,
            spool_dir=Path(env.get("SKINSERVE_SPOOL_DIR") or base.data_dir / "spool"),
            timeout_s=number("TIMEOUT_S", cls.timeout_s),
            max_concurrency=number("MAX_CONCURRENCY", cls.max_concurrency),
        )

    def __post_init__(self) -> None:
        if self.model_placement not in ("auto", "inprocess", "separate"):
            raise ValueError(f"SKINSERVE_MODEL_PLACEMENT={self.model_placement!r}: use auto, inprocess or separate")
        if self.model_copies < 1:
            raise ValueError(f"SKINSERVE_MODEL_COPIES={self.model_copies}: at least 1")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def model_in_process(self) -> bool:
        return self.model_placement == "inprocess" or (self.model_placement == "auto" and self.gpus == 0)
