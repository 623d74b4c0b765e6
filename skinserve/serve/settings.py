"""The service's settings, read once from the environment (`SKINSERVE_*`) when service.py is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from skinserve.config import Settings
from skinserve.serve.uploads import UploadLimits

Positive = Annotated[int, Field(ge=1)]


class ServiceSettings(Settings):
    model_tag: str = "skin-classifier:latest"
    runtime: Literal["auto", "tensorrt", "aoti-cuda", "onnxruntime-cuda", "onnxruntime-cpu", "aoti-cpu"] = "auto"
    # Which of the export's artifacts to run; auto: the runtime's first choice (on a CPU, int8 when exported).
    model_format: Literal["auto", "onnx", "onnx-fp16", "onnx-int8", "tensorrt", "aoti"] = "auto"
    max_batch_size: Positive = 64  # 1 turns adaptive batching off
    max_latency_ms: Positive = 1000  # the dispatcher's budget for queue + model; past it, BentoML answers 503
    # inprocess: each API worker runs its own model copy behind the batching dispatcher (best on CPU, where a
    # second HTTP hop per request costs as much as the model); separate: one model service shared by the API workers
    # (a GPU); auto: separate when GPUs are configured, else inprocess.
    model_placement: Literal["auto", "inprocess", "separate"] = "auto"
    api_workers: Positive = 1
    model_workers: Positive = 1
    # inprocess: model calls each API worker may run at once, each on a copy of its own. Keep-alive connections land
    # unevenly on the workers (one often holds all of a client's), so a worker with one copy leaves cores idle.
    model_copies: Positive = 2
    gpus: Annotated[int, Field(ge=0)] = 0
    # separate placement: plain JPEG bytes go to the model worker, decoded there in batches with nvJPEG (the rest on
    # the API workers' CPUs). auto: when GPUs are configured and the model worker sees one; on: the model worker
    # refuses to start without one; off: the API workers decode everything; cpu: the same path with torchvision
    # decoding on the model worker's CPU (the GPU benchmark's dry run and the tests).
    gpu_decode: Literal["auto", "on", "off", "cpu"] = "auto"
    ort_threads: Positive | None = None  # None: ONNX Runtime's own choice
    max_batch_images: Positive = 16
    max_upload_bytes: Positive = UploadLimits.max_bytes
    max_pixels: Positive = UploadLimits.max_pixels
    # Comma-separated bearer tokens; NoDecode: the variable is a plain list, not JSON.
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    store_images: bool = False
    spool_dir: Path | None = None  # default: <data_dir>/spool
    timeout_s: Positive = 60
    max_concurrency: Positive = 2048

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @model_validator(mode="after")
    def _spool_default(self) -> Self:
        if self.spool_dir is None:
            object.__setattr__(self, "spool_dir", self.data_dir / "spool")
        return self

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(self.max_upload_bytes, self.max_pixels)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def artifact_format(self) -> str | None:
        """The export's artifact to load; None: the runtime's own choice."""
        return None if self.model_format == "auto" else self.model_format

    @property
    def model_decodes_jpeg(self) -> bool:
        """Whether the model worker (separate placement) should try to decode JPEGs: on, cpu, or auto with GPUs."""
        return self.gpu_decode in ("on", "cpu") or (self.gpu_decode == "auto" and self.gpus > 0)

    @property
    def model_in_process(self) -> bool:
        return self.model_placement == "inprocess" or (self.model_placement == "auto" and self.gpus == 0)
