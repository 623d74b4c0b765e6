"""The service's settings, read once from the environment (`SKINSERVE_*`) when service.py is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from skinserve.config import Settings
from skinserve.faces import DEFAULT_FACE_MARGIN
from skinserve.serve.ratelimit import parse_networks, validated_limits
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
    # Per client (API key, else address): the `limits` library's notation, e.g. "20/second" or "1000/minute";
    # unset: no limit. Counted in each worker with memory://, across workers and replicas with async+redis://.
    rate_limit: str | None = None
    rate_limit_storage: str = "memory://"
    # Proxies whose X-Forwarded-For names the client (addresses or CIDR blocks, comma-separated).
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # /readyz fails while the queue has been past the latency budget for this long (so a load balancer sends
    # traffic to other replicas); off by default: when every replica is overloaded at once, all of them would leave
    # the load balancer together and nothing would be served.
    unready_when_overloaded: bool = False
    unready_after_s: Annotated[float, Field(gt=0)] = 10.0
    # An oversized or refused upload's body is read and discarded up to these bounds before the answer, so a client
    # that writes its whole body before reading (Python's urllib) receives the 4xx instead of a connection reset.
    linger_bytes: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024
    linger_s: Annotated[float, Field(ge=0)] = 5.0
    # When a face is found, the model sees it cropped with a margin: auto when it was trained so (the manifest's
    # preprocessing says with which margin), on with SKINSERVE_FACE_CROP_MARGIN whatever the training, or off.
    face_crop: Literal["auto", "on", "off"] = "auto"
    face_crop_margin: Annotated[float, Field(ge=0, le=2)] = DEFAULT_FACE_MARGIN
    # The product catalog's database (`skinserve catalog ingest`); default: the registry, SKINSERVE_DATABASE_URL.
    catalog_database_url: str = ""

    @property
    def catalog_url(self) -> str:
        return self.catalog_database_url or self.database_url

    @field_validator("api_keys", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str | None) -> str | None:
        return validated_limits(value) if value else None

    @model_validator(mode="after")
    def _spool_default(self) -> Self:
        if self.spool_dir is None:
            object.__setattr__(self, "spool_dir", self.data_dir / "spool")
        return self

    def crop_margin(self, trained_margin: float | None) -> float | None:
        """The margin of the face crop the model is shown, given the one it was trained with; None: no crop."""
        if self.face_crop == "auto":
            return trained_margin
        return self.face_crop_margin if self.face_crop == "on" else None

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
